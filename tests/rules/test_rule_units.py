"""Rules on their own — no engine, no model — against the four-step float64 reference.

In the style of Zennit's replicated rule tests: every linear rule's ``prepare``/``propagate`` on
one dense or convolutional layer, for inputs and outputs of both signs, with the hints the engine
may give, against ``tests/reference.py``; and the autograd functions of the other rules on single
tensors.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relprop import rules
from relprop.ops import LinearOp
from relprop.rules.elementwise import PassActivation
from relprop.rules.normalization import LayerNormIdentity
from relprop.rules.pooling import ProportionalPool

from reference import bias_share, linear_rule, structural

RULES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "lrp-0": (rules.LRP0Rule(), ("epsilon", 0.0)),
    "epsilon": (rules.EpsilonRule(0.3), ("epsilon", 0.3)),
    "gamma": (rules.GammaRule(0.25), ("gamma", 0.25, 1e-6)),
    "gamma-large": (rules.GammaRule(3.0, stabilizer=1e-3), ("gamma", 3.0, 1e-3)),
    "alpha2-beta1": (rules.AlphaBetaRule(2.0, 1.0), ("alpha-beta", 2.0, 1.0, 1e-6)),
    "alpha1-beta0": (rules.AlphaBetaRule(1.0, 0.0), ("alpha-beta", 1.0, 0.0, 1e-6)),
    "z-plus": (rules.ZPlusRule(), ("alpha-beta", 1.0, 0.0, 1e-6)),
    "modified-weight": (
        rules.ModifiedWeightRule(lambda w: w + 0.2 * w.clamp(min=0), epsilon=1e-3),
        ("modified", lambda w: w + 0.2 * w.clamp(min=0), 1e-3),
    ),
    "z-box": (rules.ZBoxRule(-2.5, 2.5), ("z-box", -2.5, 2.5, 1e-6)),
    "flat": (rules.FlatRule(), ("flat", 1e-6)),
    "w-square": (rules.WSquareRule(), ("w-square", 1e-6)),
}
SIGN_SPLIT = {"epsilon", "lrp-0", "gamma", "gamma-large", "alpha2-beta1", "alpha1-beta0", "z-plus"}


def make_layer(name: str) -> tuple[nn.Module, LinearOp, torch.Tensor]:
    if name == "dense":
        layer: nn.Module = nn.Linear(7, 5)
        return layer, LinearOp(kind="linear"), torch.randn(4, 7, dtype=torch.float64)
    if name == "conv":
        layer = nn.Conv2d(3, 4, 3, padding=1)
        op = LinearOp(kind="conv", dim=2, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
        return layer, op, torch.randn(2, 3, 6, 6, dtype=torch.float64)
    layer = nn.Conv2d(4, 6, 3, stride=2, groups=2)
    op = LinearOp(kind="conv", dim=2, stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=2)
    return layer, op, torch.randn(2, 4, 7, 7, dtype=torch.float64)


def apply_rule(
    rule: Any, layer: nn.Module, op: LinearOp, x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor, hints: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    prepared = rule.prepare(layer.weight.detach(), layer.bias.detach())
    result = rule.propagate(op, x, y, grad, prepared, hints)
    relevance = x * result.grad if result.grad is not None else result.relevance
    return relevance, result.bias_relevance


@pytest.mark.parametrize("layer_name", ["dense", "conv", "strided-grouped"])
@pytest.mark.parametrize("inputs", ["mixed", "nonnegative"])
@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_propagates_like_the_four_step_reference(rule_name: str, inputs: str, layer_name: str) -> None:
    rule, spec = RULES[rule_name]
    layer, op, x = make_layer(layer_name)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.normal_(0, 0.4)
        layer.bias.normal_(0, 0.3)
    if inputs == "nonnegative":
        x = x.clamp(min=0)
    y = op.apply(x, layer.weight.detach(), layer.bias.detach())
    assert bool((y > 0).any()) and bool((y < 0).any())  # outputs of both signs
    grad = torch.randn_like(y)
    hints = rules.Hints(input_nonnegative=True if inputs == "nonnegative" else None)
    relevance, bias_relevance = apply_rule(rule, layer, op, x, y.clone(), grad, hints)
    expected = linear_rule(layer, x, y * grad, spec)
    torch.testing.assert_close(relevance, expected, rtol=1e-9, atol=1e-12)
    if rule_name in SIGN_SPLIT:
        torch.testing.assert_close(bias_relevance, bias_share(layer, x, y * grad, spec), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layer_name", ["dense", "conv"])
@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_after_a_fused_relu_matches_the_reference(rule_name: str, layer_name: str) -> None:
    """The hint ``output_after_relu``: ``y`` is the ReLU's output and the gradient is masked by it."""
    rule, spec = RULES[rule_name]
    layer, op, x = make_layer(layer_name)
    layer = layer.double()
    x = x.clamp(min=0)
    pre = op.apply(x, layer.weight.detach(), layer.bias.detach())
    grad = torch.randn_like(pre) * (pre > 0)
    after = pre.clamp(min=0)
    hints = rules.Hints(output_after_relu=True, input_nonnegative=True)
    relevance, _ = apply_rule(rule, layer, op, x, after.clone(), grad, hints)
    expected = linear_rule(layer, x, after * grad, spec)
    torch.testing.assert_close(relevance, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", [torch.tanh, F.gelu, F.softplus, torch.sigmoid])
def test_pass_activation_hands_each_element_its_own_relevance(activation: Any) -> None:
    x = (torch.randn(3, 5, dtype=torch.float64) * 2).requires_grad_(True)
    y = PassActivation.apply(x, activation, 0.0, None)
    grad = torch.randn_like(y)
    (g_x,) = torch.autograd.grad(y, x, grad)
    torch.testing.assert_close(x.detach() * g_x, y.detach() * grad, rtol=1e-12, atol=1e-14)


def test_proportional_max_pool_matches_the_reference() -> None:
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64).requires_grad_(True)
    pool = nn.MaxPool2d(2)

    def window_sum(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 2, 2, 0, False, True) * 4

    y = ProportionalPool.apply(x, pool, window_sum, 1e-6, None)
    grad = torch.randn_like(y)
    (g_x,) = torch.autograd.grad(y, x, grad)
    expected = structural(pool, x.detach(), y.detach() * grad, maxpool="proportional")
    torch.testing.assert_close(x.detach() * g_x, expected, rtol=1e-9, atol=1e-12)


def test_layer_norm_identity_is_the_gradient_with_the_deviation_held() -> None:
    x = torch.randn(3, 4, 6, dtype=torch.float64).requires_grad_(True)
    weight, bias = torch.rand(6, dtype=torch.float64) + 0.5, torch.randn(6, dtype=torch.float64)
    y = LayerNormIdentity.apply(x, (6,), weight, bias, 1e-5, None)
    torch.testing.assert_close(y, F.layer_norm(x, (6,), weight, bias, 1e-5), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y)
    (g_x,) = torch.autograd.grad(y, x, grad)
    xx = x.detach().clone().requires_grad_(True)
    std = torch.sqrt(xx.var(-1, unbiased=False, keepdim=True) + 1e-5).detach()
    reference = (xx - xx.mean(-1, keepdim=True)) / std * weight + bias
    (expected,) = torch.autograd.grad(reference, xx, grad)
    torch.testing.assert_close(g_x, expected, rtol=1e-10, atol=1e-12)
