"""Gradient and Gradient×Input against Captum's Saliency and InputXGradient; targets as in LRP."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import InputXGradient, Saliency

import relprop

from .nets import functional_net, maxpool_net, resnet18
from helpers import assert_close_relative

MODELS = {"maxpool": (maxpool_net, (2, 3, 8, 8)), "functional": (functional_net, (2, 3, 8, 8)),
          "resnet18": (resnet18, (2, 3, 32, 32))}  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet_captum() -> None:
    warnings.filterwarnings("ignore", module="captum")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_and_gradient_x_input_equal_captum(name: str) -> None:
    factory, shape = MODELS[name]
    model = factory()
    x = torch.randn(*shape, dtype=torch.float64)
    target = model(x).argmax(1).tolist()
    signed = relprop.explain(model, x, target, method="gradient")
    absolute = relprop.explain(model, x, target, method="gradient", absolute=True)
    times_input = relprop.explain(model, x, target, method="gradient-x-input")
    assert_close_relative(signed.relevance, Saliency(model).attribute(x, target, abs=False), 1e-12)
    assert_close_relative(absolute.relevance, Saliency(model).attribute(x, target, abs=True), 1e-12)
    assert_close_relative(times_input.relevance, InputXGradient(model).attribute(x, target), 1e-12)
    assert torch.equal(signed.info["input_gradient"], absolute.info["input_gradient"])
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(signed.output, logits)
    assert torch.equal(signed.score, logits[torch.arange(len(target)), target])
    assert torch.allclose(times_input.ledger.input_relevance, times_input.relevance.flatten(1).sum(1))


def test_targets_are_resolved_like_lrp() -> None:
    model = maxpool_net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    predicted = model(x).argmax(1)
    by_default = relprop.explain(model, x, method="gradient")
    assert torch.equal(by_default.target, predicted)
    assert torch.equal(by_default.target, relprop.explain(model, x).target)
    one = relprop.explain(model, x, 2, method="gradient")
    assert one.target.tolist() == [2, 2, 2]
    each = relprop.explain(model, x, [0, 1, 4], method="gradient")
    assert each.target.tolist() == [0, 1, 4]
    # An initial-relevance tensor: the gradient of Σ R/z ⊙ z, i.e. of the logits weighted by R/z.
    with torch.no_grad():
        z = model(x)
    relevance = torch.zeros_like(z)
    relevance[:, 1] = z[:, 1]
    weighted = relprop.explain(model, x, relevance, method="gradient")
    assert_close_relative(weighted.relevance, relprop.explain(model, x, 1, method="gradient").relevance, 1e-12)


def test_bad_targets_raise_the_lrp_errors() -> None:
    model = maxpool_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for method in ("gradient", "smoothgrad", "occlusion", "deeplift", "guided-backprop"):
        with pytest.raises(relprop.TargetError, match="target 5 is out of range for a model with 5 outputs"):
            relprop.explain(model, x, 5, method=method)
        with pytest.raises(relprop.TargetError, match="got 3 target indices for a batch of 2"):
            relprop.explain(model, x, [0, 1, 2], method=method)


def test_training_mode_is_refused_before_any_forward_pass() -> None:
    model = maxpool_net().train()
    running_mean = model[1].running_mean.clone()
    with pytest.raises(relprop.ModelStateError, match=r"batch norm at '1' \(BatchNorm2d\).*call model.eval\(\)"):
        relprop.explain(model, torch.randn(2, 3, 8, 8, dtype=torch.float64), method="gradient")
    assert torch.equal(model[1].running_mean, running_mean)


def test_inputs_are_checked_and_moved_to_the_model_device() -> None:
    model = maxpool_net()
    with pytest.raises(relprop.ConfigurationError, match="inputs must be a floating-point tensor"):
        relprop.explain(model, torch.zeros(1, 3, 8, 8, dtype=torch.long), method="gradient")
    with pytest.raises(relprop.ConfigurationError, match="non-empty batch"):
        relprop.explain(model, torch.zeros(0, 3, 8, 8, dtype=torch.float64), method="gradient")
    result = relprop.explain(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), method="gradient")
    assert result.relevance.device == next(model.parameters()).device
