"""Pixel flipping / region perturbation: exact curves on a linear model, the ordering of a perfect,
a random and an inverted explanation, the replacements, and one forward per step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop.metrics import (
    aopc,
    area_under_curve,
    gaussian_blur,
    inpaint_neighbour_mean,
    perturbation_curve,
    selectivity,
)


def test_morf_curve_of_a_linear_model_is_the_score_minus_the_largest_contributions(linear: type) -> None:
    model = linear(12)
    x = torch.randn(5, 12, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1])
    perfect = model.perfect(x, target)
    curve = perturbation_curve(model, x, perfect, target, order="morf")
    score = model(x).gather(1, target.view(-1, 1)).squeeze(1)
    ordered = perfect.sort(1, descending=True).values
    expected = torch.cat([score.view(-1, 1), score.view(-1, 1) - ordered.cumsum(1)], 1)
    torch.testing.assert_close(curve.scores, expected)
    torch.testing.assert_close(curve.fractions, torch.arange(13, dtype=torch.float64) / 12)
    # AOPC = mean over k = 0..L of the summed top-k contributions.
    torch.testing.assert_close(curve.aopc, (expected[:, :1] - expected).mean(1))
    # The last step removed everything: only the bias is left.
    torch.testing.assert_close(curve.scores[:, -1], model.bias[target].detach())


def test_perfect_random_inverted_explanations_are_ordered(linear: type) -> None:
    model = linear(30)
    x = torch.rand(16, 30, dtype=torch.float64)
    target = model(x).argmax(1)
    perfect = model.perfect(x, target)
    generator = torch.Generator().manual_seed(1)
    scores = {}
    for name, relevance in {
        "perfect": perfect,
        "random": torch.randn(perfect.shape, generator=generator, dtype=torch.float64),
        "inverted": -perfect,
    }.items():
        result = selectivity(model, x, relevance, target)
        scores[name] = (result.aopc_morf.mean(), result.aopc_lerf.mean(), result.abpc.mean())
    # MoRF AOPC: higher is better; LeRF AOPC: lower is better; ABPC: higher is better.
    assert scores["perfect"][0] > scores["random"][0] > scores["inverted"][0]
    assert scores["perfect"][1] < scores["random"][1] < scores["inverted"][1]
    assert scores["perfect"][2] > scores["random"][2] > scores["inverted"][2]
    assert scores["perfect"][2] > 0 > scores["inverted"][2]


def test_greedy_order_is_optimal_for_an_additive_model(linear: type) -> None:
    """For an additive model no ordering beats the perfect one at any step of the MoRF curve."""
    model = linear(10)
    x = torch.randn(4, 10, dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.long)
    best = perturbation_curve(model, x, model.perfect(x, target), target).scores
    for seed in range(5):
        other = perturbation_curve(
            model, x, x, target, order="random", generator=torch.Generator().manual_seed(seed)
        ).scores
        assert bool((best <= other + 1e-12).all())


def test_lrp_beats_random_and_inverted_on_real_digits(digits, lrp) -> None:
    model, x, _ = digits
    explanation = relprop.explain(model, x, composite="epsilon-gamma-box", low=0.0, high=1.0)
    target = explanation.target
    random = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    abpc = {
        name: selectivity(model, x, r, target, replacement="inpaint").abpc.mean()
        for name, r in {"lrp": explanation.relevance, "random": random, "inverted": -explanation.relevance}.items()
    }
    assert abpc["lrp"] > abpc["random"] > abpc["inverted"]


class CountingModel(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize(("patch_size", "regions_per_step", "steps"), [(1, 1, 64), (2, 1, 16), (2, 3, 6), (3, 2, 5)])
def test_one_forward_per_step_for_the_whole_batch(digits, patch_size: int, regions_per_step: int, steps: int) -> None:
    model, x, labels = digits
    counting = CountingModel(model)
    curve = perturbation_curve(
        counting, x, torch.rand_like(x), labels, patch_size=patch_size, regions_per_step=regions_per_step
    )
    assert curve.scores.shape == (x.shape[0], steps + 1)
    assert counting.batches == [x.shape[0]] * (steps + 1)
    assert curve.fractions[-1] == 1.0


def test_regions_are_grid_patches_with_smaller_border_patches() -> None:
    """3×3 patches on an 8×8 image: 3 columns and rows of regions, the last ones 2 pixels wide."""

    class Sum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], 1)

    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    relevance = torch.zeros_like(x)
    relevance[0, 0, 7, 7] = 1.0  # the bottom-right region (2×2 pixels) is the most relevant
    relevance[0, 0, 0, 0] = 0.5  # then the top-left (3×3)
    curve = perturbation_curve(Sum(), x, relevance, 0, patch_size=3, steps=2)
    torch.testing.assert_close(curve.scores[0], torch.tensor([64.0, 60.0, 51.0], dtype=torch.float64))


def test_steps_limits_the_curve_and_probability_scores(digits) -> None:
    model, x, labels = digits
    curve = perturbation_curve(model, x, torch.rand_like(x), labels, steps=5, score="probability")
    assert curve.scores.shape == (x.shape[0], 6)
    torch.testing.assert_close(curve.scores[:, 0], torch.softmax(model(x), 1)[torch.arange(len(x)), labels].detach())
    torch.testing.assert_close(curve.fractions, torch.arange(6, dtype=torch.float64) / 64)


def test_area_under_curve_and_aopc_by_hand() -> None:
    scores = torch.tensor([[4.0, 2.0, 1.0, 1.0]])
    fractions = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    torch.testing.assert_close(
        area_under_curve(scores, fractions), torch.tensor([(3 + 1.5 + 1) / 3], dtype=torch.float64)
    )
    torch.testing.assert_close(aopc(scores), torch.tensor([(0 + 2 + 3 + 3) / 4], dtype=torch.float64))


class PixelProbe(nn.Module):
    """Returns the image itself as 'logits', so the tests can read the perturbed inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.mark.parametrize("replacement", ["zeros", "mean", "blur", "uniform", "inpaint", 0.25])
def test_replacements_change_only_removed_pixels(replacement: object) -> None:
    """The probe model's 'logit' k is pixel k, so the curve reads the perturbed pixels back."""
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    relevance = torch.zeros_like(x)
    relevance[:, :, 2, 3] = 1.0  # pixel 15 is removed in the first step

    def pixel_after_one_step(index: int) -> torch.Tensor:
        curve = perturbation_curve(
            PixelProbe(), x, relevance, index, replacement=replacement, steps=1, low=0.0, high=1.0,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        return curve.scores[:, 1]

    for kept in (0, 14, 35):
        torch.testing.assert_close(pixel_after_one_step(kept), x.flatten(1)[:, kept])
    value = pixel_after_one_step(15)
    expected = {
        "zeros": torch.zeros(2, dtype=torch.float64),
        "mean": x.mean((1, 2, 3)),
        "blur": gaussian_blur(x)[:, 0, 2, 3],
        "inpaint": (x[:, 0, 1:4, 2:5].sum((1, 2)) - x[:, 0, 2, 3]) / 8,
        0.25: torch.full((2,), 0.25, dtype=torch.float64),
    }
    if replacement == "uniform":
        assert bool(((value >= 0) & (value <= 1)).all()) and bool((value != x[:, 0, 2, 3]).all())
    else:
        torch.testing.assert_close(value, expected[replacement])


def test_a_replacement_function_gets_the_mask_of_removed_pixels() -> None:
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    relevance = torch.zeros_like(x)
    relevance[:, :, 2, 3] = 1.0
    seen = []

    def perturb(inputs: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        seen.append(removed.clone())
        return inputs

    perturbation_curve(PixelProbe(), x, relevance, 0, replacement=perturb, steps=2)
    assert [tuple(m.shape) for m in seen] == [(2, 1, 6, 6)] * 2
    assert [int(m.sum()) for m in seen] == [2, 4] and bool(seen[0][:, :, 2, 3].all())


def test_gaussian_blur_keeps_constants_and_sums() -> None:
    constant = torch.full((1, 3, 7, 9), 0.7, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 1.5), constant)
    impulse = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    impulse[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    torch.testing.assert_close(blurred.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert blurred[0, 0, 7, 7] == blurred.max()


def test_inpainting_fills_holes_ring_by_ring_and_everything_with_the_mean() -> None:
    x = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5)
    removed = torch.zeros_like(x, dtype=torch.bool)
    removed[:, :, 1:4, 1:4] = True
    out = inpaint_neighbour_mean(x, removed)
    # The corner of the hole sees five present neighbours.
    torch.testing.assert_close(out[0, 0, 1, 1], (x[0, 0, 0, 0:3].sum() + x[0, 0, 1, 0] + x[0, 0, 2, 0]) / 5)
    assert out[0, 0, 2, 2] > 0  # the centre was filled from the first ring
    everything = inpaint_neighbour_mean(x, torch.ones_like(removed))
    torch.testing.assert_close(everything, torch.full_like(x, 12.0))


def test_errors_name_the_option(digits) -> None:
    model, x, labels = digits
    with pytest.raises(relprop.ConfigurationError, match="order must be one of morf, lerf, random"):
        perturbation_curve(model, x, x, labels, order="best")
    with pytest.raises(relprop.ConfigurationError, match="unknown replacement 'noise'"):
        perturbation_curve(model, x, x, labels, replacement="noise")
    with pytest.raises(relprop.ConfigurationError, match="relevance of shape \\(24, 64\\) does not fit"):
        perturbation_curve(model, x, x.flatten(1), labels)
    with pytest.raises(relprop.ConfigurationError, match="patch_size 2 needs images"):
        perturbation_curve(nn.Linear(5, 2), torch.rand(3, 5), torch.rand(3, 5), 0, patch_size=2)


def test_a_reference_tensor_replaces_removed_features_by_its_values(linear: type) -> None:
    model = linear(12)
    x = torch.rand(4, 12, dtype=torch.float64)
    reference = torch.linspace(-1, 1, 12, dtype=torch.float64)  # one sample's shape, e.g. a training-set mean
    relevance = torch.randn(4, 12, dtype=torch.float64)
    # Removing feature i moves the linear score by W[c, i] * (reference_i - x_i): exact curve by hand.
    curve = perturbation_curve(model, x, relevance, 0, replacement=reference)
    order = relevance.argsort(dim=1, descending=True, stable=True)
    steps = (model.weight[0] * (reference - x)).gather(1, order).detach()
    score = model(x)[:, 0].detach()
    torch.testing.assert_close(curve.scores, torch.cat([score[:, None], score[:, None] + steps.cumsum(1)], 1))
    with pytest.raises(relprop.ConfigurationError) as info:
        perturbation_curve(model, x, relevance, 0, replacement=torch.zeros(5))
    assert str(info.value) == (
        "replacement tensor of shape (5,) does not fit inputs of shape (4, 12); pass one shaped like one input or "
        "broadcastable to the batch."
    )
