"""analyze(store, ...): class and layer selection and the store's bad states, through the store's read API.

``MemoryStore`` implements the read API of ``relprop.dataset.RelevanceStore`` that SpRAy uses
(``relevance``, ``layer``, ``layers``, ``indices``, ``table``, ``complete``, ``path``) over arrays;
the same tests run against the real store once it exists (see ``open_store``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relprop.errors import AnalysisError
from relprop.spray import ArrayStore, analyze, open_store

from .test_analysis import planted


class MemoryStore:
    def __init__(self, relevance: np.ndarray, labels: np.ndarray, layers: dict[str, np.ndarray], complete: bool):
        self.path = "memory.zarr"
        self.relevance = relevance
        self._labels = labels
        self._layers = layers
        self.layers = list(layers)
        self.complete = complete
        self.reads: list[str] = []

    def indices(self, class_: int | None = None) -> np.ndarray:
        return np.arange(len(self._labels)) if class_ is None else np.flatnonzero(self._labels == class_)

    def table(self) -> dict[str, np.ndarray]:
        return {"labels": self._labels}

    def layer(self, name: str) -> np.ndarray:
        self.reads.append(name)
        return self._layers[name]


def store_with_two_classes(complete: bool = True) -> tuple[MemoryStore, np.ndarray]:
    heatmaps, marked = planted(160, seed=4)
    noise = np.random.default_rng(5).normal(size=(80, 1, 16, 16)).astype(np.float32)
    relevance = np.concatenate([heatmaps[:80], noise, heatmaps[80:]])  # class 7 at 0–79 and 160–239
    labels = np.array([7] * 80 + [2] * 80 + [7] * 80)
    channels = np.random.default_rng(6).random((240, 8)).astype(np.float32)
    store = MemoryStore(relevance, labels, {"features.3": channels}, complete)
    ids = np.concatenate([np.arange(80), np.arange(160, 240)])
    return store, ids[marked]


def test_a_class_is_analysed_with_its_store_indices() -> None:
    store, marked_ids = store_with_two_classes()
    result = analyze(store, class_=7, embedding="none")
    assert sorted(result.indices.tolist()) == list(range(80)) + list(range(160, 240))
    assert sorted(result.top.members.tolist()) == sorted(marked_ids.tolist())
    assert result.params["class"] == 7 and result.params["layer"] is None


def test_a_layer_is_analysed_per_channel() -> None:
    store, _ = store_with_two_classes()
    result = analyze(store, class_=2, layer="features.3", clusters=2, embedding="none")
    assert store.reads == ["features.3"]
    assert result.map_shape == (8,) and result.params["view"] == "channels"
    assert sorted(result.indices.tolist()) == list(range(80, 160))


def test_missing_layer() -> None:
    store, _ = store_with_two_classes()
    with pytest.raises(
        AnalysisError,
        match=r"^memory\.zarr holds no relevance for layer 'layer4' \(it holds: features\.3\); explain the data set "
        r"again with --layers layer4\.$",
    ):
        analyze(store, layer="layer4")


def test_empty_class() -> None:
    store, _ = store_with_two_classes()
    with pytest.raises(
        AnalysisError,
        match=r"^class 5 has no explained sample in memory\.zarr \(classes present: 2, 7\); choose another --class\.$",
    ):
        analyze(store, class_=5)


def test_class_with_fewer_samples_than_clusters() -> None:
    store, _ = store_with_two_classes()
    store._labels = store._labels.copy()
    store._labels[:3] = 9
    with pytest.raises(
        AnalysisError,
        match=r"^class 9 of memory\.zarr has 3 heatmaps, too few for 4 clusters \(at least 4 are needed\); analyse",
    ):
        analyze(store, class_=9, clusters=4)


def test_store_still_being_written() -> None:
    store, _ = store_with_two_classes(complete=False)
    with pytest.raises(AnalysisError, match=r"^memory\.zarr is still being written \(or its run was interrupted\);"):
        analyze(store, class_=7)
    result = analyze(store, class_=7, allow_incomplete=True, embedding="none")
    assert len(result.indices) == 160


def test_array_files(tmp_path: Path) -> None:
    heatmaps, marked = planted(120, seed=8)
    labels = np.where(np.arange(120) < 60, 0, 1)
    np.savez(tmp_path / "h.npz", relevance=heatmaps, labels=labels)
    np.save(tmp_path / "h.npy", heatmaps)
    by_class = analyze(open_store(tmp_path / "h.npz"), class_=1, embedding="none", clusters=2)
    assert sorted(by_class.indices.tolist()) == list(range(60, 120))
    whole = analyze(open_store(tmp_path / "h.npy"), embedding="none")
    assert np.array_equal(np.isin(np.arange(120), whole.top.members), marked)
    with pytest.raises(AnalysisError, match=r"h\.npy has no 'labels' array, so it cannot select class 1; omit"):
        analyze(ArrayStore(tmp_path / "h.npy"), class_=1)
    np.savez(tmp_path / "bad.npz", heat=heatmaps)
    with pytest.raises(AnalysisError, match=r"bad\.npz has no array 'relevance' \(it has: heat\); save the heatmaps"):
        open_store(tmp_path / "bad.npz")
    with pytest.raises(AnalysisError, match=r"missing\.npy does not exist; give a relevance store folder"):
        open_store(tmp_path / "missing.npy")
