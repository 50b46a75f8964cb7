"""Deep Taylor decomposition is LRP with z⁺ everywhere and z^B (or w²) at the input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop import match
from relprop.rules import WSquareRule, ZBoxRule, ZPlusRule

from .nets import maxpool_net


def test_equals_the_lrp_engine_with_the_deep_taylor_composite() -> None:
    model = maxpool_net()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, method="deep-taylor", low=0.0, high=1.0)
    composite = relprop.Composite([(match.first(), ZBoxRule(0.0, 1.0)), (match.kind("layer"), ZPlusRule())])
    expected = relprop.Explainer(model, composite)(x)
    assert torch.equal(result.relevance, expected.relevance)
    assert result.info["method"] == "deep-taylor"
    assert result.ledger.entries  # the full LRP ledger
    square = relprop.explain(model, x, method="deep-taylor", input_rule="w-square")
    composite = relprop.Composite([(match.first(), WSquareRule()), (match.kind("layer"), ZPlusRule())])
    assert torch.equal(square.relevance, relprop.Explainer(model, composite)(x).relevance)


def test_conserves_on_a_bias_free_relu_network() -> None:
    model = (
        nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3, bias=False))
        .double()
        .eval()
    )
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, method="deep-taylor", low=0.0, high=1.0)
    assert result.ledger.closes(rtol=1e-6)
    assert torch.allclose(result.ledger.input_relevance, result.score, rtol=1e-5)


def test_bounds_only_with_z_box() -> None:
    with pytest.raises(relprop.ConfigurationError, match="low and high apply to input_rule='z-box' only"):
        relprop.explain(maxpool_net(), torch.rand(1, 3, 8, 8).double(), method="deep-taylor", input_rule="w-square",
                        low=0.0)  # fmt: skip
    with pytest.raises(relprop.ConfigurationError, match="input_rule must be one of z-box, w-square"):
        relprop.explain(maxpool_net(), torch.rand(1, 3, 8, 8).double(), method="deep-taylor", input_rule="flat")
