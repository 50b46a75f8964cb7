"""Integrated Gradients against Captum, its completeness gap, baselines and batching."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import relprop
from relprop.methods.integrated_gradients import quadrature_points

from .nets import functional_net, maxpool_net, resnet18
from helpers import assert_close_relative, require

require("captum")
from captum.attr import IntegratedGradients  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_captum() -> None:
    warnings.filterwarnings("ignore", module="captum")


@pytest.mark.parametrize(
    ("quadrature", "captum_method"),
    [
        ("gauss-legendre", "gausslegendre"),
        ("riemann-left", "riemann_left"),
        ("riemann-right", "riemann_right"),
        ("riemann-middle", "riemann_middle"),
    ],
)
def test_equals_captum_with_the_same_steps_and_quadrature(quadrature: str, captum_method: str) -> None:
    model = maxpool_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    baseline = torch.randn_like(x) * 0.3
    target = model(x).argmax(1).tolist()
    ours = relprop.explain(
        model, x, target, method="integrated-gradients", baseline=baseline, steps=7, quadrature=quadrature
    )
    theirs = IntegratedGradients(model).attribute(x, baseline, target, n_steps=7, method=captum_method)
    # Captum rounds its weights (and Riemann nodes) to float32: agreement to ~1e-7, not to float64 precision.
    assert_close_relative(ours.relevance, theirs, 1e-6)


def test_trapezoid_weights_sum_to_one_where_captums_sum_to_m_minus_1_over_m() -> None:
    alphas, weights = quadrature_points("riemann-trapezoid", 5)
    assert alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert weights == [0.125, 0.25, 0.25, 0.25, 0.125]
    model = functional_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours = relprop.explain(model, x, 3, method="integrated-gradients", steps=5, quadrature="riemann-trapezoid")
    theirs = IntegratedGradients(model).attribute(x, target=3, n_steps=5, method="riemann_trapezoid")
    assert_close_relative(ours.relevance * 4 / 5, theirs, 1e-6)


@pytest.mark.parametrize("name", ["functional", "resnet18"])
def test_equals_captum_on_residual_nets(name: str) -> None:
    model = functional_net() if name == "functional" else resnet18()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) if name == "functional" else torch.randn(1, 3, 32, 32).double()
    target = model(x).argmax(1).tolist()
    ours = relprop.explain(model, x, target, method="integrated-gradients", steps=6, batch_size=5)
    theirs = IntegratedGradients(model).attribute(x, target=target, n_steps=6)
    assert_close_relative(ours.relevance, theirs, 1e-6)  # Captum's weights are float32


def test_completeness_gap_is_reported_and_shrinks_with_more_steps() -> None:
    model = maxpool_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    gaps = []
    for steps in (4, 256):
        result = relprop.explain(model, x, method="integrated-gradients", steps=steps, quadrature="riemann-middle")
        with torch.no_grad():
            rows = torch.arange(2)
            expected = model(x)[rows, result.target] - model(torch.zeros_like(x))[rows, result.target]
        assert torch.allclose(result.score, expected)
        assert torch.allclose(result.info["completeness_gap"], expected - result.relevance.flatten(1).sum(1))
        assert torch.allclose(result.ledger.residual, result.info["completeness_gap"])
        gaps.append(result.info["completeness_gap"].abs().max().item())
    assert gaps[1] < gaps[0] / 10
    assert gaps[1] < 1e-2 * result.relevance.abs().flatten(1).sum(1).min().item()


def test_a_linear_model_is_integrated_exactly() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).double().eval()
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    result = relprop.explain(model, x, 1, method="integrated-gradients", baseline="mean", steps=1)
    weight = model[1].weight[1].detach().view(3, 2, 2)
    assert torch.allclose(result.relevance, (x - result.info["baseline"]) * weight)
    assert result.info["completeness_gap"].abs().max() < 1e-12
    assert result.ledger.closes(rtol=1e-10)


def test_baselines() -> None:
    model = maxpool_net()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    zeros = relprop.explain(model, x, method="integrated-gradients", steps=2).info["baseline"]
    assert torch.equal(zeros, torch.zeros_like(x))
    mean = relprop.explain(model, x, method="integrated-gradients", steps=2, baseline="mean").info["baseline"]
    assert torch.allclose(mean, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    blurred = relprop.explain(model, x, method="integrated-gradients", steps=2, baseline="blurred", blur_sigma=1.0)
    b = blurred.info["baseline"]
    assert b.shape == x.shape and x.min() <= b.min() and b.max() <= x.max()
    assert b.std() < x.std()  # smoother than the input
    # A Gaussian blur of a constant image is the image itself (edges are replicated).
    constant = torch.full((1, 3, 8, 8), 0.7, dtype=torch.float64)
    flat = relprop.explain(model, constant, method="integrated-gradients", steps=2, baseline="blurred")
    assert torch.allclose(flat.info["baseline"], constant)
    one = torch.rand(3, 8, 8, dtype=torch.float64)
    given = relprop.explain(model, x, method="integrated-gradients", steps=2, baseline=one).info["baseline"]
    assert torch.equal(given, one.expand_as(x))
    with pytest.raises(relprop.ConfigurationError, match="baseline has shape"):
        relprop.explain(model, x, method="integrated-gradients", baseline=torch.zeros(5, 5))
    with pytest.raises(relprop.ConfigurationError, match="baseline must be one of 'zeros', 'blurred', 'mean'"):
        relprop.explain(model, x, method="integrated-gradients", baseline="black")


def test_batching_does_not_change_the_result() -> None:
    model = functional_net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    one_pass = relprop.explain(model, x, method="integrated-gradients", steps=5, batch_size=64)
    many = relprop.explain(model, x, method="integrated-gradients", steps=5, batch_size=1)
    assert torch.allclose(one_pass.relevance, many.relevance, rtol=0, atol=1e-13)


def test_invalid_parameters() -> None:
    model = maxpool_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(relprop.ConfigurationError, match="steps must be an integer >= 2 for riemann-trapezoid"):
        relprop.explain(model, x, method="integrated-gradients", steps=1, quadrature="riemann-trapezoid")
    with pytest.raises(relprop.ConfigurationError, match="quadrature must be one of gauss-legendre"):
        relprop.explain(model, x, method="integrated-gradients", quadrature="simpson")
    message = r"^method 'integrated-gradients': batch_size must be an integer >= 1, got 0.$"
    with pytest.raises(relprop.ConfigurationError, match=message):
        relprop.explain(model, x, method="integrated-gradients", batch_size=0)
    with pytest.raises(relprop.ConfigurationError, match="'blurred' needs inputs with spatial dimensions"):
        relprop.explain(nn.Linear(4, 2).double(), torch.randn(2, 4).double(), method="integrated-gradients",
                        baseline="blurred")  # fmt: skip
