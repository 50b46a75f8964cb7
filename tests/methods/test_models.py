"""Every method on the embedded digits model, and (heavy) on VGG-16 and ResNet-50 at 224×224."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import relprop
from relprop import methods
from relprop.models import digits_test_set, load_digits_model
from test_invariance import assert_unchanged, snapshot

from models import torchvision_model

SETTINGS: dict[str, dict[str, Any]] = {
    "lrp": {},
    "gradient": {},
    "gradient-x-input": {},
    "smoothgrad": {"n": 4, "seed": 0},
    "integrated-gradients": {"steps": 8},
    "guided-backprop": {},
    "deconvnet": {},
    "occlusion": {},
    "deeplift": {},
    "deeplift:reveal-cancel": {"rule": "reveal-cancel"},
    "deep-taylor": {},
}


def _check(
    model: torch.nn.Module, x: torch.Tensor, rtol: float, bounds: dict[str, float], patch: int | None = None
) -> None:
    assert {name.split(":")[0] for name in SETTINGS} == set(methods.names())
    with torch.no_grad():
        predicted = model(x).argmax(1)
    before = snapshot(model)
    for name, params in SETTINGS.items():
        method = name.split(":")[0]
        extra: dict[str, Any] = dict(bounds) if method in ("lrp", "deep-taylor") else {}
        if method == "occlusion" and patch is not None:
            extra["patch"] = patch
        result = relprop.explain(model, x, method=method, **params, **extra)
        assert result.relevance.shape == x.shape and bool(torch.isfinite(result.relevance).all()), name
        assert torch.equal(result.target, predicted), name
        if method == "deeplift":
            assert result.ledger.closes(rtol=rtol), (name, result.info["completeness_gap"], result.score)
    assert_unchanged(model, before)


def test_every_method_on_the_embedded_digits_model() -> None:
    model = load_digits_model().double()
    x = digits_test_set().images[:3].double()
    _check(model, x, 1e-5, {"low": 0.0, "high": 1.0})


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_every_method_on_full_size_torchvision_models(name: str) -> None:
    model = torchvision_model(name)
    x = torch.randn(2, 3, 224, 224)
    _check(model, x, 1e-3, {"low": -2.2, "high": 2.7}, patch=56)  # float32; 16 occlusion windows
