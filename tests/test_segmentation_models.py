"""torchvision's segmentation architectures (dict outputs {"out", "aux"}, bilinear upsampling, ASPP) with
random weights: region targets close the ledger and LRP-0 equals Gradient×Input on the same region."""

from __future__ import annotations

import pytest
import torch
import torchvision

import relprop
from relprop.targets import class_region, region

from helpers import assert_close_relative
from models import randomize_batchnorm

# DeepLabV3's dilated 2048-channel ASPP costs about 25 s per test in float64: the full set is heavy.
ARCHITECTURES = ["fcn_resnet50", pytest.param("deeplabv3_resnet50", marks=pytest.mark.heavy)]


def segmentation_model(name: str) -> torch.nn.Module:
    builder = getattr(torchvision.models.segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=5, aux_loss=True)
    return randomize_batchnorm(model).double().eval()


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request) -> torch.nn.Module:
    torch.manual_seed(0)
    return segmentation_model(request.param)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_class_region_closes_the_ledger_on_the_dict_output(model, x) -> None:
    with torch.no_grad():
        out = model(x)["out"]
    k = int(out.argmax(1).flatten().mode().values)
    result = relprop.explain(model, x, target=class_region(k), output="out", composite="epsilon-gamma-box")
    predicted = out.argmax(1) == k
    assert torch.allclose(result.score, (out[:, k] * predicted).sum((1, 2)), rtol=1e-10)
    assert result.ledger.closes(rtol=1e-6)
    assert result.relevance.shape == x.shape and torch.isfinite(result.relevance).all()


def test_lrp0_on_a_box_equals_gradient_times_input(model, x) -> None:
    target = region(box=(10, 12, 30, 40), channel=3)
    lrp0 = relprop.explain(model, x, target=target, output="out", composite="lrp-0")
    gxi = relprop.explain(model, x, target=target, output="out", method="gradient-x-input")
    assert torch.allclose(lrp0.score, gxi.score, rtol=1e-12)
    assert_close_relative(lrp0.relevance, gxi.relevance, 1e-6)


def test_the_auxiliary_head_is_selectable(model, x) -> None:
    result = relprop.explain(model, x, target=region(box=(0, 0, 24, 24), channel=1), output="aux", composite="epsilon")
    with torch.no_grad():
        aux = model(x)["aux"]
    assert torch.allclose(result.score, aux[:, 1, :24, :24].sum((1, 2)), rtol=1e-10)
    assert result.ledger.closes(rtol=1e-6)


def test_deeplabv3_region_closes_the_ledger() -> None:
    torch.manual_seed(0)
    model = segmentation_model("deeplabv3_resnet50")
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    result = relprop.explain(model, x, target=region(box=(4, 4, 20, 28), channel=2), output="out", composite="epsilon")
    with torch.no_grad():
        expected = model(x)["out"][:, 2, 4:28, 4:20].sum((1, 2))
    assert torch.allclose(result.score, expected, rtol=1e-10)
    assert result.ledger.closes(rtol=1e-6)
