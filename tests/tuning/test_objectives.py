"""Objectives: specs, weights, and the errors for objectives that cannot be computed on the data."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop.errors import ConfigurationError
from relprop.evaluate import EvaluationData
from relprop.tuning import Context, Localisation, PixelFlipping, TokenDeletion, Weighted, as_objective, objective_names

from .conftest import QUICK


def test_registry_and_specs_round_trip() -> None:
    assert objective_names() == ["pixel-flipping", "localisation", "token-deletion"]
    for spec in [
        "pixel-flipping:replacement=blur",
        "pixel-flipping:replacement=dataset-mean,patch_size=2,regions_per_step=3,score=probability",
        "localisation",
        "localisation:measure=rank",
        "localisation:mode=absolute",
        "token-deletion",
        "token-deletion:fraction=0.25",
    ]:
        assert as_objective(spec).spec == spec
    assert isinstance(as_objective("abpc:replacement=zeros"), PixelFlipping)
    assert isinstance(as_objective("localization"), Localisation)
    weighted = as_objective(["pixel-flipping:replacement=zeros", "token-deletion,weight=0.5"])
    assert isinstance(weighted, Weighted)
    assert weighted.spec == "pixel-flipping:replacement=zeros,weight=1; token-deletion,weight=0.5"
    assert weighted.title == "1 × ABPC (zeros) ↑ + 0.5 × deletion AUC ↓"
    assert as_objective({"localisation": 2}).spec == "localisation,weight=2"
    assert TokenDeletion().higher_is_better is False


def test_evaluate_options_name_the_column_relprop_evaluate_prints() -> None:
    context = Context(target=3, seed=2, bounds=(0.0, 1.0), batch_size=64)
    assert as_objective("pixel-flipping:replacement=inpaint,patch_size=2").evaluate_options(context) == [
        "--metrics", "selectivity", "--replacement", "inpaint", "--patch-size", "2",
        "--seed", "2", "--batch-size", "64", "--bounds", "0", "1", "--target", "3",
    ]  # fmt: skip
    assert as_objective("localisation").evaluate_options(Context()) == [
        "--metrics", "localisation", "--seed", "0", "--batch-size", "128",
    ]  # fmt: skip
    assert as_objective("localisation:mode=signed").evaluate_options(Context()) is None
    assert as_objective("token-deletion").evaluate_options(Context()) is None
    assert PixelFlipping(lambda x, removed: x).evaluate_options(Context()) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown objective 'nope'; choose one of: pixel-flipping, localisation, token-deletion."),
        (
            "pixel-flipping:replacement=black",
            "objective pixel-flipping: unknown replacement 'black'; choose one of zeros, mean, blur, uniform, inpaint, "
            "dataset-mean, a number or a function.",
        ),
        ("pixel-flipping:patch_size=0", "objective pixel-flipping: patch_size must be a positive integer, got 0."),
        (
            "pixel-flipping:colour=red",
            "objective 'pixel-flipping:colour=red': pixel-flipping takes replacement, patch_size, regions_per_step, "
            "score, weight; got colour.",
        ),
        ("localisation:measure=iou", "objective localisation: measure must be 'mass' or 'rank', got 'iou'."),
        ("localisation,weight=-1", "objective 'localisation': weight must be a positive number, got -1."),
        ("pixel-flipping:replacement", "objective 'pixel-flipping:replacement': item 'replacement' is not key=value."),
    ],
)
def test_bad_objective_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        as_objective([spec] if "weight" in spec else spec)
    assert str(info.value) == message


def test_masks_of_the_wrong_shape_are_refused_before_any_search(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    x, _ = digits
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(digits_model, x, objective="localisation", candidates=QUICK, masks=torch.ones(24, 7, 7))
    assert str(info.value) == (
        "objective 'localisation': masks of shape (24, 7, 7) do not fit inputs of shape (24, 1, 8, 8); pass one mask "
        "per input, shaped like it or (N, H, W) / (N, 1, H, W)."
    )
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(digits_model, x, objective="localisation", candidates=QUICK)
    assert str(info.value).startswith("objective 'localisation' needs ground-truth masks, and the data has none;")
    with pytest.raises(ConfigurationError, match=r"^data 'inputs': 24 images, 24 labels and 5 masks; give one"):
        relprop.tune(digits_model, x, objective="localisation", candidates=QUICK, masks=torch.ones(5, 8, 8))


def test_objectives_that_do_not_fit_the_data_are_refused(digits_model: nn.Module) -> None:
    features = torch.rand(10, 30)
    mlp = nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(mlp, features, objective="pixel-flipping:replacement=blur", candidates=["epsilon"])
    assert str(info.value) == (
        "objective 'pixel-flipping:replacement=blur' needs images (N, C, H, W), got inputs of shape (10, 30); use "
        "replacement zeros, dataset-mean or uniform with patch_size=1."
    )
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(mlp, features, objective="token-deletion", candidates=["epsilon"])
    assert str(info.value) == (
        "objective 'token-deletion' needs sentence pairs (relprop.tuning.SentencePairs), got EvaluationData; use "
        "pixel-flipping or localisation for tensor inputs."
    )


def test_feature_vectors_are_tuned_with_element_replacements() -> None:
    torch.manual_seed(0)
    features = torch.rand(20, 6)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    tuned = relprop.tune(
        mlp, features, objective="pixel-flipping:replacement=dataset-mean", candidates=["epsilon", "lrp-0"]
    )
    assert len(tuned.results) == 2 and all(r.held_out.n == 10 for r in tuned.results)
    data = EvaluationData(features, torch.zeros(20, dtype=torch.long))
    assert PixelFlipping("zeros").scores(mlp, data, "lrp:lrp-0", Context()).shape == (20,)
