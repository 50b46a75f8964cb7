"""A full or read-only output location on a real (tmpfs) file system: one clear line, and every sample
committed before stays readable and correct; after making room, --resume finishes the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relprop.cli import main
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.errors import StoreError
from relprop.models import load_digits_model

from .support import BOUNDS, assert_store_equals, digits_reference, remount, small_filesystem, store_arrays


def _run(path: Path, **kwargs: object) -> RelevanceStore:
    options = {"batch_size": 16, "chunk_size": 16, "progress": "none", **BOUNDS, **kwargs}
    return explain_dataset(load_digits_model(), "digits", path, **options)  # type: ignore[arg-type]


def test_a_full_disk_keeps_what_was_committed_and_resume_finishes(tmp_path: Path) -> None:
    expected = digits_reference(batch_size=16)
    with small_filesystem(tmp_path / "mnt", "300k") as mnt:
        path = mnt / "s.zarr"
        with pytest.raises(StoreError) as info:
            _run(path)
        assert str(info.value) == (
            f"cannot write to store {path} (no space left on device); the samples committed before are kept; make "
            "room or fix the location, then run again with --resume"
        )
        store = RelevanceStore(path)
        ok = store.indices()
        assert 0 < len(ok) < 360 and store.state == "interrupted"
        assert store.counts()["failed"] == 0
        for name in ("relevance", "output", "downsampled"):
            np.testing.assert_array_equal(getattr(store, name)[ok], expected[name][ok], err_msg=name)
        np.testing.assert_array_equal(store.table()["score"][ok], expected["score"][ok])
        remount(mnt, "size=16m")
        resumed = _run(path, resume=True)
        assert_store_equals(resumed, expected)


def test_a_full_disk_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "mnt", "300k") as mnt:
        result = CliRunner().invoke(main, ["explain-dataset", "digits", "--out", str(mnt / "s.zarr"), "--batch-size",
                                           "16", "--chunk-size", "16", "--progress", "none"])  # fmt: skip
        assert result.exit_code == 2
        assert result.output == (
            f"error: cannot write to store {mnt / 's.zarr'} (no space left on device); the samples committed before "
            "are kept; make room or fix the location, then run again with --resume\n"
        )


def test_a_read_only_location_is_one_line_and_the_store_is_untouched(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "mnt", "8m") as mnt:
        path = mnt / "s.zarr"
        _run(path)
        before = store_arrays(path)
        remount(mnt, "ro")
        runner = CliRunner()
        resumed = runner.invoke(main, ["explain-dataset", "digits", "--out", str(path), "--resume"])
        assert resumed.exit_code == 2
        assert resumed.output == (
            f"error: cannot write to store {path} (Read-only file system); choose a writable --out location\n"
        )
        new = runner.invoke(main, ["explain-dataset", "digits", "--out", str(mnt / "new.zarr")])
        assert new.exit_code == 2
        assert new.output == (
            f"error: cannot create store {mnt / 'new.zarr'} (Read-only file system); choose a writable --out location\n"
        )
        after = store_arrays(path)
        for name in before:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        assert RelevanceStore(path).complete
