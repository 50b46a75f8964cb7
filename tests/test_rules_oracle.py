"""Oracle 1: relprop against the independent four-step reference (tests/reference.py), float64."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import relprop
from relprop import rules

from helpers import assert_close_relative
from reference import reference_bias_shares, reference_lrp

RTOL = 1e-6


def relu_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    )


def leaky_net() -> nn.Sequential:
    # Leaky ReLUs hand negative activations to the next layer and give relevance to negative
    # pre-activations: this exercises the sign-split branches of γ and αβ.
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 12),
        nn.LeakyReLU(0.2),
        nn.Linear(12, 5),
    )


NETS = {"relu": relu_net, "leaky": leaky_net}


def build(name: str) -> tuple[nn.Sequential, torch.Tensor]:
    net = NETS[name]().double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    return net, x


def linear_indices(net: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(net) if isinstance(m, (nn.Linear, nn.Conv2d))]


# (relprop rule, reference spec) applied to every conv/dense layer
EVERY_LAYER: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "lrp-0": (rules.LRP0Rule(), ("epsilon", 0.0)),
    "epsilon": (rules.EpsilonRule(0.1), ("epsilon", 0.1)),
    "gamma": (rules.GammaRule(0.25), ("gamma", 0.25, 1e-6)),
    "gamma-large": (rules.GammaRule(2.0, stabilizer=1e-3), ("gamma", 2.0, 1e-3)),
    "alpha2-beta1": (rules.AlphaBetaRule(2.0, 1.0), ("alpha-beta", 2.0, 1.0, 1e-6)),
    "alpha1-beta0": (rules.AlphaBetaRule(1.0, 0.0), ("alpha-beta", 1.0, 0.0, 1e-6)),
    "z-plus": (rules.ZPlusRule(), ("alpha-beta", 1.0, 0.0, 1e-6)),
    "modified-weight": (
        rules.ModifiedWeightRule(lambda w: w + 0.1 * w.clamp(min=0), epsilon=1e-3),
        ("modified", lambda w: w + 0.1 * w.clamp(min=0), 1e-3),
    ),
}

# rules meant for the input layer; the other layers use LRP-ε(0.01)
FIRST_LAYER: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "z-box": (rules.ZBoxRule(-3.0, 3.0), ("z-box", -3.0, 3.0, 1e-6)),
    "z-box-per-channel": (
        rules.ZBoxRule(torch.tensor([-3.0, -2.0, -4.0]), torch.tensor([3.0, 2.5, 4.0])),
        ("z-box", [-3.0, -2.0, -4.0], [3.0, 2.5, 4.0], 1e-6),
    ),
    "flat": (rules.FlatRule(), ("flat", 1e-6)),
    "w-square": (rules.WSquareRule(), ("w-square", 1e-6)),
}


def explain_with(net: nn.Sequential, x: torch.Tensor, entries: list[tuple[Any, Any]]) -> relprop.Explanation:
    composite = relprop.Composite(entries, name="test")
    return relprop.explain(net, x, composite=composite)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("rule_name", sorted(EVERY_LAYER))
def test_every_layer_rule_matches_reference(net_name: str, rule_name: str) -> None:
    net, x = build(net_name)
    rule, spec = EVERY_LAYER[rule_name]
    result = explain_with(net, x, [(relprop.match.kind("layer"), rule)])
    expected = reference_lrp(net, x, result.target, lambda i, m: spec)
    assert_close_relative(result.relevance, expected, RTOL)
    assert result.ledger.closes(rtol=1e-9)


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("rule_name", sorted(FIRST_LAYER))
def test_input_layer_rule_matches_reference(net_name: str, rule_name: str) -> None:
    net, x = build(net_name)
    rule, spec = FIRST_LAYER[rule_name]
    first = linear_indices(net)[0]
    result = explain_with(
        net, x, [(relprop.match.first(), rule), (relprop.match.kind("layer"), rules.EpsilonRule(0.01))]
    )
    expected = reference_lrp(net, x, result.target, lambda i, m: spec if i == first else ("epsilon", 0.01))
    assert_close_relative(result.relevance, expected, RTOL)
    assert result.ledger.closes(rtol=1e-9)


def test_proportional_max_pool_matches_reference() -> None:
    net, x = build("relu")
    result = explain_with(
        net,
        x,
        [
            (relprop.match.kind("maxpool"), rules.ProportionalMaxPoolRule()),
            (relprop.match.kind("layer"), rules.EpsilonRule(0.01)),
        ],
    )
    expected = reference_lrp(net, x, result.target, lambda i, m: ("epsilon", 0.01), maxpool="proportional")
    assert_close_relative(result.relevance, expected, RTOL)
    assert result.ledger.closes(rtol=1e-9)
    # and it differs from winner-takes-all, so the option is real
    wta = explain_with(net, x, [(relprop.match.kind("layer"), rules.EpsilonRule(0.01))])
    assert (wta.relevance - result.relevance).abs().max() > 1e-3 * result.relevance.abs().max()


def test_rules_by_depth_match_reference() -> None:
    """The 'montavon' recipe (z^B, γ on the lower convs, ε on the upper ones, LRP-0 on dense) against the reference."""
    net = (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 10),
            nn.ReLU(),
            nn.Linear(10, 5),
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(net, x, composite="montavon", low=-3.0, high=3.0, epsilon=0.1, gamma=0.5)
    # conv depths among the convolutions: 0, 1/3, 2/3, 1 -> z^B, γ, ε, ε
    specs = {
        0: ("z-box", -3.0, 3.0, 1e-6),
        2: ("gamma", 0.5, 1e-6),
        4: ("epsilon", 0.1),
        7: ("epsilon", 0.1),
        10: ("epsilon", 0.0),
        12: ("epsilon", 0.0),
    }
    expected = reference_lrp(net, x, result.target, lambda i, m: specs[i])
    assert_close_relative(result.relevance, expected, RTOL)
    plan = relprop.Explainer(net, "montavon", low=-3.0, high=3.0).plan(x)
    assert [type(op.rule).__name__ for op in plan.ops if op.kind in ("conv", "linear")] == [
        "ZBoxRule",
        "GammaRule",
        "EpsilonRule",
        "EpsilonRule",
        "LRP0Rule",
        "LRP0Rule",
    ]


def test_batch_norm_folding_matches_reference_on_folded_net() -> None:
    net = (
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 6 * 6, 10),
            nn.BatchNorm1d(10),
            nn.ReLU(),
            nn.Linear(10, 4),
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(216, 10), nn.ReLU(), nn.Linear(10, 4)
    )
    folded = folded.double().eval()
    with torch.no_grad():
        for (layer, bn), target in ((net[0:2], folded[0]), (net[4:6], folded[3])):
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            target.weight.copy_(layer.weight * scale.view(shape))
            target.bias.copy_((layer.bias - bn.running_mean) * scale + bn.bias)
        folded[5].load_state_dict(net[7].state_dict())
    for name, rule, spec in (
        ("gamma", rules.GammaRule(0.3), ("gamma", 0.3, 1e-6)),
        ("epsilon", rules.EpsilonRule(0.05), ("epsilon", 0.05)),
    ):
        result = explain_with(net, x, [(relprop.match.kind("layer"), rule)])
        expected = reference_lrp(folded, x, result.target, lambda i, m, spec=spec: spec)
        assert_close_relative(result.relevance, expected, RTOL), name
        assert result.ledger.closes(rtol=1e-9)


BIAS_RULES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "epsilon": (rules.EpsilonRule(0.1), ("epsilon", 0.1)),
    "gamma": (rules.GammaRule(0.25), ("gamma", 0.25, 1e-6)),
    "gamma-large": (rules.GammaRule(2.0, stabilizer=1e-3), ("gamma", 2.0, 1e-3)),
    "alpha2-beta1": (rules.AlphaBetaRule(2.0, 1.0), ("alpha-beta", 2.0, 1.0, 1e-6)),
    "z-plus": (rules.ZPlusRule(), ("alpha-beta", 1.0, 0.0, 1e-6)),
}


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("rule_name", sorted(BIAS_RULES))
def test_bias_share_of_every_layer_matches_reference(net_name: str, rule_name: str) -> None:
    """The |b| parts of the sign-general γ and αβ, on every path the rules take.

    ``relu``: the first layer sees inputs of both signs, the middle ones non-negative inputs with
    their ReLU fused, the last one non-negative inputs and outputs of both signs; ``leaky``: inputs
    and outputs of both signs everywhere. Biases of both signs (``build`` draws them from N(0, 0.3)).
    """
    net, x = build(net_name)
    rule, spec = BIAS_RULES[rule_name]
    result = explain_with(net, x, [(relprop.match.kind("layer"), rule)])
    expected = reference_bias_shares(net, x, result.target, lambda i, m: spec)
    rows = {e.path: e for e in result.ledger.entries}
    assert set(expected) == {int(p) for p, e in rows.items() if e.function.endswith(("conv2d", "linear"))}
    # z⁺ can leave the top layer's share at 0 (only b⁺ counts); the others must be real
    assert sum(float(share.abs().max()) > 1e-6 for share in expected.values()) >= len(expected) - 1
    for index, share in expected.items():
        row = rows[str(index)]
        assert row.bias is not None
        torch.testing.assert_close(row.bias, share, rtol=1e-9, atol=1e-12, msg=f"bias share of layer {index}")
