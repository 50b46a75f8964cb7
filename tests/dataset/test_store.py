"""The store's pieces on their own: downsampling, chunk layout, and the read API's checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from relprop.dataset import RelevanceStore, explain_dataset
from relprop.dataset.lock import StoreLock
from relprop.dataset.store import FAILED, OK, PENDING, downsample, downsampled_shape
from relprop.errors import ConfigurationError, StoreError
from relprop.models import load_digits_model

from .support import BOUNDS


def _pool_reference(r: np.ndarray, size: int) -> np.ndarray:
    """Channel sum, then each block of f×f (zero-padded) summed, written as plain loops in float64."""
    summed = r.astype(np.float64).sum(axis=1)
    n, h, w = summed.shape
    fh, fw = math.ceil(h / size), math.ceil(w / size)
    out = np.zeros((n, math.ceil(h / fh), math.ceil(w / fw)))
    for i in range(h):
        for j in range(w):
            out[:, i // fh, j // fw] += summed[:, i, j]
    return out


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 224, 224), 32), ((1, 1, 8, 8), 32), ((3, 2, 33, 10), 8)])
def test_downsample_sum_pools_and_keeps_the_total(shape: tuple[int, ...], size: int) -> None:
    r = torch.randn(shape, dtype=torch.float32)
    small = downsample(r, size)
    expected = _pool_reference(r.numpy(), size)
    assert small.shape == (shape[0], *downsampled_shape(shape[1:], size)) == expected.shape
    np.testing.assert_allclose(small.numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(small.sum((1, 2)).numpy(), r.sum((1, 2, 3)).numpy(), rtol=1e-4, atol=1e-3)


def test_downsample_of_flat_inputs_pools_the_features() -> None:
    r = torch.arange(10, dtype=torch.float32).reshape(1, 10)
    assert downsample(r, 4).tolist() == [[0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8, 9]]


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "digits.zarr"
    explain_dataset(load_digits_model(), "digits", path, batch_size=16, chunk_size=48, progress="none", **BOUNDS)
    return path


def test_small_samples_are_chunked_by_block_and_files_stay_few(digits_store: Path) -> None:
    group = zarr.open_group(str(digits_store), mode="r")
    assert group["relevance"].shape == (360, 1, 8, 8)
    for name in ("relevance", "status", "ledger", "classes", "error", "output", "downsampled"):
        assert group[name].chunks[0] == 48, name
    files = [p for p in (digits_store / "relevance").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 8  # 360 samples in blocks of 48


def test_large_samples_get_one_chunk_row_each_grouped_in_one_shard_per_block(tmp_path: Path) -> None:
    from relprop.dataset import ArraySource

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.LazyLinear(5)).eval()  # fmt: skip
    x = torch.rand(10, 3, 40, 40)
    model(x[:1])
    store = explain_dataset(model, ArraySource.from_arrays(x), tmp_path / "s.zarr", composite="epsilon",
                            batch_size=2, chunk_size=4, progress="none")  # fmt: skip
    relevance = zarr.open_group(str(store.path), mode="r")["relevance"]
    assert relevance.chunks == (1, 3, 40, 40) and relevance.shards == (4, 3, 40, 40)
    files = [p for p in (store.path / "relevance").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 3  # ceil(10 / 4) shard files
    np.testing.assert_array_equal(store.relevance[7], relprop_explain(model, x[6:8])[1])


def relprop_explain(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    import relprop

    return relprop.explain(model, x, composite="epsilon").relevance.numpy()


def test_metadata_records_model_settings_source_and_versions(digits_store: Path) -> None:
    meta = json.loads((digits_store / "zarr.json").read_text())["attributes"]["relprop"]
    assert meta["format"] == "relprop-dataset/1" and meta["state"] == "complete"
    assert meta["model"]["class"] == "relprop.models.digits.DigitsCNN" and len(meta["model"]["weights_sha256"]) == 64
    assert meta["settings"]["composite"] == "epsilon-gamma-box" and meta["settings"]["params"] == BOUNDS
    assert meta["source"] == {"kind": "digits", "location": "digits", "length": 360,
                              "classes": [str(c) for c in range(10)]}  # fmt: skip
    assert set(meta["versions"]) == {"relprop", "torch", "zarr"} and meta["versions"]["torch"] == torch.__version__
    assert meta["runs"][0]["explained"] == 360 and meta["runs"][0]["outcome"] == "complete"
    assert meta["runs"][0]["cpu_seconds"] > 0


def test_read_api(digits_store: Path) -> None:
    store = RelevanceStore(digits_store)
    assert len(store) == 360 and store.state == "complete" and store.complete
    store.require_complete()
    table = store.table()
    assert set(table) >= {"index", "status", "label", "target", "prediction", "score", "source_path", "error"}
    assert table["source_path"][5] == "digits[5]" and table["error"].dtype.kind == "U"
    threes = store.indices(class_=3)
    assert len(threes) and (table["target"][threes] == 3).all()
    assert set(store.indices(class_=3, by="label")) == set(np.flatnonzero(table["label"] == 3))
    picked = store.relevance[[3, 1, 200]]
    assert picked.shape == (3, 1, 8, 8)
    assert np.array_equal(picked[2], store.relevance[200]) and np.array_equal(picked[1], store.relevance[1])
    pieces = list(store.downsampled.batches(threes, size=7))
    assert np.array_equal(np.concatenate([v for _, v in pieces]), store.downsampled[threes])
    assert store.counts() == {"pending": 0, "ok": 360, "failed": 0} and store.failures() == []
    with pytest.raises(IndexError, match="sample 360 is out of range for relevance with 360 samples"):
        store.relevance[360]
    np.testing.assert_array_equal(store.column("label"), table["label"])
    assert zarr.open_group(str(digits_store), mode="r")["ledger"].attrs["columns"] == [
        "score", "input_relevance", "absorbed", "residual"]  # fmt: skip
    with pytest.raises(ConfigurationError, match="unknown column 'colour'; the columns are source_index, source_path"):
        store.column("colour")


def test_the_source_reopens_from_the_metadata(digits_store: Path) -> None:
    source = RelevanceStore(digits_store).source()
    assert len(source) == 360 and source.load(9).path == "digits[9]"


def test_a_store_with_other_settings_is_refused_unless_told(digits_store: Path) -> None:
    RelevanceStore(digits_store, expect={"composite": "epsilon-gamma-box"}, model=load_digits_model())
    with pytest.raises(ConfigurationError) as info:
        RelevanceStore(digits_store, expect={"composite": "epsilon"})
    assert str(info.value) == (
        f'store {digits_store} was written with composite="epsilon-gamma-box" (this run: "epsilon"); open it with '
        "matching settings or strict=False"
    )
    other = load_digits_model()
    with torch.no_grad():
        other.classifier[4].bias.add_(1.0)
    with pytest.raises(ConfigurationError, match=r"was written with weights_sha256=\"[0-9a-f]{12}"):
        RelevanceStore(digits_store, model=other)
    with pytest.warns(UserWarning, match="was written with composite="):
        RelevanceStore(digits_store, expect={"composite": "epsilon"}, strict=False)
    with pytest.raises(ConfigurationError, match="unknown store setting 'colour'; the settings are method, composite"):
        RelevanceStore(digits_store, expect={"colour": "red"})


def test_an_unknown_layer_names_the_stored_ones(digits_store: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"holds no relevance for layer 'features.3' \(stored layers: none\)"):
        RelevanceStore(digits_store).layer("features.3")


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"^{tmp_path} is not a relevance store"):
        RelevanceStore(tmp_path)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="is a Zarr group but not a relprop relevance store"):
        RelevanceStore(tmp_path / "plain.zarr")


def test_state_while_written_and_after_an_interrupted_run(digits_store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(digits_store, copy)
    lock = StoreLock(copy)
    lock.acquire()
    try:
        store = RelevanceStore(copy)
        assert store.state == "writing"
        with pytest.raises(StoreError, match=rf"^store {copy} is still being written \(pid \d+ on .*\); wait"):
            store.require_complete()
    finally:
        lock.release()
    status = zarr.open_group(str(copy), mode="r+")["status"]
    status[48:96] = PENDING
    store = RelevanceStore(copy)
    assert store.state == "interrupted" and store.counts()["pending"] == 48
    with pytest.raises(StoreError, match=r"is incomplete \(312 of 360 samples; the run that wrote it stopped\)"):
        store.require_complete()
    assert (OK, FAILED) == (1, 2)
