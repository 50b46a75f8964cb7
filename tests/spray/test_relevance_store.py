"""analyze(store, ...) and ``relprop spray STORE`` on a real RelevanceStore written by explain_dataset.

The reference is independent of the store: the same digits explained with ``relprop.explain`` in
one call (input relevance, and per-channel relevance at ``features.5`` by ``layers=``), reduced
as the store documents (channel sum, sum-pooling) and analysed with ``analyze_heatmaps``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import relprop
from relprop.cli import main
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.dataset.lock import StoreLock
from relprop.errors import AnalysisError
from relprop.models import digits_test_set, load_digits_model
from relprop.spray import analyze, analyze_heatmaps, open_store

BOUNDS = {"low": 0.0, "high": 1.0}
LAYER = "features.5"  # a max-pool output: 32 channels of 4 × 4


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spray") / "digits.zarr"
    explain_dataset(load_digits_model(), "digits", path, target="label", layers=[LAYER], layer_reduce="channels",
                    batch_size=64, progress="none", **BOUNDS)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    test_set = digits_test_set()
    labels = test_set.labels.numpy()
    result = relprop.explain(load_digits_model(), test_set.images, torch.as_tensor(labels), layers=[LAYER],
                             layer_reduce="channels", **BOUNDS)  # fmt: skip
    return {"labels": labels, "relevance": result.relevance.numpy(), LAYER: result.layers[LAYER].numpy()}


def same_analysis(got: object, want: object) -> None:
    """Same eigenvalues (float32 store vs float32 reference: to 1e-4) and the same partition up to labels."""
    from sklearn.metrics import adjusted_rand_score

    np.testing.assert_allclose(got.eigenvalues, want.eigenvalues, atol=1e-4)  # type: ignore[attr-defined]
    assert got.n_clusters == want.n_clusters  # type: ignore[attr-defined]
    assert adjusted_rand_score(got.labels, want.labels) == 1.0  # type: ignore[attr-defined]


def test_input_relevance_of_a_class_matches_an_independent_explanation(
    digits_store: Path, reference: dict[str, np.ndarray]
) -> None:
    store = open_store(digits_store)
    assert isinstance(store, RelevanceStore)
    got = analyze(store, class_=3, embedding="none")
    threes = np.flatnonzero(reference["labels"] == 3)
    assert got.indices.tolist() == threes.tolist()
    # The store's downsampled copy of an 8 × 8 digit is its channel sum (nothing to pool).
    maps = reference["relevance"][threes].sum(1)
    want = analyze_heatmaps(maps, indices=threes, embedding="none")
    same_analysis(got, want)
    assert got.params["class"] == 3 and got.params["store"] == str(digits_store)


def test_per_channel_relevance_of_an_inner_layer(digits_store: Path, reference: dict[str, np.ndarray]) -> None:
    got = analyze(open_store(digits_store), class_=7, layer=LAYER, embedding="none")
    sevens = np.flatnonzero(reference["labels"] == 7)
    assert got.map_shape == (32,) and got.params["view"] == "channels" and got.params["layer"] == LAYER
    same_analysis(got, analyze_heatmaps(reference[LAYER][sevens], view="channels", indices=sevens, embedding="none"))


def test_bad_requests_on_a_real_store(digits_store: Path) -> None:
    store = open_store(digits_store)
    with pytest.raises(
        AnalysisError,
        match=rf"^{digits_store} holds no relevance for layer 'features.2' \(it holds: features\.5\); explain the "
        r"data set again with --layers features\.2\.$",
    ):
        analyze(store, layer="features.2")
    with pytest.raises(
        AnalysisError,
        match=rf"^class 12 has no explained sample in {digits_store} \(classes present: 0, 1, 2, 3, 4, 5, 6, 7, 8, "
        r"9\); choose another --class\.$",
    ):
        analyze(store, class_=12)
    threes = len(store.indices(class_=3))
    with pytest.raises(
        AnalysisError,
        match=rf"^class 3 of {digits_store} has {threes} heatmaps, too few for 50 clusters \(at least 50 are needed\)",
    ):
        analyze(store, class_=3, clusters=50)


def test_a_store_still_being_written_is_refused(digits_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(digits_store, copy)
    lock = StoreLock(copy)
    lock.acquire()
    try:
        with pytest.raises(
            AnalysisError,
            match=rf"^store {copy} is still being written \(pid \d+ on .*\); wait for the run to finish; or analyse "
            r"what it holds so far \(allow_incomplete=True, --allow-incomplete\)\.$",
        ):
            analyze(RelevanceStore(copy), class_=3)
        result = CliRunner().invoke(main, ["spray", str(copy), "--class", "3", "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: store {copy} is still being written")
        assert "Traceback" not in result.output
        partial = analyze(RelevanceStore(copy), class_=3, allow_incomplete=True, embedding="none")
        assert len(partial.indices) == len(RelevanceStore(copy).indices(class_=3))
    finally:
        lock.release()


def test_the_command_on_a_real_store(digits_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["spray", str(digits_store), "--class", "7", "--layer", LAYER, "--embedding", "none", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    clusters = json.loads((out / "clusters.json").read_text())
    sevens = RelevanceStore(digits_store).indices(class_=7)
    assert sorted(clusters["samples"]["index"]) == sevens.tolist()
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    missing = CliRunner().invoke(main, ["spray", str(digits_store), "--layer", "nope", "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == (
        f"error: {digits_store} holds no relevance for layer 'nope' (it holds: features.5); explain the data set "
        "again with --layers nope."
    )
