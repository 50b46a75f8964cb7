"""Every method leaves the model bit-identical, also when it raises."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import relprop
from test_invariance import assert_unchanged, snapshot

from .nets import functional_net, resnet18
from models import small_cnn

CHEAP: dict[str, dict[str, Any]] = {
    "gradient": {},
    "gradient-x-input": {},
    "smoothgrad": {"n": 2},
    "integrated-gradients": {"steps": 2},
    "guided-backprop": {},
    "deconvnet": {},
    "occlusion": {"patch": 8},
    "deeplift": {"rule": "rescale", "reference": "blurred"},
    "deeplift-reveal-cancel": {"rule": "reveal-cancel"},
    "deep-taylor": {},
}
MODELS: dict[str, Callable[[], nn.Module]] = {
    "sequential-bn": lambda: small_cnn(batchnorm=True).eval(),
    "functional": lambda: functional_net().float(),
    "resnet18": lambda: resnet18().float(),
}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("method", sorted(CHEAP))
def test_model_is_bit_identical_after_each_method(method: str, model_name: str) -> None:
    model = MODELS[model_name]()
    x = torch.randn(2, 3, 32, 32) if model_name == "resnet18" else torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    before = snapshot(model)
    reference = copy.deepcopy(model)
    relprop.explain(model, x, method=method.replace("-reveal-cancel", ""), **CHEAP[method])
    assert_unchanged(model, before)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
        assert torch.equal(reference(x), expected)


@pytest.mark.parametrize("method", sorted(CHEAP))
def test_model_is_unchanged_when_a_method_raises(method: str) -> None:
    model = small_cnn(batchnorm=True).eval()
    before = snapshot(model)
    with pytest.raises(relprop.TargetError):
        relprop.explain(
            model, torch.randn(2, 3, 8, 8), 10, method=method.replace("-reveal-cancel", ""), **CHEAP[method]
        )
    assert_unchanged(model, before)
