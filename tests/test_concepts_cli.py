"""relprop concepts: the figure and summary for a digit image, with reference samples from a real store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from relprop.cli import main
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.models import digits_test_set, load_digits_model


@pytest.fixture
def digit_file(tmp_path: Path) -> Path:
    arr = (digits_test_set().images[5, 0].numpy() * 255).round().astype(np.uint8)
    path = tmp_path / "digit.png"
    Image.fromarray(255 - arr, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(path)
    return path


def test_concepts_with_references_from_a_store(tmp_path: Path, digit_file: Path) -> None:
    store = tmp_path / "digits.zarr"
    explain_dataset(load_digits_model(), "digits", store, layers=["features.5"], progress="none", low=0.0, high=1.0)
    out = tmp_path / "c.png"
    args = [
        "concepts",
        str(digit_file),
        "--layer",
        "features.5",
        "--top",
        "3",
        "--store",
        str(store),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, [*args, "--references", "4"])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [len(c["references"]) for c in summary["concepts"]] == [4, 4, 4]
    relevances = [c["relevance"] for c in summary["concepts"]]
    assert relevances == sorted(relevances, reverse=True)
    layer = RelevanceStore(store).layer("features.5")[:]
    for concept in summary["concepts"]:  # references: the store's samples with the most relevance in that channel
        assert concept["references"] == np.argsort(-layer[:, concept["channel"]], kind="stable")[:4].tolist()
    with Image.open(out) as picture:
        assert picture.size[1] > 4 * 96
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr


def test_bad_layer_and_store_without_it(tmp_path: Path, digit_file: Path) -> None:
    result = CliRunner().invoke(
        main, ["concepts", str(digit_file), "--layer", "nope", "--out", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    store = tmp_path / "plain.zarr"
    explain_dataset(load_digits_model(), "digits", store, progress="none", low=0.0, high=1.0)
    result = CliRunner().invoke(
        main,
        ["concepts", str(digit_file), "--layer", "features.5", "--store", str(store), "--out", str(tmp_path / "b.png")],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {store} holds no relevance for layer 'features.5' (it holds: none); explain the data set again with "
        "--layers features.5 to find reference samples for its channels."
    )
    assert not (tmp_path / "b.png").exists()


def test_a_tuned_composite_file(tmp_path: Path, digit_file: Path) -> None:
    """``--composite tuned.json`` explains the concepts with the tuned setting; one with a reference is refused
    in one line (conditional relevance is not available for reference-aware LRP)."""
    import relprop
    from relprop.concepts import channel_relevance
    from relprop.concepts_cli import _read_input
    from relprop.models.loading import load_model

    bundle = load_model("digits")
    images = digits_test_set().images[:8]
    plain = relprop.tune(bundle.model, images, candidates=["lrp:gamma,gamma=0.5"], budget=None)
    plain.save(tmp_path / "t.json")
    plain = tmp_path / "t.json"
    out = tmp_path / "c.png"
    args = ["concepts", str(digit_file), "--layer", "features.5", "--top", "3", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--composite", str(plain)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["tuned"] == "lrp:gamma,gamma=0.5"
    x = _read_input(digit_file, bundle).unsqueeze(0)
    expected = channel_relevance(relprop.Explainer(bundle.model, "gamma", gamma=0.5), x, None, "features.5")
    for concept in summary["concepts"]:
        assert concept["relevance"] == pytest.approx(float(expected.channels[0, concept["channel"]]), rel=1e-5)
    assert [c["channel"] for c in summary["concepts"]] == expected.channels[0].argsort(descending=True)[:3].tolist()

    spec = "lrp:epsilon,epsilon=1e-06,reference=blur"
    with_reference = relprop.tune(bundle.model, images, candidates=[spec], budget=None).save(tmp_path / "r.json")
    refused = CliRunner().invoke(main, [*args, "--composite", str(with_reference), "--force"])
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: concepts cannot use tuned composite {with_reference} ({spec}): it explains relative to the reference "
        "'blur', and conditional relevance per channel is not available for reference-aware LRP; tune without a "
        "reference (relprop tune --reference none) or give a composite name\n"
    )
