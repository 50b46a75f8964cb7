"""Killed and interrupted runs in real subprocesses: SIGKILL at any moment, then resume, gives the store
an uninterrupted run gives, with no sample missing or doubled; Ctrl-C on the command line stops after
the chunk in flight (exit 130); a second run on a store being written is refused."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from relprop.cli import main
from relprop.dataset import RelevanceStore, TorchDatasetSource, explain_dataset
from relprop.dataset.lock import lock_holder
from relprop.models import load_digits_model

from .slowdata import SlowDigits
from .support import BOUNDS, ROOT, TESTS, assert_same_store, committed, run_cli, wait_for

_SCRIPT = """
import sys
from relprop.dataset import TorchDatasetSource, explain_dataset
from relprop.models import load_digits_model
from dataset.slowdata import SlowDigits
source = TorchDatasetSource(SlowDigits(float(sys.argv[2])), name="slow-digits")
explain_dataset(load_digits_model(), source, sys.argv[1], batch_size=8, chunk_size=16, threads=1,
                resume=sys.argv[3] == "resume", progress="lines", low=0.0, high=1.0)
"""


def _start(path: Path, delay: float, resume: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(TESTS)]))
    args = [sys.executable, "-c", _SCRIPT, str(path), str(delay), "resume" if resume else "new"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _in_process(path: Path, resume: bool, stream: io.StringIO | None = None) -> RelevanceStore:
    source = TorchDatasetSource(SlowDigits(0.0), name="slow-digits")
    return explain_dataset(load_digits_model(), source, path, batch_size=8, chunk_size=16, threads=1, resume=resume,
                           progress="lines" if stream else "none", stream=stream, **BOUNDS)  # fmt: skip


def test_sigkill_twice_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    path = tmp_path / "killed.zarr"
    seen = 0
    for attempt in range(2):
        run = _start(path, delay=0.01, resume=attempt > 0)
        target = seen + 48
        wait_for(lambda target=target: committed(path) >= target, 120, f"{target} committed samples", run)
        run.send_signal(signal.SIGKILL)  # no handler, no cleanup: killed wherever it was
        run.wait(30)
        seen = committed(path)
        store = RelevanceStore(path)
        assert store.state == "interrupted" and lock_holder(path) is None
        status = store.status()
        assert 0 < (status != 0).sum() < 360
        blocks = np.split(status, range(16, 360, 16))
        assert all((b != 0).all() or (b == 0).all() for b in blocks), "a chunk was committed in part"
    out = io.StringIO()
    resumed = _in_process(path, resume=True, stream=out)
    assert "note: took over the lock of a run that stopped without releasing it (pid " in out.getvalue()
    assert f"{seen} samples were already in the store from an earlier run" in out.getvalue()
    assert resumed.counts() == {"pending": 0, "ok": 360, "failed": 0} and resumed.state == "complete"
    np.testing.assert_array_equal(resumed.table()["source_index"], np.arange(360))  # none missing, none twice
    assert not list(path.rglob("*.partial"))
    full = _in_process(tmp_path / "full.zarr", resume=False)
    assert_same_store(path, full.path)


def test_ctrl_c_on_the_command_line_and_a_second_run_on_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    args = ["explain-dataset", "dataset.slowdata:slow_digits", "--out", str(path), "--batch-size", "8",
            "--chunk-size", "16", "--threads", "1", "--progress", "lines"]  # fmt: skip
    run = run_cli(args, env={"RELPROP_TEST_DELAY": "0.02"})
    try:
        wait_for(lambda: committed(path) >= 16, 120, "a committed chunk", run)
        second = CliRunner().invoke(main, [*args, "--resume"])
        assert second.exit_code == 2
        assert second.output.startswith(
            f"error: store {path.resolve()} is being written by another run (pid {run.pid} "
        )
        assert len(second.output.strip().splitlines()) == 1
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, output
    assert "stopping after the chunk in flight (Ctrl-C again to stop at once)" in output
    assert "samples are not done; run again with --resume to finish" in output
    assert "Traceback" not in output
    status = RelevanceStore(path).status()
    assert all((b != 0).all() or (b == 0).all() for b in np.split(status, range(16, 360, 16)))
    assert 16 <= (status != 0).sum() < 360
    resumed = CliRunner().invoke(main, [*args, "--resume", "--progress", "none"])
    assert resumed.exit_code == 0, resumed.output
    full = CliRunner().invoke(main, [*args[:3], str(tmp_path / "full.zarr"), *args[4:], "--progress", "none"])
    assert full.exit_code == 0, full.output
    assert_same_store(path, tmp_path / "full.zarr")
