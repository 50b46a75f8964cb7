"""Guided backprop and deconvnet against Captum; ReLUs found however they are written."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop

from .nets import FunctionalNetTwin, functional_net, maxpool_net, resnet18
from helpers import assert_close_relative, require

require("captum")
from captum.attr import Deconvolution, GuidedBackprop  # noqa: E402

CAPTUM = {"guided-backprop": GuidedBackprop, "deconvnet": Deconvolution}


@pytest.fixture(autouse=True)
def _quiet_captum() -> None:
    warnings.filterwarnings("ignore", module="captum")


@pytest.mark.parametrize("method", sorted(CAPTUM))
@pytest.mark.parametrize("name", ["maxpool", "functional", "resnet18"])
def test_equals_captum(method: str, name: str) -> None:
    if name == "resnet18":
        model = twin = resnet18()
        x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    else:
        model = maxpool_net() if name == "maxpool" else functional_net()
        # Captum only sees nn.ReLU modules: give it the functional net's twin built from them.
        twin = model if name == "maxpool" else FunctionalNetTwin(model)
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    target = model(x).argmax(1).tolist()
    ours = relprop.explain(model, x, target, method=method)
    theirs = CAPTUM[method](twin).attribute(x, target)
    assert_close_relative(ours.relevance, theirs, 1e-12)
    assert torch.equal(ours.relevance, ours.info["input_gradient"])
    assert torch.allclose(ours.ledger.input_relevance, ours.relevance.flatten(1).sum(1))


def test_guided_backprop_passes_only_positive_gradient_where_the_unit_was_active() -> None:
    # out = w2 · relu(w1 x): the gradient reaching x through each unit is w2_k·w1_k where unit k is active.
    model = nn.Sequential(nn.Linear(1, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [1.0], [-1.0], [-1.0]]))
        model[2].weight.copy_(torch.tensor([[2.0, -3.0, 5.0, -7.0]]))
    x = torch.tensor([[1.0]], dtype=torch.float64)  # units 0 and 1 active, 2 and 3 not
    gradient = relprop.explain(model, x, 0, method="gradient").relevance
    guided = relprop.explain(model, x, 0, method="guided-backprop").relevance
    deconv = relprop.explain(model, x, 0, method="deconvnet").relevance
    assert gradient.item() == 2.0 - 3.0
    assert guided.item() == 2.0  # only unit 0: active and positive gradient
    assert deconv.item() == 2.0 * 1.0 + 5.0 * -1.0  # units 0 and 2: positive gradient, activity ignored


def test_in_place_relus_work_and_a_stale_tensor_is_refused() -> None:
    class InPlace(nn.Module):
        def __init__(self, stale: bool) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
            self.stale = stale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            if self.stale:
                h.relu_()  # the result is dropped: the model relies on h being rectified in place
                return self.fc2(h)
            return self.fc2(F.relu(h, inplace=True))

    x = torch.randn(2, 4)
    model = InPlace(stale=False).eval()
    expected = relprop.explain(nn.Sequential(model.fc1, nn.ReLU(), model.fc2), x, 0, method="guided-backprop")
    assert torch.allclose(relprop.explain(model, x, 0, method="guided-backprop").relevance, expected.relevance)
    stale = InPlace(stale=True).eval()
    stale.load_state_dict(model.state_dict())
    with pytest.raises(relprop.UnsupportedOperationError, match=r"uses a tensor after an in-place operation"):
        relprop.explain(stale, x, 0, method="guided-backprop")
