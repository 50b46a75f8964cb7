"""Quantus 0.6.0 as an oracle: same inputs, same settings, same numbers.

Every metric relprop shares with Quantus is computed by both on the embedded digits model
(float32, real held-out digits) with LRP explanations or random maps, and compared to a stated
tolerance. Where the definitions differ on purpose, the test says how and checks the relation:

* Pixel flipping / region perturbation: Quantus' curve starts after the first step and
  region perturbation reports ``f(x) - f(x_k)``; relprop keeps ``f(x)`` as column 0, so
  ``curve[:, 1:]`` (resp. ``curve[:, :1] - curve[:, 1:]``) must equal Quantus. Quantus' AUC is
  ``trapz(curve[1:], dx=1)``; relprop's is over the fraction removed, starting at ``f(x)``.
  (Quantus' own AUC option calls ``np.trapz``, gone in NumPy 2; the test applies its definition.)
  Quantus' ``"mean"``/``"black"`` baselines are recomputed from the already perturbed image at
  every step; relprop's ``"mean"`` is the original image's, so we compare with a constant (0).
* Sparseness adds 1e-7 to every |R| (normalised by the batch maximum) before the Gini index,
  which scales Gini by ``S / (S + 1e-7 D)``: at most ``1e-7 D`` relative (6.4e-6 for 64 pixels).
* Complexity adds 1e-12 inside the logarithm: the entropy differs by at most ``D · 1e-12``.
* MPRT (randomisation): Quantus re-seeds every layer with ``seed + 1`` before ``reset_parameters``;
  relprop with ``seed = quantus_seed + 1`` randomises identically. Quantus' SSIM receives the
  maps flattened to rows, i.e. SSIM over 1-D windows of the row-major pixel sequence; relprop
  computes SSIM on the 2-D map (what the metric means for images), checked against
  ``quantus.functions.similarity_func.ssim`` called on single 2-D maps instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

import relprop
from relprop import metrics

from helpers import require

quantus = require("quantus")

N = 16


@pytest.fixture(scope="module")
def case(digits) -> dict[str, object]:
    model, x, labels = digits
    x, labels = x[:N], labels[:N]
    lrp = relprop.explain(model, x, labels, composite="epsilon-gamma-box", low=0.0, high=1.0).relevance
    random = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return {"model": model, "x": x, "y": labels, "relevances": {"lrp": lrp, "random": random}}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
    """relprop's LRP as a Quantus explain_func."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    target = torch.as_tensor(np.asarray(targets)).long()
    relevance = relprop.explain(model, x, target, composite="epsilon", epsilon=0.25).relevance
    return relevance.numpy()


def ours_explain(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return relprop.explain(model, inputs, target, composite="epsilon", epsilon=0.25).relevance


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


@pytest.mark.parametrize("which", ["lrp", "random"])
@pytest.mark.parametrize("softmax", [True, False])
def test_pixel_flipping(case, which: str, softmax: bool) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    relevance = case["relevances"][which]
    metric = quantus.PixelFlipping(features_in_step=2, abs=False, normalise=False, perturb_baseline=0.0)
    expected = np.array(metric(model=model, x_batch=np_(x), y_batch=np_(y), a_batch=np_(relevance), softmax=softmax))
    curve = metrics.perturbation_curve(
        model, x, relevance, y, regions_per_step=2, score="probability" if softmax else "logit"
    )
    # Same float32 forward passes on the same perturbed inputs: agreement to float32 rounding.
    np.testing.assert_allclose(curve.scores[:, 1:].numpy(), expected, rtol=1e-6, atol=1e-6)
    # Quantus' AUC (return_auc_per_sample) is trapz(curve[1:], dx=1), but it calls np.trapz, which
    # NumPy 2 removed; apply that definition to its curve. relprop's AUC runs over the fraction
    # removed (dx = 1/steps) and starts at the unperturbed score.
    steps = curve.scores.shape[1] - 1
    quantus_auc = np.trapezoid(expected, dx=1, axis=1)
    first = (curve.scores[:, 0] + curve.scores[:, 1]).numpy() / 2
    np.testing.assert_allclose(curve.auc.numpy(), (quantus_auc + first) / steps, rtol=1e-5)


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("patch_size", [2, 4])
def test_region_perturbation_and_aopc(case, order: str, patch_size: int) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    relevance = case["relevances"]["lrp"]
    regions = (8 // patch_size) ** 2
    metric = quantus.RegionPerturbation(
        patch_size=patch_size,
        order=order,
        regions_evaluation=regions,
        abs=False,
        normalise=False,
        perturb_baseline=0.0,
    )
    drops = np.array(metric(model=model, x_batch=np_(x), y_batch=np_(y), a_batch=np_(relevance), softmax=False))
    curve = metrics.perturbation_curve(model, x, relevance, y, order=order, patch_size=patch_size)
    np.testing.assert_allclose((curve.scores[:, :1] - curve.scores[:, 1:]).numpy(), drops, rtol=1e-5, atol=1e-5)
    # AOPC (Samek et al.) averages the drops over k = 0..L, the k = 0 drop being 0.
    np.testing.assert_allclose(curve.aopc.numpy(), drops.sum(1) / (regions + 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["lrp", "random"])
def test_relevance_mass_and_rank_accuracy(case, which: str) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    relevance = case["relevances"][which]
    masks = np.zeros((N, 1, 8, 8), dtype=np.float32)
    masks[:, :, 2:6, 1:5] = 1.0  # the centre-left of the digit
    masks[: N // 2, :, 0:2, 6:8] = 1.0  # and a corner for half of them
    kwargs = {"model": model, "x_batch": np_(x), "y_batch": np_(y), "a_batch": np_(relevance), "s_batch": masks}
    signed = quantus.RelevanceMassAccuracy(abs=False, normalise=False)(**kwargs)
    absolute = quantus.RelevanceMassAccuracy(abs=True, normalise=False)(**kwargs)
    rank = quantus.RelevanceRankAccuracy(abs=False, normalise=False)(**kwargs)
    mask = torch.from_numpy(masks)
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(relevance, mask, mode="signed"), signed, rtol=1e-5)
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(relevance, mask, mode="absolute"), absolute, rtol=1e-5)
    # Rank accuracy depends on the ordering alone; the maps have no ties among the top K.
    np.testing.assert_allclose(metrics.relevance_rank_accuracy(relevance, mask), rank, rtol=0, atol=1e-12)


@pytest.mark.parametrize("which", ["lrp", "random"])
def test_sparseness_and_complexity(case, which: str) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    relevance = case["relevances"][which]
    kwargs = {"model": model, "x_batch": np_(x), "y_batch": np_(y), "a_batch": np_(relevance)}
    sparseness = np.array(quantus.Sparseness()(**kwargs))  # defaults: |R|, normalised by the maximum
    complexity = np.array(quantus.Complexity()(**kwargs))
    gini = metrics.gini(relevance).numpy()
    # Quantus' +1e-7 offset (documented above) bounds the difference by 1e-7 · D relative.
    np.testing.assert_allclose(gini, sparseness, rtol=64e-7, atol=0)
    assert np.abs(gini - sparseness).max() > 0  # the offset is real: this is not an identity
    np.testing.assert_allclose(metrics.entropy(relevance).numpy(), complexity, rtol=0, atol=64e-12 + 1e-6)


def test_local_lipschitz_estimate(case) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    samples = 4
    noise = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(2)) * 0.05
    calls = iter(range(samples))

    def same_noise(arr: np.ndarray, indices: np.ndarray, **_: object) -> np.ndarray:
        # Quantus' perturb_func gets the flattened batch; hand it the noise relprop uses.
        return arr + noise[next(calls)].reshape(arr.shape[0], -1).numpy()

    metric = quantus.LocalLipschitzEstimate(
        nr_samples=samples,
        abs=False,
        normalise=False,
        perturb_func=same_noise,
        return_nan_when_prediction_changes=False,
    )
    expected = np.array(
        metric(
            model=model,
            x_batch=np_(x),
            y_batch=np_(y),
            a_batch=np_(ours_explain(model, x, y)),
            explain_func=quantus_explain,
        )
    )
    result = metrics.continuity(model, ours_explain, x, y, noise=noise, keep_prediction=False)
    # float32 inputs: Quantus adds the noise in float64, relprop in float32 (as the model runs).
    np.testing.assert_allclose(result.lipschitz.numpy(), expected, rtol=1e-5)


def test_cascading_randomisation_spearman(case) -> None:
    model, x, y = case["model"], case["x"], case["y"]
    metric = quantus.MPRT(layer_order="top_down", seed=42, similarity_func=quantus.similarity_func.correlation_spearman)
    expected = metric(model=model, x_batch=np_(x), y_batch=np_(y), a_batch=None, explain_func=quantus_explain)
    result = metrics.cascading_randomisation(model, ours_explain, x, y, seed=43, similarities=["spearman"])
    layers = [k for k in expected if k != "original"]
    assert layers == result.layers
    for stage, layer in enumerate(layers):
        np.testing.assert_allclose(result.similarity["spearman"][stage].numpy(), expected[layer], rtol=0, atol=1e-9)


def test_ssim_on_two_dimensional_maps(case) -> None:
    a = case["relevances"]["lrp"].double()
    b = a + 0.1 * case["relevances"]["random"].double()
    ours = metrics.ssim(a, b)
    for i in range(N):
        expected = quantus.similarity_func.ssim(a[i, 0].numpy(), b[i, 0].numpy())
        assert float(ours[i]) == pytest.approx(expected, abs=1e-12)
