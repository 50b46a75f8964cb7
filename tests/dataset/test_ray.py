"""The Ray executor on a local 2-worker instance on 127.0.0.1, started and stopped by the run: the store
equals relprop.explain on the same batches, and a worker killed in the middle of its chunk has that
chunk redone by a new worker, nothing lost or doubled."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import ray

from relprop.dataset import RelevanceStore, TorchDatasetSource, explain_dataset
from relprop.models import load_digits_model

from .slowdata import DieOnce
from .support import BOUNDS, ROOT, TESTS, assert_store_equals, digits_reference, torch_threads


@pytest.mark.heavy  # 35-40 s on the shared 2-core machine: Ray's start, three worker processes, its shutdown
def test_two_ray_workers_fill_the_store_and_a_dead_workers_chunk_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers unpickle the test's dataset class, so they need the tests folder on their path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(TESTS)]))
    marker = tmp_path / "died"
    source = TorchDatasetSource(DieOnce(index=100, marker=marker), name="digits-die-once")
    out = io.StringIO()
    assert not ray.is_initialized()
    store = explain_dataset(load_digits_model(), source, tmp_path / "s.zarr", executor="ray", workers=2,
                            batch_size=16, chunk_size=32, progress="lines", stream=out, **BOUNDS)  # fmt: skip
    assert not ray.is_initialized()  # the run started its own instance and stopped it
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker process died, not this one
    assert "note: a Ray worker died; chunk 3 is redone by a new worker" in out.getvalue()
    run = store.metadata["runs"][-1]
    assert run["executor"] == "ray" and run["redone_chunks"] >= 1 and run["outcome"] == "complete"
    assert run["cpu_seconds"] > 0 and run["startup_seconds"] > 0
    assert len(run["workers"]) == 2 and len(set(run["workers"])) == 2
    with torch_threads(1):  # the workers' thread count: same batches, same threads, same numbers
        expected = digits_reference(batch_size=16)
    assert_store_equals(store, expected, rtol=1e-6)
    np.testing.assert_array_equal(store.relevance[:], expected["relevance"])
    assert RelevanceStore(store.path).state == "complete"


@pytest.mark.heavy  # about 100 s here: two `ray start` nodes, a CLI run joining them
def test_the_command_line_joins_a_two_node_cluster(tmp_path: Path) -> None:
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _ray_cluster import local_cluster

    pythonpath = os.pathsep.join([str(ROOT / "src"), str(TESTS)])
    with local_cluster(nodes=2, cpus_per_node=1, pythonpath=pythonpath, logs=tmp_path / "logs") as cluster:
        out = tmp_path / "s.zarr"
        result = subprocess.run(
            [sys.executable, "-m", "relprop.cli", "explain-dataset", "digits", "--out", str(out), "--ray",
             cluster.address, "--workers", "2", "--batch-size", "16", "--chunk-size", "32", "--progress", "none"],
            env=cluster.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    store = RelevanceStore(out)
    run = store.metadata["runs"][-1]
    assert run["executor"] == "ray" and len(set(run["workers"])) == 2
    assert len({worker.split("node=")[1] for worker in run["workers"]}) == 2  # one worker on each node
    with torch_threads(1):
        expected = digits_reference(batch_size=16)
    assert_store_equals(store, expected, rtol=1e-6)
