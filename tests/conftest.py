from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Two threads, as on the CI machine; keeps timings of the heavier tests predictable.
torch.set_num_threads(int(os.environ.get("RELPROP_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """max|actual - expected| <= rtol · max|expected| (relative to the explanation's scale)."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * scale, f"max abs error {err:.3e} exceeds {rtol:g} x scale {scale:.3e}"
