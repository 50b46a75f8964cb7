"""GroupNorm and InstanceNorm: the identity rule on 1/σ (default) and the affine alternative (μ and σ held)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop import match, rules

EXACT = {"epsilon": 0.0, "stabilizer": 0.0}


class NormNet(nn.Module):
    def __init__(self, norm: str, reference: str | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.GroupNorm(3, 6) if norm == "group" else nn.InstanceNorm2d(6, affine=True)
        self.head = nn.Linear(6, 4)
        self.groups = 3 if norm == "group" else 6
        self.reference = reference
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.reference is None:
            h = self.norm(h)
        else:  # the rule written out with autograd: σ (identity) or μ and σ (affine) held constant
            grouped = h.reshape(h.shape[0], self.groups, -1)
            mean = grouped.mean(-1, keepdim=True)
            std = torch.sqrt(grouped.var(-1, unbiased=False, keepdim=True) + self.norm.eps).detach()
            if self.reference == "affine":
                mean = mean.detach()
            h = ((grouped - mean) / std).reshape_as(h) * self.norm.weight.view(1, -1, 1, 1)
            h = h + self.norm.bias.view(1, -1, 1, 1)
        return self.head(torch.relu(h).mean((2, 3)))


def grad_x_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).gather(1, target[:, None]).sum(), xx)
    return g * x


@pytest.mark.parametrize("mode", ["identity", "affine"])
@pytest.mark.parametrize("norm", ["group", "instance"])
def test_group_and_instance_norm_rules_are_the_gradient_with_their_statistics_held(norm: str, mode: str) -> None:
    model = NormNet(norm).double().eval()
    reference = NormNet(norm, reference=mode).double().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    entries = [] if mode == "identity" else [(match.kind("group_norm", "instance_norm"), rules.NormalizationRule(mode))]
    result = relprop.explain(model, x, composite="lrp-0", rules=entries, **{"stabilizer": 0.0})
    torch.testing.assert_close(result.relevance, grad_x_input(reference, x, result.target), rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(result.output, model(x)) if mode == "identity" else True
    assert result.ledger.closes(rtol=1e-9)
    (row,) = [e for e in result.ledger.entries if e.path == "norm"]
    assert row.rule == ("normalization" if mode == "identity" else "normalization(mode='affine')")
    if mode == "identity":  # the centring conserves: the norm's bias takes exactly its share
        torch.testing.assert_close(row.absorbed, row.bias, rtol=1e-9, atol=1e-12)


def test_the_two_modes_differ() -> None:
    model = NormNet("group").double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    identity = relprop.explain(model, x, composite="lrp-0")
    affine = relprop.explain(
        model, x, composite="lrp-0", rules=[(match.kind("group_norm"), rules.NormalizationRule("affine"))]
    )
    assert (identity.relevance - affine.relevance).abs().max() > 1e-3 * identity.relevance.abs().max()


def test_instance_norm_with_running_statistics_is_an_affine_map() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True, track_running_stats=True)).double()
    model.append(nn.Flatten()).append(nn.Linear(4 * 4 * 4, 3).double())
    with torch.no_grad():
        model[1].running_mean.normal_(0, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    model = model.eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    torch.testing.assert_close(result.relevance, grad_x_input(model, x, result.target), rtol=1e-9, atol=1e-12)
    assert result.ledger.closes(rtol=1e-9)


def test_cnn_composites_explain_group_norm_without_extra_rules() -> None:
    model = NormNet("group").eval()
    result = relprop.explain(model, torch.randn(2, 3, 6, 6), composite="epsilon-gamma-box")
    assert torch.isfinite(result.relevance).all() and result.ledger.closes(rtol=1e-4)


def test_normalization_rule_mode_is_checked() -> None:
    with pytest.raises(relprop.ConfigurationError, match="mode must be 'identity' or 'affine', got 'mean'"):
        rules.NormalizationRule("mean")
