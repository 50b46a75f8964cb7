"""Rules on differences of activations: each against an independent float64 reference written here."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop import rules
from relprop.composites import Composite

EPS = 1e-6  # the rules' default stabiliser


def stab(z: Tensor, eps: float = EPS) -> Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


# Each reference takes the layer input difference Δa (n, J), the weight W (K, J), the relevance R (n, K)
# arriving at the layer output, and the layer input and reference input (for z^B), and returns R at Δa.
Reference = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def contributions(da: Tensor, w: Tensor) -> Tensor:
    return da[:, :, None] * w.T[None]  # (n, J, K): Δa_j w_jk


def ref_epsilon(epsilon: float) -> Reference:
    def fn(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
        c = contributions(da, w)
        return (c / stab(c.sum(1, keepdim=True), epsilon) * r[:, None]).sum(2)

    return fn


def ref_gamma(gamma: float) -> Reference:
    def fn(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
        c = contributions(da, w)
        up = c.sum(1, keepdim=True) >= 0
        m = c + gamma * torch.where(up, c.clamp(min=0), c.clamp(max=0))
        return (m / stab(m.sum(1, keepdim=True)) * r[:, None]).sum(2)

    return fn


def ref_alpha_beta(alpha: float, beta: float) -> Reference:
    def fn(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
        c = contributions(da, w)
        pos, neg = c.clamp(min=0), c.clamp(max=0)
        share = alpha * pos / (pos.sum(1, keepdim=True) + EPS) - beta * neg / (neg.sum(1, keepdim=True) - EPS)
        return (share * r[:, None]).sum(2)

    return fn


def ref_zbox(low: float, high: float) -> Reference:
    def fn(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
        lo, hi = (low - a_ref)[:, :, None], (high - a_ref)[:, :, None]  # the box of Δa
        m = contributions(da, w) - lo * w.T.clamp(min=0)[None] - hi * w.T.clamp(max=0)[None]
        return (m / stab(m.sum(1, keepdim=True)) * r[:, None]).sum(2)

    return fn


def ref_flat(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
    j = w.shape[1]
    return (r / stab(torch.full_like(r, float(j)))).sum(1, keepdim=True).expand_as(da)


def ref_wsquare(da: Tensor, w: Tensor, r: Tensor, a: Tensor, a_ref: Tensor) -> Tensor:
    w2 = (w.T**2)[None]
    return (w2 / stab(w2.sum(1, keepdim=True)) * r[:, None]).sum(2)


def mlp() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 4)).double().eval()


def reference_relevance(model: nn.Sequential, x: Tensor, x_ref: Tensor, target: int, refs: list[Reference]) -> Tensor:
    """Independent float64 reference-aware LRP for ``Linear → ReLU → Linear → ReLU → Linear``."""
    layers = [model[0], model[2], model[4]]
    acts, acts_ref = [x], [x_ref]
    for i, layer in enumerate(layers):
        z, z_ref = layer(acts[-1]), layer(acts_ref[-1])
        if i < 2:
            z, z_ref = torch.relu(z), torch.relu(z_ref)
        acts.append(z)
        acts_ref.append(z_ref)
    r = torch.zeros_like(acts[-1])
    r[:, target] = (acts[-1] - acts_ref[-1])[:, target]
    for i in reversed(range(3)):
        # Rescale through the ReLU hands each neuron's relevance on unchanged.
        r = refs[i](acts[i] - acts_ref[i], layers[i].weight, r, acts[i], acts_ref[i])
    return r


CASES = {
    "epsilon": ([rules.EpsilonRule(0.1)] * 3, [ref_epsilon(0.1)] * 3),
    "gamma": ([rules.GammaRule(0.25)] * 3, [ref_gamma(0.25)] * 3),
    "alpha2-beta1": ([rules.AlphaBetaRule(2.0, 1.0)] * 3, [ref_alpha_beta(2.0, 1.0)] * 3),
    "z-plus": ([rules.ZPlusRule()] * 3, [ref_alpha_beta(1.0, 0.0)] * 3),
    "z-box, gamma, epsilon": (
        [rules.ZBoxRule(-3.0, 3.0), rules.GammaRule(0.5), rules.EpsilonRule(0.01)],
        [ref_zbox(-3.0, 3.0), ref_gamma(0.5), ref_epsilon(0.01)],
    ),
    "flat, alpha-beta, lrp-0": (
        [rules.FlatRule(), rules.AlphaBetaRule(2.0, 1.0), rules.LRP0Rule()],
        [ref_flat, ref_alpha_beta(2.0, 1.0), ref_epsilon(0.0)],
    ),
    "w-square, epsilon, gamma": (
        [rules.WSquareRule(), rules.EpsilonRule(0.3), rules.GammaRule(0.1)],
        [ref_wsquare, ref_epsilon(0.3), ref_gamma(0.1)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_rule_on_differences_matches_an_independent_reference(case: str) -> None:
    model = mlp()
    torch.manual_seed(4)
    x = torch.randn(5, 7, dtype=torch.float64)
    x_ref = torch.randn(7, dtype=torch.float64).expand_as(x) * 0.5
    layer_rules, refs = CASES[case]
    composite = Composite([("0", layer_rules[0]), ("2", layer_rules[1]), ("4", layer_rules[2])], name=case)
    result = relprop.explain(model, x, 2, composite=composite, reference=x_ref[0])
    expected = reference_relevance(model, x, x_ref, 2, refs)
    torch.testing.assert_close(result.relevance, expected, rtol=1e-9, atol=1e-12)
    assert [e.rule for e in result.ledger.entries] == [f"Δ{r.describe()}" for r in layer_rules]
    assert result.ledger.closes(rtol=1e-9)


def test_zbox_box_follows_the_reference_and_default_layers_get_lrp0() -> None:
    """A reference at the box's edge shifts the box of Δx to [-1, 0]; unmatched layers keep LRP-0 on differences."""
    model = mlp()
    torch.manual_seed(5)
    x = torch.rand(4, 7, dtype=torch.float64)
    x_ref = torch.ones_like(x)
    composite = Composite([("0", rules.ZBoxRule(0.0, 1.0))], name="box")
    result = relprop.explain(model, x, 1, composite=composite, reference=x_ref[0])
    expected = reference_relevance(model, x, x_ref, 1, [ref_zbox(0.0, 1.0), ref_epsilon(0.0), ref_epsilon(0.0)])
    torch.testing.assert_close(result.relevance, expected, rtol=1e-9, atol=1e-12)
    assert result.ledger.closes(rtol=1e-9)
