"""explain_dataset with the local executor: the store holds exactly what relprop.explain returns, bad
inputs are one clear line each, and nothing already written is lost."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

import relprop
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.dataset.lock import LOCK_FILE, StoreLock
from relprop.errors import ConfigurationError, StoreError
from relprop.models import digits_test_set, load_digits_model
from relprop.models.loading import load_model

from .slowdata import InterruptAt, SlowDigits
from .support import BOUNDS, assert_same_store, assert_store_equals, digits_reference, reference, store_arrays


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return digits_reference(batch_size=16)


def _run(path: Path, source: object = "digits", **kwargs: object) -> RelevanceStore:
    options = {"batch_size": 16, "chunk_size": 48, "progress": "none", **BOUNDS, **kwargs}
    return explain_dataset(load_digits_model(), source, path, **options)  # type: ignore[arg-type]


def test_store_equals_relprop_explain_bit_for_bit(tmp_path: Path, expected: dict[str, np.ndarray]) -> None:
    store = _run(tmp_path / "s.zarr")
    assert_store_equals(store, expected)
    table = store.table()
    test = digits_test_set()
    np.testing.assert_array_equal(table["label"], test.labels.numpy())
    np.testing.assert_array_equal(table["prediction"], expected["output"].argmax(1))
    np.testing.assert_array_equal(table["target"], table["prediction"])  # the predicted class is explained
    assert store.state == "complete" and not (tmp_path / "s.zarr" / LOCK_FILE).read_text()


def test_float16_store_holds_the_rounded_relevance(tmp_path: Path, expected: dict[str, np.ndarray]) -> None:
    store = _run(tmp_path / "half.zarr", dtype="float16")
    assert store.relevance.dtype == np.float16
    np.testing.assert_array_equal(store.relevance[:], expected["relevance"].astype(np.float16))
    np.testing.assert_array_equal(store.downsampled[:], expected["downsampled"])  # analysis copy from float32


def test_other_method_label_target_and_stored_inputs(tmp_path: Path) -> None:
    model, test = load_digits_model(), digits_test_set()
    store = explain_dataset(model, "digits", tmp_path / "g.zarr", method="gradient-x-input", target="label",
                            batch_size=40, chunk_size=120, store_inputs=True, progress="none")  # fmt: skip
    want = reference(model, test.images, 40, method="gradient-x-input", target=test.labels)
    np.testing.assert_array_equal(store.relevance[:], want["relevance"])
    np.testing.assert_array_equal(store.table()["target"], test.labels.numpy())
    assert store.inputs is not None and np.array_equal(store.inputs[:], test.images.numpy())
    assert store.settings["method"] == "gradient-x-input" and store.settings["composite"] is None


def _folder_with_broken_images(root: Path) -> tuple[list[Path], list[Path]]:
    test = digits_test_set()
    good, broken = [], []
    for k in range(12):
        path = root / str(int(test.labels[k])) / f"digit{k:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((test.images[k, 0].numpy() * 255).astype(np.uint8), mode="L").resize((32, 32)).save(path)
        good.append(path)
    (root / "3" / "truncated.png").write_bytes(good[0].read_bytes()[:60])
    (root / "5" / "text.png").write_text("this is not a picture")
    broken += [root / "3" / "truncated.png", root / "5" / "text.png"]
    return good, broken


def test_broken_images_are_recorded_as_failed_and_the_run_goes_on(tmp_path: Path) -> None:
    _folder_with_broken_images(tmp_path / "images")
    bundle = load_model("digits")
    out = io.StringIO()
    store = explain_dataset(bundle.model, tmp_path / "images", tmp_path / "s.zarr", batch_size=4, chunk_size=8,
                            preprocess=bundle.preprocess, progress="lines", stream=out, **BOUNDS)  # fmt: skip
    failures = {Path(p).name: reason for _, p, reason in store.failures()}
    assert set(failures) == {"truncated.png", "text.png"}
    assert failures["truncated.png"].endswith("truncated.png: corrupt or truncated image (image file is truncated)") \
        or "truncated.png: corrupt or truncated image" in failures["truncated.png"]  # fmt: skip
    assert failures["text.png"] == f"{tmp_path / 'images' / '5' / 'text.png'}: not an image file PIL can read"
    counts = store.counts()
    assert counts == {"pending": 0, "ok": 12, "failed": 2} and store.state == "complete"
    table = store.table()
    ok = store.indices()
    # The explained samples equal relprop.explain on the same preprocessed images, batched as the store batched them
    # (the failed ones left out of their batch).
    inputs = torch.stack([bundle.preprocess(Image.open(table["source_path"][i])) for i in ok])
    np.testing.assert_allclose(store.relevance[ok], reference(bundle.model, inputs, 64, **BOUNDS)["relevance"],
                               rtol=0, atol=1e-6)  # fmt: skip
    assert np.isnan(store.relevance[store.indices(status="failed")]).all()
    text = out.getvalue()
    assert "explained 12 samples, 2 failed" in text and "failed: sample" in text and "text.png" in text


def test_an_empty_source_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^source arrays in memory has no samples; nothing to explain\.$"):
        _run(tmp_path / "s.zarr", relprop.dataset.ArraySource.from_arrays(np.zeros((0, 1, 8, 8))))
    assert not (tmp_path / "s.zarr").exists()


def test_a_source_nothing_of_which_loads_leaves_no_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_text("no")
    bundle = load_model("digits")
    with pytest.raises(ConfigurationError, match=r"none of the 1 samples of .*images could be read \(first: .*a\.png"):
        _run(tmp_path / "s.zarr", tmp_path / "images", preprocess=bundle.preprocess)
    assert not (tmp_path / "s.zarr").exists()


def test_existing_store_needs_resume_or_force_and_a_foreign_folder_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _run(path, chunk_size=48)
    with pytest.raises(StoreError, match=rf"^store {path} already exists \(360 of 360 samples done\); pass --resume"):
        _run(path)
    before = store_arrays(path)
    store = _run(path, overwrite=True, chunk_size=96)
    assert store.layout.chunk_size == 96 and np.array_equal(store.relevance[:], before["relevance"])
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("x")
    with pytest.raises(StoreError, match=r"photos exists and is not a relevance store; choose another --out"):
        _run(foreign, overwrite=True)
    assert (foreign / "holiday.jpg").read_text() == "x" and sorted(os.listdir(foreign)) == ["holiday.jpg"]


def test_resume_with_another_model_or_settings_is_refused_and_keeps_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _run(path)
    before = store_arrays(path)
    other = load_digits_model()
    with torch.no_grad():
        other.features[0].weight.mul_(1.01)
    with pytest.raises(ConfigurationError) as info:
        explain_dataset(other, "digits", path, resume=True, progress="none", **BOUNDS)
    assert str(info.value).startswith(f'store {path} was written with weights_sha256="')
    assert str(info.value).endswith(
        "; resume it with the same model, settings and source, or choose another --out (--force replaces it)."
    )
    with pytest.raises(ConfigurationError, match=r'was written with layer_reduce="channels" \(this run: null\)'):
        _run(path, resume=True, layer_reduce=None)
    with pytest.raises(ConfigurationError, match=r"was written with batch_size=16 \(this run: 8\)"):
        _run(path, resume=True, batch_size=8)
    with pytest.raises(ConfigurationError, match=r'was written with kind="digits" \(this run: "arrays"\)'):
        _run(path, relprop.dataset.ArraySource.from_arrays(digits_test_set().images), resume=True)
    after = store_arrays(path)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_chunk_size_must_be_a_multiple_of_the_batch(tmp_path: Path) -> None:
    expected = r"^chunk_size 50 is not a multiple of batch_size 16; choose e\.g\. 48"
    with pytest.raises(ConfigurationError, match=expected):
        _run(tmp_path / "s.zarr", chunk_size=50)


def test_a_second_run_on_the_same_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _run(path)
    holder = StoreLock(path)
    holder.acquire()
    try:
        with pytest.raises(StoreError) as info:
            _run(path, resume=True)
        assert str(info.value).startswith(f"store {path} is being written by another run (pid {os.getpid()} on ")
        assert "wait for it to finish or choose another --out" in str(info.value)
    finally:
        holder.release()


def test_a_dead_runs_lock_is_detected_and_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _run(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (path / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": "here", "started": "2026-01-01T00:00:00+00:00"}))
    out = io.StringIO()
    _run(path, resume=True, progress="lines", stream=out)
    assert f"note: took over the lock of a run that stopped without releasing it (pid {pid} on here" in out.getvalue()


def test_ctrl_c_stops_after_the_chunk_in_flight_and_resume_finishes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        _run(path, relprop.dataset.TorchDatasetSource(InterruptAt(200), name="digits-ds"), progress="lines",
             stream=out)  # fmt: skip
    store = RelevanceStore(path)
    blocks = np.split(store.status(), range(48, 360, 48))  # chunks of 48 samples
    committed_blocks = [bool((block != 0).all()) for block in blocks]
    assert all(bool((block != 0).all()) or bool((block == 0).all()) for block in blocks)  # whole chunks only
    # Sample 200 (chunk 4) is loaded at most three chunks ahead of the one being explained (two wait in the queue):
    # the chunk explained when Ctrl-C came is committed, the loaded ones after it are not.
    assert committed_blocks[0] and not any(committed_blocks[4:])
    assert store.counts()["pending"] > 0 and store.state == "interrupted"
    assert "stopping after the chunk in flight" in out.getvalue()
    assert "run again with --resume to finish" in out.getvalue()
    # What a worker that died in the middle of a chunk leaves: rows written, status not. Resume must redo them.
    first_pending = committed_blocks.index(False) * 48
    group = zarr.open_group(str(path), mode="r+")
    group["relevance"][first_pending : first_pending + 48] = 123.0
    group["ledger"][first_pending : first_pending + 48] = -1.0
    _run(path, relprop.dataset.TorchDatasetSource(SlowDigits(0.0), name="digits-ds"), resume=True)
    full = tmp_path / "full.zarr"
    _run(full, relprop.dataset.TorchDatasetSource(SlowDigits(0.0), name="digits-ds"))
    assert_same_store(path, full)
    runs = RelevanceStore(path).metadata["runs"]
    assert [r["outcome"] for r in runs] == ["interrupted", "complete"]


def test_progress_lines_show_rate_and_eta(tmp_path: Path) -> None:
    out = io.StringIO()
    _run(tmp_path / "s.zarr", progress="lines", progress_interval=0.0, stream=out)
    lines = out.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("explain-dataset: ")]
    assert len(progress) == 8 and progress[-1].startswith("explain-dataset: 360/360 samples (100.0%), ")
    assert all(" samples/s, ETA " in line and line.endswith(" 0 failed") for line in progress)
    assert lines[-1].startswith("explained 360 samples, 0 failed, in ") and "samples/s); store: " in lines[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    terminal = _Terminal()
    _run(tmp_path / "s.zarr", progress="auto", stream=terminal, summary=True)
    text = terminal.getvalue()
    assert "explaining" in text and "samples/s" in text and "\x1b[" in text  # drawn with terminal control codes
    assert "explain-dataset: " not in text  # no plain lines on a terminal
    last = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text.rstrip().splitlines()[-1])
    assert last.startswith("explained 360 samples, 0 failed, in ")
