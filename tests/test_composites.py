"""Composites: named recipes, first-match-wins, user entries first, matchers, parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop import composites, match, rules
from relprop.match import LayerInfo

from models import small_cnn

REQUIRED = [
    "lrp-0",
    "epsilon",
    "gamma",
    "alpha1-beta0",
    "alpha2-beta1",
    "epsilon-gamma-box",
    "epsilon-plus-flat",
    "epsilon-alpha2-beta1",
    "montavon",
]


def rules_by_layer(model: nn.Module, composite, x: torch.Tensor, **kw) -> list[str]:
    plan = relprop.Explainer(model, composite, **kw).plan(x)
    return [type(op.rule).__name__ for op in plan.ops if op.kind in ("conv", "linear")]


def test_required_composites_exist_and_run() -> None:
    assert set(REQUIRED) <= set(composites.names())
    model = small_cnn(batchnorm=True).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for name in composites.names():
        result = relprop.explain(model, x, composite=name)
        assert result.ledger.closes(rtol=1e-9), name
    assert all(desc for _, desc, _ in composites.describe())


def test_named_composites_assign_the_documented_rules() -> None:
    model = small_cnn().eval()
    x = torch.randn(1, 3, 8, 8)
    assert rules_by_layer(model, "epsilon-gamma-box", x) == ["ZBoxRule", "GammaRule", "EpsilonRule", "EpsilonRule"]
    assert rules_by_layer(model, "epsilon-plus-flat", x) == ["FlatRule", "ZPlusRule", "EpsilonRule", "EpsilonRule"]
    assert rules_by_layer(model, "epsilon-alpha2-beta1", x) == [
        "AlphaBetaRule",
        "AlphaBetaRule",
        "EpsilonRule",
        "EpsilonRule",
    ]
    assert rules_by_layer(model, "lrp-0", x) == ["LRP0Rule"] * 4


def test_user_entries_come_first() -> None:
    model = small_cnn().eval()
    x = torch.randn(1, 3, 8, 8)
    assigned = rules_by_layer(
        model, "epsilon-gamma-box", x, rules=[("3", rules.AlphaBetaRule(1.0, 0.0)), (nn.Linear, rules.LRP0Rule())]
    )
    assert assigned == ["ZBoxRule", "AlphaBetaRule", "LRP0Rule", "LRP0Rule"]


def test_first_applicable_match_wins_and_rules_skip_unsupported_kinds() -> None:
    model = small_cnn().eval()
    x = torch.randn(1, 3, 8, 8)
    # "*" matches every op; GammaRule only applies to layers, so ReLUs keep their default PassRule
    comp = relprop.Composite([("*", rules.GammaRule(0.5)), ("*", rules.EpsilonRule(0.1))])
    plan = relprop.Explainer(model, comp).plan(x)
    assert {type(op.rule).__name__ for op in plan.ops if op.kind in ("conv", "linear")} == {"GammaRule"}
    assert {type(op.rule).__name__ for op in plan.ops if op.kind == "relu"} == {"PassRule"}
    assert {type(op.rule).__name__ for op in plan.ops if op.kind == "avgpool"} == {"EpsilonRule"}


def info(**kw) -> LayerInfo:
    base = dict(
        index=0,
        path="features.3",
        module_type=nn.Conv2d,
        function="torch.nn.functional.conv2d",
        kind="conv",
        layer_index=1,
        layer_count=5,
        kind_index=1,
        kind_count=3,
    )
    base.update(kw)
    return LayerInfo(**base)


def test_matchers_and_combinators() -> None:
    i = info()
    assert match.path("features.*")(i) and not match.path("classifier.*")(i)
    assert match.module_type(nn.Conv2d)(i) and not match.module_type(nn.Linear)(i)
    assert match.kind("convolution")(i) and match.kind("layer")(i) and not match.kind("dense")(i)
    assert match.op("conv2d")(i) and match.op("torch.nn.functional.conv2d")(i)
    assert not match.first()(i) and match.first()(info(layer_index=0)) and match.last()(info(layer_index=4))
    assert match.depth(0.2, 0.3)(i)  # 1/4
    assert match.depth(0.5, 0.5, among="kind")(i)  # 1/2 among the convolutions
    assert (match.kind("conv") & match.path("features.*"))(i)
    assert (match.kind("dense") | match.path("features.3"))(i)
    assert (~match.kind("dense"))(i)
    assert match.as_matcher(lambda layer: layer.index == 0)(i)
    with pytest.raises(TypeError, match="cannot use 3 to select layers"):
        match.as_matcher(3)


def test_bounds_from_normalization() -> None:
    low, high = relprop.bounds_from_normalization((0.5, 0.25), (0.5, 0.25))
    assert torch.allclose(low, torch.tensor([-1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(high, torch.tensor([1.0, 3.0], dtype=torch.float64))
    with pytest.raises(relprop.ConfigurationError, match="std must be positive"):
        relprop.bounds_from_normalization((0.0,), (0.0,))


def test_composite_rejects_non_rules_and_params_on_objects() -> None:
    with pytest.raises(relprop.ConfigurationError, match="is not a relprop rule"):
        relprop.Composite([("*", "epsilon")])
    with pytest.raises(relprop.ConfigurationError, match="only apply to named composites"):
        relprop.Explainer(small_cnn(), relprop.Composite([]), epsilon=0.1)


def test_rule_parameters_are_validated() -> None:
    with pytest.raises(relprop.ConfigurationError, match=r"^AlphaBetaRule: alpha must be a finite number >= 0,"):
        rules.AlphaBetaRule(-1.0, -2.0)
    with pytest.raises(relprop.ConfigurationError, match=r"^GammaRule: gamma must be a finite number >= 0, got -0.1"):
        rules.GammaRule(-0.1)
    with pytest.raises(relprop.ConfigurationError, match=r"^EpsilonRule: epsilon must be a finite number >= 0"):
        rules.EpsilonRule(-1.0)
    with pytest.raises(relprop.ConfigurationError, match="mode must be 'auto', 'uniform' or 'gate'"):
        rules.ProductRule("half")


def test_rule_table_lists_folded_batch_norms() -> None:
    model = small_cnn(batchnorm=True).eval()
    table = relprop.Explainer(model, "epsilon-gamma-box").rule_table(torch.randn(1, 3, 8, 8))
    assert "(folded into #0)" in table and "z-box" in table and "gamma(gamma=0.25)" in table
