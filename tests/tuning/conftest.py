"""Fixtures of the tuning tests: the embedded digits model on a few real held-out digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from relprop.models import digits_test_set, load_digits_model

#: Few candidates, measured quickly: the search's logic, not its findings, is under test here.
QUICK = ["lrp:epsilon-gamma-box,low=0,high=1", "lrp:epsilon,epsilon=0.25", "lrp:gamma,gamma=0.5"]


@pytest.fixture(scope="session")
def digits_model() -> nn.Module:
    return load_digits_model()


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """24 real held-out digits and their labels."""
    test = digits_test_set()
    return test.images[:24].clone(), test.labels[:24].clone()
