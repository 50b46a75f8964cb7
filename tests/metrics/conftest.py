"""Fixtures of the metric tests: the embedded digits model on real test digits, and small models
whose perfect explanation is known in closed form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import relprop
from relprop.metrics import ExplainFn
from relprop.models import digits_test_set, load_digits_model


class LinearScore(nn.Module):
    """``f(x) = x @ W.T + b`` on flattened inputs: removing feature i changes class c's score by
    exactly ``W[c, i] * x_i``, so ``R = W[c] ⊙ x`` is the perfect explanation for zero replacement."""

    def __init__(self, n_features: int, n_classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(n_classes, n_features, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(n_classes, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.t() + self.bias

    def perfect(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The exact contribution of each feature to the target score (zero baseline)."""
        return (self.weight[target] * x.flatten(1)).view_as(x)


@pytest.fixture(scope="session")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The embedded CNN and 24 real held-out digits with their labels."""
    test = digits_test_set()
    return load_digits_model(), test.images[:24].clone(), test.labels[:24].clone()


def lrp_explain_fn(composite: str = "epsilon-gamma-box", **params: Any) -> ExplainFn:
    """An ``explain_fn(model, inputs, target)`` running relprop's LRP with a named composite."""
    if composite in ("epsilon-gamma-box", "montavon"):
        params = {"low": 0.0, "high": 1.0, **params}

    def explain_fn(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return relprop.explain(model, inputs, target, composite=composite, **params).relevance

    return explain_fn


@pytest.fixture(scope="session")
def lrp() -> Callable[..., ExplainFn]:
    """Factory: ``lrp("epsilon")`` is an explain_fn for that composite (z^B bounds [0, 1] where needed)."""
    return lrp_explain_fn


@pytest.fixture(scope="session")
def linear() -> type[LinearScore]:
    """The :class:`LinearScore` model class."""
    return LinearScore
