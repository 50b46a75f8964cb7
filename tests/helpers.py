"""Assertions shared by the tests."""

from __future__ import annotations

import torch


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """max|actual - expected| <= rtol · max|expected| (relative to the explanation's scale)."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * scale, f"max abs error {err:.3e} exceeds {rtol:g} x scale {scale:.3e}"
