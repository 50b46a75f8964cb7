"""Relevance maximisation over a real relevance store (the embedded digits model, features.5 per channel),
reference patches, explain_concepts and its figure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import relprop
from relprop.concepts import (
    concept_figure,
    conditional_heatmaps,
    explain_concepts,
    reference_patches,
    reference_samples,
    store_inputs,
)
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.dataset.lock import StoreLock
from relprop.errors import AnalysisError
from relprop.models import digits_test_set, load_digits_model

BOUNDS = {"low": 0.0, "high": 1.0}
LAYER = "features.5"  # 32 channels of 4 × 4


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("concepts") / "digits.zarr"
    explain_dataset(load_digits_model(), "digits", path, layers=[LAYER], batch_size=64, progress="none", **BOUNDS)
    return path


@pytest.fixture(scope="module")
def explainer() -> relprop.Explainer:
    return relprop.Explainer(load_digits_model(), "epsilon-gamma-box", **BOUNDS)


def test_reference_samples_are_where_each_channel_received_the_most_relevance(
    digits_store: Path, explainer: relprop.Explainer
) -> None:
    images = digits_test_set().images
    independent = explainer(images, None, layers=[LAYER], layer_reduce="channels").layers[LAYER].double().numpy()
    found = reference_samples(RelevanceStore(digits_store), LAYER, [0, 7, 31], count=5, batch_size=100)
    for channel, (indices, values) in found.items():
        order = np.argsort(-independent[:, channel], kind="stable")[:5]
        assert indices.tolist() == order.tolist(), channel
        np.testing.assert_allclose(values, independent[order, channel], rtol=1e-5, atol=1e-7)
    everything = reference_samples(RelevanceStore(digits_store), LAYER, count=2)
    assert sorted(everything) == list(range(32))
    sevens = reference_samples(RelevanceStore(digits_store), LAYER, [3], count=4, class_=7)[3][0]
    assert set(RelevanceStore(digits_store).column("target")[sevens]) == {7}


def test_reference_patches_cut_the_window_with_the_most_conditional_relevance(
    digits_store: Path, explainer: relprop.Explainer
) -> None:
    store = RelevanceStore(digits_store)
    indices = reference_samples(store, LAYER, [12], count=3)[12][0]
    inputs = store_inputs(store, indices)
    torch.testing.assert_close(inputs, digits_test_set().images[torch.as_tensor(indices)])
    targets = torch.as_tensor(store.column("target")[indices])
    patches = reference_patches(explainer, inputs, targets, indices, LAYER, 12, fraction=0.5)
    maps = conditional_heatmaps(explainer, inputs, targets, LAYER, [12])[:, 0, 0].double()
    for k, ref in enumerate(patches):
        top, left, height, width = ref.box
        assert (height, width) == (4, 4) and ref.index == indices[k]
        sums = {(i, j): float(maps[k, i : i + 4, j : j + 4].clamp(min=0).sum()) for i in range(5) for j in range(5)}
        assert sums[(top, left)] == pytest.approx(max(sums.values()), rel=1e-12)
        torch.testing.assert_close(ref.patch, inputs[k, :, top : top + 4, left : left + 4])


def test_explain_concepts_and_its_figure(digits_store: Path, explainer: relprop.Explainer, tmp_path: Path) -> None:
    x = digits_test_set().images[:1]
    result = explain_concepts(explainer, x, None, LAYER, top=3, store=RelevanceStore(digits_store), references=4)
    assert [c.channel for c in result.concepts] == torch.topk(result.channel_relevance, 3).indices.tolist()
    assert all(len(c.references) == 4 for c in result.concepts)
    picture = concept_figure(result)
    assert picture.size[0] > 5 * 96 and picture.size[1] > 4 * 96
    picture.save(tmp_path / "c.png")


def test_a_store_without_the_layer_or_still_written(digits_store: Path, tmp_path: Path) -> None:
    with pytest.raises(
        AnalysisError,
        match=rf"^{digits_store} holds no relevance for layer 'features.2' \(it holds: features\.5\); explain the data "
        r"set again with --layers features\.2 to find reference samples for its channels\.$",
    ):
        reference_samples(RelevanceStore(digits_store), "features.2")
    with pytest.raises(AnalysisError, match=r"^channel 32 does not exist; features\.5 has channels 0 to 31\.$"):
        reference_samples(RelevanceStore(digits_store), LAYER, [32])
    with pytest.raises(AnalysisError, match=rf"^{digits_store} holds no explained sample of class 11; nothing"):
        reference_samples(RelevanceStore(digits_store), LAYER, class_=11)
    copy = tmp_path / "copy.zarr"
    shutil.copytree(digits_store, copy)
    lock = StoreLock(copy)
    lock.acquire()
    try:
        with pytest.raises(AnalysisError, match=rf"^store {copy} is still being written \(pid \d+ on .*\); wait"):
            reference_samples(RelevanceStore(copy), LAYER)
    finally:
        lock.release()
