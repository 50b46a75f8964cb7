"""DeepLIFT: Captum oracle (rescale), summation-to-delta (rescale, RevealCancel), hand-computed cases."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import DeepLift
from torch import nn

import relprop
from relprop.models import digits_test_set, load_digits_model

from .nets import FunctionalNetTwin, ResNetTwin, functional_net, maxpool_net, maxpool_net_twin, resnet18
from helpers import assert_close_relative

RULES = ["rescale", "reveal-cancel"]


@pytest.fixture(autouse=True)
def _quiet_captum() -> None:
    warnings.filterwarnings("ignore", module="captum")


def _scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[torch.arange(len(target)), target]


@pytest.mark.parametrize("name", ["maxpool", "functional", "resnet18"])
def test_rescale_equals_captum(name: str) -> None:
    if name == "maxpool":
        model = maxpool_net()
        twin = maxpool_net_twin(model)
        shape: tuple[int, ...] = (2, 3, 8, 8)
    elif name == "functional":
        model = functional_net()
        twin = FunctionalNetTwin(model)
        shape = (2, 3, 8, 8)
    else:
        model = resnet18(overlapping_pool=False)  # see nets.resnet18 for why
        twin = ResNetTwin(model)
        shape = (1, 3, 32, 32)
    x = torch.randn(*shape, dtype=torch.float64)
    # A reference above the input in places exercises both branches of the max-pool rule.
    reference = torch.randn_like(x)
    target = model(x).argmax(1).tolist()
    ours = relprop.explain(model, x, target, method="deeplift", reference=reference)
    theirs = DeepLift(twin).attribute(x, reference, target)
    assert_close_relative(ours.relevance, theirs, 1e-10)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", ["maxpool", "functional", "resnet18", "digits"])
def test_summation_to_delta(rule: str, name: str) -> None:
    if name == "digits":
        model = load_digits_model().double()
        x = digits_test_set().images[:4].double()
    elif name == "resnet18":
        model = resnet18()  # overlapping 3×3 max pooling
        x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    else:
        model = maxpool_net() if name == "maxpool" else functional_net()
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for reference in ("zeros", torch.randn_like(x[:1]), "blurred"):
        result = relprop.explain(model, x, method="deeplift", rule=rule, reference=reference, blur_sigma=1.0)
        delta = _scores(model, x, result.target) - _scores(model, result.info["reference"], result.target)
        assert torch.allclose(result.score, delta)
        total = result.relevance.flatten(1).sum(1)
        assert torch.all((total - delta).abs() <= 1e-5 * delta.abs()), (total, delta)
        assert torch.allclose(result.info["completeness_gap"], delta - total)
        assert result.ledger.closes(rtol=1e-5)
        assert torch.equal(result.relevance, (x - result.info["reference"]) * result.info["input_gradient"])


class MinNet(nn.Module):
    """``min(i1, i2) = i1 − relu(i1 − i2)`` (Shrikumar et al., Fig. 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.difference = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.difference.weight.copy_(torch.tensor([[1.0, -1.0]]))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - self.relu(self.difference(x))


@pytest.mark.parametrize(
    ("inputs", "rescale", "reveal_cancel"),
    [
        # i1 = 3 > i2 = 1, so min = i2. Rescale: the ReLU's multiplier is Δy/Δz = 2/2 = 1 and
        # i1's two paths cancel: all credit to i2. RevealCancel: Δz⁺ = 3 (from i1), Δz⁻ = −1
        # (from i2); Δy⁺ = ½(relu(3) − relu(0)) + ½(relu(2) − relu(−1)) = 2.5 and
        # Δy⁻ = ½(relu(−1) − relu(0)) + ½(relu(2) − relu(3)) = −0.5, so m⁺ = 2.5/3, m⁻ = 0.5:
        # C(i1) = 3 − 3·m⁺ = 0.5 and C(i2) = −(−1·m⁻) = 0.5.
        ((3.0, 1.0), (0.0, 1.0), (0.5, 0.5)),
        # i1 = 1 < i2 = 3, so min = i1. Rescale: the ReLU stays off (m = 0/−2): all credit to i1.
        # RevealCancel: Δz⁺ = 1, Δz⁻ = −3; Δy⁺ = ½(relu(1) − 0) + ½(relu(−2) − relu(−3)) = 0.5,
        # Δy⁻ = −0.5, so m⁺ = 0.5, m⁻ = 1/6: C(i1) = 1 − 1·m⁺ = 0.5, C(i2) = −(−3·m⁻) = 0.5.
        ((1.0, 3.0), (1.0, 0.0), (0.5, 0.5)),
    ],
)
def test_reveal_cancel_shares_what_rescale_gives_to_one_input_of_min(
    inputs: tuple[float, float], rescale: tuple[float, float], reveal_cancel: tuple[float, float]
) -> None:
    model = MinNet().double().eval()
    x = torch.tensor([inputs], dtype=torch.float64)
    for rule, expected in (("rescale", rescale), ("reveal-cancel", reveal_cancel)):
        result = relprop.explain(model, x, 0, method="deeplift", rule=rule)
        assert torch.allclose(result.relevance, torch.tensor([expected], dtype=torch.float64)), (rule, result.relevance)


def test_max_pool_window_rescale_credits_the_winner_reveal_cancel_splits_like_shapley() -> None:
    # One window max(a, b), from the reference (1, 3) to the input (4, 2): Δ = (3, −1), Δy = 4 − 3 = 1.
    # Rescale: y ≥ ȳ, so Δy goes to the input's winner a alone: C = (1, 0).
    # RevealCancel: Δ⁺ = (3, 0), Δ⁻ = (0, −1); Δy⁺ = ½(max(4,3) − 3) + ½(4 − max(1,2)) = 1.5,
    # Δy⁻ = ½(max(1,2) − 3) + ½(4 − max(4,3)) = −0.5: C = (1.5, −0.5), the Shapley values of the
    # two inputs (v(∅) = 3, v(a) = 4, v(b) = 2, v(ab) = 4).
    model = nn.Sequential(nn.MaxPool1d(2), nn.Flatten()).double().eval()
    x = torch.tensor([[[4.0, 2.0]]], dtype=torch.float64)
    reference = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    rescale = relprop.explain(model, x, 0, method="deeplift", reference=reference)
    reveal = relprop.explain(model, x, 0, method="deeplift", reference=reference, rule="reveal-cancel")
    assert torch.allclose(rescale.relevance, torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    assert torch.allclose(reveal.relevance, torch.tensor([[[1.5, -0.5]]], dtype=torch.float64))
    # From zero, with both differences positive, RevealCancel shares Δy = 3 in proportion (3 : 1).
    up = relprop.explain(model, torch.tensor([[[3.0, 1.0]]], dtype=torch.float64), 0, method="deeplift",
                         rule="reveal-cancel")  # fmt: skip
    assert torch.allclose(up.relevance, torch.tensor([[[2.25, 0.75]]], dtype=torch.float64))


def test_reveal_cancel_carries_the_parts_through_batch_norm_with_a_negative_scale() -> None:
    # relu(bn(w·x)) with a negative batch-norm scale: bn flips the signs of the layer's terms.
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1), nn.ReLU()).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model[1].weight.fill_(-2.0)
        model[1].bias.fill_(0.0)
        model[1].running_mean.fill_(0.0)
        model[1].running_var.fill_(1.0 - model[1].eps)
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    # z = −2(x1 − x2) = 4 with terms −2·1 = −2 (x1) and +2·3 = 6 (x2); from 0: Δy⁺ = ½·6 + ½(4 − 0) = 5,
    # Δy⁻ = ½·0 + ½(4 − 6) = −1; C(x1) = −2·(−1/−2) = −1, C(x2) = 6·(5/6) = 5.
    result = relprop.explain(model, x, 0, method="deeplift", rule="reveal-cancel")
    assert torch.allclose(result.relevance, torch.tensor([[-1.0, 5.0]], dtype=torch.float64))


def test_sigmoid_and_tanh_use_the_ratio_of_differences() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(3, 3, dtype=torch.float64)
    for rule in RULES:
        result = relprop.explain(model, x, 1, method="deeplift", rule=rule, reference="mean")
        assert result.ledger.closes(rtol=1e-8)
    ours = relprop.explain(model, x, 1, method="deeplift")
    assert_close_relative(ours.relevance, DeepLift(model).attribute(x, torch.zeros_like(x), 1), 1e-10)


def test_invalid_parameters() -> None:
    model, x = maxpool_net(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(relprop.ConfigurationError, match="deeplift rule must be one of rescale, reveal-cancel"):
        relprop.explain(model, x, method="deeplift", rule="linear")
    with pytest.raises(relprop.ConfigurationError, match=r"^method 'deeplift': eps must be a finite number > 0"):
        relprop.explain(model, x, method="deeplift", eps=0.0)
    with pytest.raises(relprop.ConfigurationError, match="reference has shape"):
        relprop.explain(model, x, method="deeplift", reference=torch.zeros(2, 2))
