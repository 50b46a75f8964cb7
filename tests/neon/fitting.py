"""Helpers shared by the NEON tests."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def fit_quietly(model: Any, *args: Any) -> Any:
    """Fit without convergence warnings (small iteration budgets keep the tests fast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args)


def assert_exact(actual: Any, expected: Any, tol: float = 1e-10) -> None:
    """``|actual - expected| <= tol · max(1, |expected|)`` element-wise (float64 exactness)."""
    a = np.asarray(actual.detach() if hasattr(actual, "detach") else actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    error = np.abs(a - e) / np.maximum(1.0, np.abs(e))
    assert float(error.max(initial=0.0)) <= tol, f"max relative error {error.max():.3g} > {tol:g}"
