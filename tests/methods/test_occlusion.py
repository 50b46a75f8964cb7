"""Occlusion against Captum's Occlusion; windows, values and errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import relprop
from relprop.methods.occlusion import window_slices

from .nets import functional_net, maxpool_net, resnet18
from helpers import assert_close_relative


@pytest.fixture(autouse=True)
def _quiet_captum() -> None:
    warnings.filterwarnings("ignore", module="captum")


@pytest.mark.parametrize(
    ("name", "patch", "stride", "captum_window", "captum_stride"),
    [
        ("maxpool", 3, 2, (3, 3, 3), (3, 2, 2)),  # the last window is cut at the border
        ("maxpool", (2, 4), (1, 4), (3, 2, 4), (3, 1, 4)),
        ("functional", (1, 4, 4), (1, 2, 2), (1, 4, 4), (1, 2, 2)),  # channel by channel
        ("resnet18", 8, 8, (3, 8, 8), (3, 8, 8)),
    ],
)
def test_equals_captum(name: str, patch: object, stride: object, captum_window: tuple, captum_stride: tuple) -> None:
    model = {"maxpool": maxpool_net, "functional": functional_net, "resnet18": resnet18}[name]()
    size = 32 if name == "resnet18" else 8
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    target = model(x).argmax(1).tolist()
    ours = relprop.explain(model, x, target, method="occlusion", patch=patch, stride=stride, value=0.25, batch_size=7)
    theirs = Occlusion(model).attribute(
        x, sliding_window_shapes=captum_window, strides=captum_stride, baselines=0.25, target=target
    )
    # Captum returns float32 attributions.
    assert_close_relative(ours.relevance, theirs.double(), 1e-6)


def test_windows_cover_every_feature_and_the_default_is_an_eight_by_eight_grid() -> None:
    windows = window_slices((10,), (4,), (3,))
    assert [(w[0].start, w[0].stop) for w in windows] == [(0, 4), (3, 7), (6, 10)]
    tiles = window_slices((10,), (4,), (4,))
    assert [(w[0].start, w[0].stop) for w in tiles] == [(0, 4), (4, 8), (8, 10)]  # the last one cut
    model = maxpool_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, method="occlusion")
    assert result.info["windows"] == 64 and result.info["patch"] == (3, 1, 1) and result.info["stride"] == (3, 1, 1)
    big = relprop.explain(resnet18(), torch.randn(1, 3, 32, 40, dtype=torch.float64), method="occlusion")
    assert big.info["windows"] == 64 and big.info["patch"] == (3, 4, 5)


def test_each_feature_gets_the_score_drop_of_its_window() -> None:
    # A linear model on (N, F) inputs: occluding features i..j to 0 drops the score by Σ w_k x_k over them.
    model = nn.Linear(6, 2, bias=True).double().eval()
    x = torch.randn(3, 6, dtype=torch.float64)
    result = relprop.explain(model, x, 1, method="occlusion", patch=2)
    contributions = (model.weight[1].detach() * x).view(3, 3, 2).sum(2, keepdim=True).expand(3, 3, 2).reshape(3, 6)
    assert torch.allclose(result.relevance, contributions)
    value = torch.randn(6, dtype=torch.float64)
    shifted = relprop.explain(model, x, 1, method="occlusion", patch=6, value=value)
    drop = (model.weight[1].detach() * (x - value)).sum(1, keepdim=True).expand(3, 6)
    assert torch.allclose(shifted.relevance, drop)
    mean = relprop.explain(model, x, 1, method="occlusion", patch=6, value="mean")
    drop = (model.weight[1].detach() * (x - x.mean(1, keepdim=True))).sum(1, keepdim=True).expand(3, 6)
    assert torch.allclose(mean.relevance, drop)


def test_invalid_windows() -> None:
    model, x = maxpool_net(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(relprop.ConfigurationError, match=r"occlusion patch \(3, 9, 9\) does not fit inputs"):
        relprop.explain(model, x, method="occlusion", patch=9)
    with pytest.raises(relprop.ConfigurationError, match=r"stride .* is larger than the patch"):
        relprop.explain(model, x, method="occlusion", patch=2, stride=3)
    with pytest.raises(relprop.ConfigurationError, match="value must be a number, 'blurred', 'mean' or a tensor"):
        relprop.explain(model, x, method="occlusion", value=None)
    with pytest.raises(relprop.ConfigurationError, match="value must be one of 'zeros', 'blurred', 'mean'"):
        relprop.explain(model, x, method="occlusion", value="grey")
    with pytest.raises(relprop.ConfigurationError, match="patch must be a positive integer or a tuple of 2"):
        relprop.explain(model, x, method="occlusion", patch=(2, 2, 2, 2))
