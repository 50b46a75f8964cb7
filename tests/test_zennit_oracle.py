"""Oracle 2: Zennit gives the same relevance as relprop on torchvision VGG-16 and ResNet-50.

Conventions accounted for:

* Zennit starts the backward pass from 1 at the target logit; relprop starts from the logit
  itself (so that Σ relevance ≈ score). LRP is linear in the initial relevance, so Zennit's
  relevance is multiplied by the logit.
* Deliberate difference: Zennit folds a batch norm into the preceding layer and then keeps the
  batch norm as an "identity" with running_var = 1 but the original ``eps``, so each folded
  batch norm still divides by sqrt(1 + eps) and Zennit's canonized model computes a slightly
  different function (about 1e-4 relative on ResNet-50, see the last test). relprop never
  changes the model's function. For the agreement tests the batch norms use eps = 0, where
  both compute the same function.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import relprop

from helpers import assert_close_relative, require

zennit = require("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402

COMPOSITES = {
    "epsilon-gamma-box": (EpsilonGammaBox, {"low": -3.0, "high": 3.0}),
    "epsilon-plus-flat": (EpsilonPlusFlat, {}),
    "epsilon-alpha2-beta1": (EpsilonAlpha2Beta1, {}),
}
CANONIZERS = {"vgg16": VGGCanonizer, "resnet50": ResNetCanonizer}


def make_model(name: str, bn_eps: float | None = 0.0) -> torch.nn.Module:
    model = getattr(torchvision.models, name)().double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # Non-trivial statistics, so that folding matters.
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                if bn_eps is not None:
                    m.eps = bn_eps
    return model


def zennit_relevance(
    model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, composite_name: str, canonizer: type
) -> tuple[torch.Tensor, torch.Tensor]:
    composite_cls, params = COMPOSITES[composite_name]
    composite = composite_cls(canonizers=[canonizer()], **params)
    with Gradient(model=model, composite=composite) as attributor:
        output, relevance = attributor(x, torch.eye(1000, dtype=x.dtype)[target])
    return output, relevance


@pytest.mark.parametrize("model_name", ["vgg16", "resnet50"])
@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
def test_relprop_matches_zennit(model_name: str, composite_name: str) -> None:
    model = make_model(model_name)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    _, params = COMPOSITES[composite_name]
    ours = relprop.explain(model, x, composite=composite_name, **params)
    output, theirs = zennit_relevance(model, x, ours.target, composite_name, CANONIZERS[model_name])
    logit = output.gather(1, ours.target[:, None]).view(-1, 1, 1, 1)
    assert_close_relative(ours.relevance, theirs * logit, 1e-4)
    # in practice the agreement is at float64 rounding level
    assert_close_relative(ours.relevance, theirs * logit, 1e-10)
    assert ours.ledger.closes(rtol=1e-8)


def test_zennit_folding_keeps_eps_and_changes_the_function() -> None:
    """Documents the deliberate difference: with eps > 0 Zennit's canonized ResNet-50 computes another function."""
    model = make_model("resnet50", bn_eps=None)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        plain = model(x)
    ours = relprop.explain(model, x, composite="epsilon-gamma-box", low=-3.0, high=3.0)
    output, theirs = zennit_relevance(model, x, ours.target, "epsilon-gamma-box", ResNetCanonizer)
    # relprop explains the model as it is (folding only reorders float64 rounding)
    assert ((ours.output - plain).abs().max() / plain.abs().max()).item() < 1e-12
    drift = ((output - plain).abs().max() / plain.abs().max()).item()
    assert 1e-6 < drift < 1e-2  # Zennit's canonized model differs by its leftover eps
    # the explanations still agree to within that drift
    logit = output.gather(1, ours.target[:, None]).view(-1, 1, 1, 1)
    assert_close_relative(ours.relevance, theirs * logit, 50 * drift)
