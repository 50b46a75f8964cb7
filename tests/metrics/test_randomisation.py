"""Cascading randomisation: model-independent explanations fail the check, LRP passes; the model is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop.metrics import cascading_randomisation, randomisable_layers
from test_invariance import assert_unchanged, snapshot


def test_layers_are_listed_top_down(digits) -> None:
    model, _, _ = digits
    assert randomisable_layers(model) == [
        "classifier.4",
        "classifier.1",
        "features.7",
        "features.6",
        "features.3",
        "features.1",
        "features.0",
    ]


def test_model_independent_explanation_fails_and_lrp_passes(digits, lrp) -> None:
    model, x, labels = digits
    before = snapshot(model)

    def edge_detector(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return inputs - inputs.mean((2, 3), keepdim=True)  # ignores the model entirely

    fixed = cascading_randomisation(model, edge_detector, x, labels)
    torch.testing.assert_close(fixed.similarity["spearman"], torch.ones(7, len(x), dtype=torch.float64))
    torch.testing.assert_close(fixed.similarity["ssim"], torch.ones(7, len(x), dtype=torch.float64))

    def gradient(m: nn.Module, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return relprop.explain(m, inputs, t, composite="lrp-0").info["input_gradient"]

    explained = cascading_randomisation(model, gradient, x, labels)
    assert explained.layers == randomisable_layers(model)
    final = explained.final("spearman")
    assert float(final.mean()) < 0.3 and float(explained.final("ssim").mean()) < 0.3
    # The similarity falls as more layers are randomised.
    assert float(explained.similarity["spearman"][0].mean()) > float(final.mean())
    assert_unchanged(model, before)


def test_z_plus_fails_the_check_as_sixt_et_al_found(digits, lrp) -> None:
    """LRP-z⁺ (α1β0) explanations hardly depend on the upper layers (Sixt et al., 2020)."""
    model, x, labels = digits
    result = cascading_randomisation(model, lrp("alpha1-beta0"), x, labels)
    assert float(result.final("spearman").mean()) > 0.95


def test_seed_makes_it_reproducible_and_keeps_the_callers_random_state(digits, lrp) -> None:
    model, x, labels = digits
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = cascading_randomisation(model, lrp("epsilon"), x, labels, layers=["classifier.4", "classifier.1"], seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = cascading_randomisation(model, lrp("epsilon"), x, labels, layers=["classifier.4", "classifier.1"], seed=5)
    c = cascading_randomisation(model, lrp("epsilon"), x, labels, layers=["classifier.4", "classifier.1"], seed=6)
    torch.testing.assert_close(a.similarity["spearman"], b.similarity["spearman"], rtol=0, atol=0)
    assert not torch.equal(a.similarity["spearman"], c.similarity["spearman"])


def test_errors_name_the_layer_and_similarity(digits, lrp) -> None:
    model, x, labels = digits
    with pytest.raises(
        relprop.ConfigurationError, match=r"layer 'features\.2' is not a module of the model with reset"
    ):
        cascading_randomisation(model, lrp(), x, labels, layers=["features.2"])
    with pytest.raises(relprop.ConfigurationError, match="unknown similarity 'kendall'"):
        cascading_randomisation(model, lrp(), x, labels, similarities=["kendall"])
