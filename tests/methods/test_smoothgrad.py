"""SmoothGrad: the noise it adds, its average, its reproducibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop

from .nets import functional_net, maxpool_net
from helpers import assert_close_relative


class HalfSquaredNorm(nn.Module):
    """s(x) = ½‖x‖² (one output), whose gradient is the input itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x * x).flatten(1).sum(1, keepdim=True)


def test_without_noise_it_is_the_gradient() -> None:
    model = functional_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    smooth = relprop.explain(model, x, 3, method="smoothgrad", n=3, sigma=0.0)
    assert_close_relative(smooth.relevance, relprop.explain(model, x, 3, method="gradient").relevance, 1e-12)
    times_input = relprop.explain(model, x, 3, method="smoothgrad", n=2, sigma=0.0, times_input=True)
    assert_close_relative(
        times_input.relevance, relprop.explain(model, x, 3, method="gradient-x-input").relevance, 1e-12
    )


def test_the_average_is_over_gradients_at_noisy_inputs() -> None:
    # ∇½‖x‖² = x, so the result is x plus the mean of the noise: its spread is σ/√n.
    x = torch.rand(2, 1, 40, 40, dtype=torch.float64) * 4.0 - 1.0
    sigma, n = 0.2, 16
    result = relprop.explain(HalfSquaredNorm(), x, 0, method="smoothgrad", n=n, sigma=sigma, seed=1, batch_size=6)
    value_range = x.flatten(1).max(1).values - x.flatten(1).min(1).values
    assert torch.allclose(result.info["sigma"], sigma * value_range)
    spread = (result.relevance - x).flatten(1).std(1)
    expected = sigma * value_range / n**0.5
    assert torch.all((spread / expected - 1).abs() < 0.1)
    absolute = relprop.explain(HalfSquaredNorm(), x, 0, method="smoothgrad", n=n, sigma=0.5, sigma_mode="absolute")
    assert torch.allclose(absolute.info["sigma"], torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.all(((absolute.relevance - x).flatten(1).std(1) / (0.5 / n**0.5) - 1).abs() < 0.1)


def test_a_seed_reproduces_the_noise_without_touching_the_global_generator() -> None:
    model = maxpool_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    state = torch.random.get_rng_state()
    first = relprop.explain(model, x, method="smoothgrad", n=4, seed=7, batch_size=3)
    second = relprop.explain(model, x, method="smoothgrad", n=4, seed=7, batch_size=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.allclose(first.relevance, second.relevance, rtol=0, atol=1e-13)
    other = relprop.explain(model, x, method="smoothgrad", n=4, seed=8)
    assert not torch.allclose(first.relevance, other.relevance)


def test_a_linear_model_has_the_same_gradient_everywhere() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    result = relprop.explain(model, x, 2, method="smoothgrad", n=5, sigma=1.0, seed=0)
    assert torch.allclose(result.relevance, model[1].weight[2].detach().view(3, 2, 2).expand_as(x))


def test_invalid_parameters() -> None:
    model, x = maxpool_net(), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(relprop.ConfigurationError, match=r"^method 'smoothgrad': n must be an integer >= 1, got 0.$"):
        relprop.explain(model, x, method="smoothgrad", n=0)
    message = r"^method 'smoothgrad': sigma must be a finite number >= 0, got -1.0.$"
    with pytest.raises(relprop.ConfigurationError, match=message):
        relprop.explain(model, x, method="smoothgrad", sigma=-1.0)
    with pytest.raises(relprop.ConfigurationError, match="sigma_mode must be one of range, absolute"):
        relprop.explain(model, x, method="smoothgrad", sigma_mode="relative")
