"""In-place operations and aliases: relprop explains exactly the function the model computes.

An in-place operation produces a new version of its tensor; every later reader of any alias — the
tensor itself, or a view of it taken before the operation — gets that version and its relevance
path. Checked on models written the way real code is: VGG "slices" whose next slice starts with
``ReLU(inplace=True)`` while the previous output is kept as a skip connection, ``x.relu_()``,
``out += identity``, ``x.mul_(mask)``, views taken before an in-place change.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

import relprop


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).gather(1, target[:, None]).sum(), xx)
    return g * x


def check(model: nn.Module, x: torch.Tensor) -> relprop.Explanation:
    """Same output bit for bit, LRP-0 = gradient × input, a closing ledger, the model unchanged."""
    with torch.no_grad():
        expected = model(x.clone())
    result = relprop.explain(model, x, composite="lrp-0")
    assert torch.equal(result.output, expected)
    torch.testing.assert_close(result.relevance, gradient_x_input(model, x, result.target), rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)
    with torch.no_grad():
        assert torch.equal(model(x.clone()), expected)
    for composite in ("epsilon-gamma-box", "epsilon-plus-flat"):
        other = relprop.explain(model, x, composite=composite)
        assert torch.equal(other.output, expected)
        assert torch.isfinite(other.relevance).all() and other.ledger.closes(rtol=1e-9)
    return result


class VGGSlices(nn.Module):
    """Perceptual-loss / U-Net style: torchvision VGG cut into slices *before* each ReLU(inplace=True).

    Each slice's output is kept as a skip; the next slice's in-place ReLU rectifies it, so what the
    head later reads from the skips is rectified (as the model computes it).
    """

    def __init__(self) -> None:
        super().__init__()
        features = torchvision.models.vgg11().features[:8]  # conv, relu_, pool, conv, relu_, pool, conv, relu_
        self.slice1 = features[0:1]
        self.slice2 = features[1:4]
        self.slice3 = features[4:7]
        self.slice4 = features[7:8]
        self.head = nn.Linear(64 + 128 + 256 + 256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.slice1(x)
        h2 = self.slice2(h1)  # rectifies h1 in place
        h3 = self.slice3(h2)  # rectifies h2 in place
        h4 = self.slice4(h3)  # rectifies h3 in place
        pooled = [h.mean((2, 3)) for h in (h1, h2, h3, h4)]
        return self.head(torch.cat(pooled, 1))


def test_vgg_slices_with_in_place_relus_and_skips() -> None:
    torch.manual_seed(0)
    model = VGGSlices().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        h1 = model.slice1(x)
        assert bool((h1 < 0).any())  # the skip really is rectified later: the test has teeth
    check(model, x)


class UNetSkips(nn.Module):
    """A small U-Net: encoder outputs modified in place by the next block, then read by the decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 4, 3, padding=1)
        self.enc2 = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1))
        self.bottom = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Conv2d(8 + 8 + 4, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)  # e1 rectified in place
        b = self.bottom(e2)  # e2 rectified in place
        d = self.dec(torch.cat([self.up(torch.cat([b, e2], 1)), e1], 1))
        return self.head(torch.relu(d).mean((2, 3)))


def test_unet_with_in_place_skips() -> None:
    check(UNetSkips().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64))


class Functional(nn.Module):
    """``x.relu_()`` with its result discarded, ``out += identity``, ``x.mul_(mask)``, a view taken before."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)
        self.register_buffer("mask", (torch.arange(6) % 2).double())
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.variant == "bare-relu_":
            h.relu_()  # result discarded: relies on the side effect
            return self.out(h)
        if self.variant == "residual+=":
            out = self.fc2(torch.relu(h))
            out += h  # torchvision's residual
            return self.out(out)
        if self.variant == "mul_-mask":
            h.mul_(self.mask)
            return self.out(torch.relu(h) + self.fc2(h))
        if self.variant == "view-before":
            first = h[:, :3]  # a view taken before the in-place change
            flat = h.view(-1, 6)
            h.relu_()
            return self.out(torch.cat([first, first], 1) + flat + self.fc2(h))
        if self.variant == "write-through-view":
            h[:, 3:].relu_()  # an in-place change of a view changes the base
            return self.out(h)
        raise AssertionError(self.variant)


@pytest.mark.parametrize("variant", ["bare-relu_", "residual+=", "mul_-mask", "view-before", "write-through-view"])
def test_functional_in_place_patterns(variant: str) -> None:
    model = Functional(variant).double().eval()
    with torch.no_grad():
        model.fc1.bias.fill_(-0.3)  # plenty of negative pre-activations to rectify
    check(model, torch.randn(4, 6, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: torchvision.models.resnet18(), lambda: torchvision.models.densenet121()])
def test_torchvision_models_keep_their_output_bit_for_bit(make: Callable[[], nn.Module]) -> None:
    model = make().double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    result = relprop.explain(model, x, composite="epsilon-gamma-box", canonize=False)
    assert torch.equal(result.output, expected)


class MorePatterns(nn.Module):
    """Further aliasing patterns, each with an out-of-place twin computing the same function."""

    def __init__(self, variant: str, in_place: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)
        self.variant = variant
        self.in_place = in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.out(getattr(self, self.variant.replace("-", "_"))(x, h))

    def setitem(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            h[:, 0] = 0.0  # a write into a rule's output (autograd refuses it on a custom function's view)
            h.relu_()
            return h
        return torch.relu(torch.cat([torch.zeros_like(h[:, :1]), h[:, 1:]], 1))

    def overlapping_views(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            a, b = h[:, :4], h[:, 2:]  # both taken before the change
            a.relu_()
            return torch.cat([b, h[:, :2]], 1) + h
        r = torch.cat([torch.relu(h[:, :4]), h[:, 4:]], 1)
        return torch.cat([r[:, 2:], r[:, :2]], 1) + r

    def chained_in_place(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            g = h.relu_()  # g is h
            g.mul_(3.0)
            h.add_(1.0)
            return g
        return torch.relu(h) * 3.0 + 1.0

    def other_operand(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        k = self.fc2(x)
        if self.in_place:
            h.add_(k)
            k.relu_()  # changes k after h read it: h keeps the old k
            return h * 0.5 + k
        return (h + k) * 0.5 + torch.relu(k)

    def hardtanh(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            nn.Hardtanh(inplace=True)(h)  # result discarded: h itself is changed
        else:
            h = nn.Hardtanh()(h)
        return h + self.fc2(h)


@pytest.mark.parametrize("variant", ["setitem", "overlapping-views", "chained-in-place", "other-operand", "hardtanh"])
def test_in_place_variants_explain_like_their_out_of_place_twins(variant: str) -> None:
    model = MorePatterns(variant, in_place=True).double().eval()
    twin = MorePatterns(variant, in_place=False).double().eval()
    with torch.no_grad():
        model.fc1.bias.fill_(-0.3)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x.clone())
        assert torch.allclose(twin(x), expected, rtol=0, atol=1e-12)
    for composite in ("lrp-0", "epsilon-gamma-box", "epsilon-plus-flat"):
        result = relprop.explain(model, x, composite=composite)
        reference = relprop.explain(twin, x, composite=composite)
        assert torch.equal(result.output, expected)
        torch.testing.assert_close(result.relevance, reference.relevance, rtol=1e-10, atol=1e-12)
        assert result.ledger.closes(rtol=1e-9)
