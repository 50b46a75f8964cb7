"""composite="auto": a quick documented search on the inputs (with a warning), or the tuned file given."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop.errors import ConfigurationError
from relprop.tuning import AUTO_BUDGET, auto_composite, default_space
from relprop.tuning.resolve import auto_objective


def test_auto_searches_the_inputs_with_a_warning(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    x = digits[0][:16]
    with pytest.warns(UserWarning) as caught:
        result = relprop.explain(digits_model, x, composite="auto")
    message = str(caught[0].message)
    chosen = re.match(r"composite='auto' chose (\S+) by a quick search on the 16 inputs being explained", message)
    assert chosen is not None, message
    assert "pass tuned='tuned.json'" in message
    name, params = relprop.methods.resolve(chosen.group(1))
    assert torch.equal(result.relevance, relprop.explain(digits_model, x, method=name, **params).relevance)


def test_the_quick_search_is_the_documented_one(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = auto_composite(digits_model, digits[0][:16])
    # One default point per composite, in order, as many as the budget allows (a loaded machine
    # measures fewer); half of the inputs held out.
    tried = [r.candidate for r in tuned.results]
    # The blur objective adds the matching blur reference to plain LRP (relprop.tuning.default_references).
    first_points = default_space((0.0, 1.0), references=(None, "blur")).first_points()
    assert tried == first_points[: len(tried)] and len(tried) >= 1
    assert tuned.stopped == ("exhausted" if len(tried) == len(first_points) else "budget")
    assert (tuned.search_size, tuned.held_out_size, tuned.budget_s) == (8, 8, AUTO_BUDGET)
    assert tuned.objective == "pixel-flipping:replacement=blur"


def test_auto_uses_the_tuned_file_without_searching(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    x = digits[0]
    tuned = relprop.tune(
        digits_model, x, candidates=["lrp:gamma,gamma=0.5"], objective="pixel-flipping:replacement=zeros"
    )
    path = tuned.save(tmp_path / "tuned.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no quick search, no warning
        result = relprop.explain(digits_model, x[:1], composite="auto", tuned=str(path))
    assert torch.equal(result.relevance, relprop.explain(digits_model, x[:1], composite="gamma", gamma=0.5).relevance)


def test_auto_errors(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    x = digits[0]
    with pytest.raises(ConfigurationError) as info:
        relprop.Explainer(digits_model, "auto")
    assert str(info.value) == (
        "composite='auto' searches on the inputs, which an Explainer does not have yet; call "
        "relprop.explain(model, inputs, composite='auto'), pass tuned='tuned.json', or pass "
        "relprop.tune(model, inputs) as the composite."
    )
    with pytest.raises(ConfigurationError) as info:
        relprop.explain(digits_model, x[:1], composite="auto")
    assert str(info.value) == (
        "composite='auto' needs a batch of at least 2 inputs to search on and check on, got (1, 1, 8, 8); explain more "
        "inputs at once or pass tuned='tuned.json' (relprop tune)."
    )
    with pytest.raises(ConfigurationError, match=r"^tuned= applies to composite='auto' only; pass the tuned composite"):
        relprop.explain(digits_model, x[:2], composite="gamma", tuned="tuned.json")


def test_the_quick_objective_keeps_pixel_flipping_short() -> None:
    assert auto_objective(torch.zeros(2, 1, 8, 8)) == "pixel-flipping:replacement=blur"
    assert auto_objective(torch.zeros(2, 3, 224, 224)) == "pixel-flipping:replacement=blur,patch_size=28"
    assert auto_objective(torch.zeros(2, 30)) == "pixel-flipping:replacement=dataset-mean"
    assert auto_objective(torch.zeros(2, 10, 384)) == "pixel-flipping:replacement=dataset-mean,regions_per_step=60"
