"""Assertions shared by the tests."""

from __future__ import annotations

import importlib
import os
import types

import pytest
import torch


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """max|actual - expected| <= rtol · max|expected| (relative to the explanation's scale)."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * scale, f"max abs error {err:.3e} exceeds {rtol:g} x scale {scale:.3e}"


ORACLES = ("captum", "lxt", "quantus", "zennit")


def running_in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to a true value), where every oracle must be installed."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require(module: str) -> types.ModuleType:
    """Import an oracle or optional test dependency: skip the test when it is missing, FAIL in CI.

    ``pytest.importorskip`` alone lets a broken install silently drop the oracle tests; under
    ``CI=true`` a missing module is an error instead.
    """
    if not running_in_ci():
        return pytest.importorskip(module)
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"{module} is required in CI (CI=true) but cannot be imported: {error}", pytrace=False)
