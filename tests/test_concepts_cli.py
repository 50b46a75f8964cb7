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
