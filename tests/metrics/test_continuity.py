"""Continuity: local Lipschitz estimate and explanation correlation under small perturbations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import relprop
from relprop.metrics import continuity, local_lipschitz


def test_gradient_times_input_of_a_linear_model_has_its_closed_form_lipschitz(linear: type) -> None:
    """R(x) = w ⊙ x, so ||R(x) - R(x + δ)|| / ||δ|| = ||w ⊙ δ|| / ||δ||: with δ along feature i it is |w_i|."""
    model = linear(6)
    x = torch.rand(3, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    noise = torch.zeros(6, 3, 6, dtype=torch.float64)
    for i in range(6):
        noise[i, :, i] = 1e-3
    result = continuity(model, lambda m, inp, t: m.perfect(inp, t), x, target, noise=noise, keep_prediction=False)
    expected = model.weight[target].detach().abs()  # (3, 6)
    torch.testing.assert_close(result.ratios, expected.t())
    torch.testing.assert_close(result.lipschitz, expected.max(1).values)
    assert bool((result.kept == 6).all())


def test_smooth_constant_and_random_explanations_are_ordered(linear: type) -> None:
    model = linear(20)
    x = torch.rand(8, 20, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)

    def perfect(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return m.perfect(inputs, t)

    def constant(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return m.weight[t].detach().expand_as(inputs)

    def random(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)

    options = {"n_samples": 5, "sigma": 0.01, "keep_prediction": False, "generator": torch.Generator().manual_seed(1)}
    results = {
        name: continuity(model, fn, x, **options)
        for name, fn in [("constant", constant), ("perfect", perfect), ("random", random)]
    }
    lipschitz = {k: float(v.lipschitz.mean()) for k, v in results.items()}
    correlation = {k: float(v.correlation.mean()) for k, v in results.items()}
    assert lipschitz["constant"] == 0.0 and correlation["constant"] == pytest.approx(1.0)
    assert lipschitz["constant"] < lipschitz["perfect"] < lipschitz["random"]
    assert correlation["constant"] >= correlation["perfect"] > 0.99 > 0.5 > correlation["random"]


def test_perturbations_that_change_the_prediction_are_ignored() -> None:
    class Threshold(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x.sum(1, keepdim=True)
            return torch.cat([s, 1 - s], 1)  # class 0 iff sum > 0.5

    x = torch.tensor([[0.3, 0.3], [0.1, 0.1]], dtype=torch.float64)
    noise = torch.tensor([[[0.1, 0.0], [0.1, 0.0]], [[-0.2, 0.0], [-0.2, 0.0]]], dtype=torch.float64)

    def explain(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return inputs * 2

    result = continuity(Threshold(), explain, x, noise=noise)
    # Sample 0 (sum 0.6, class 0): the second perturbation (sum 0.4) flips it; sample 1 (sum 0.2,
    # class 1): both keep class 1.
    assert result.kept.tolist() == [1, 2]
    assert math.isnan(float(result.ratios[1, 0])) and float(result.ratios[0, 0]) == pytest.approx(2.0)
    everything = continuity(Threshold(), explain, x, noise=noise, keep_prediction=False)
    assert everything.kept.tolist() == [2, 2]


def test_lrp_on_digits_is_more_continuous_than_random(digits, lrp) -> None:
    model, x, _ = digits
    generator = torch.Generator().manual_seed(0)

    def random(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.randn(inputs.shape, generator=generator)

    smooth = local_lipschitz(model, lrp("epsilon", epsilon=0.25), x, n_samples=3, sigma=0.02, bounds=(0.0, 1.0))
    noisy = local_lipschitz(model, random, x, n_samples=3, sigma=0.02, bounds=(0.0, 1.0))
    assert float(smooth.nanmean()) < float(noisy.nanmean())


def test_noise_shape_is_checked(digits, lrp) -> None:
    model, x, _ = digits
    with pytest.raises(relprop.ConfigurationError, match="noise must have shape"):
        continuity(model, lrp(), x, noise=torch.zeros(2, 3, 1, 8, 8))
