"""Shared pieces of the dataset tests: reference explanations, store comparison, slow and dying datasets,
small real file systems (tmpfs) for the full and read-only cases, and running the CLI in a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

import relprop
from relprop.dataset.store import TABLE, downsample
from relprop.models import digits_test_set, load_digits_model

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
BOUNDS = {"low": 0.0, "high": 1.0}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (as the subprocesses and Ray workers do), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference(model: torch.nn.Module, x: torch.Tensor, batch_size: int, **kwargs: Any) -> dict[str, np.ndarray]:
    """What a plain loop of ``relprop.explain`` over the same batches gives: relevance, outputs, ledger."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("relevance", "output", "target", "score", "input_relevance",
                                                           "absorbed", "residual", "downsampled")}  # fmt: skip
    layers: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        options = dict(kwargs)
        if isinstance(options.get("target"), torch.Tensor):  # one target per sample: this batch's
            options["target"] = options["target"][start : start + batch_size]
        result = relprop.explain(model, x[start : start + batch_size], **options)
        parts["relevance"].append(result.relevance.numpy())
        parts["output"].append(result.output.numpy())
        parts["target"].append(result.target.numpy())
        parts["downsampled"].append(downsample(result.relevance, 32).numpy())
        for name in ("score", "input_relevance", "absorbed", "residual"):
            parts[name].append(getattr(result.ledger, name).double().numpy())
        for name, value in getattr(result, "layers", {}).items():
            layers.setdefault(name, []).append(value.numpy())
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update({f"layers/{k}": np.concatenate(v) for k, v in layers.items()})
    return out


def digits_reference(batch_size: int = 16, **kwargs: Any) -> dict[str, np.ndarray]:
    """The reference on the 360 bundled test digits with epsilon-gamma-box in [0, 1]."""
    return reference(load_digits_model(), digits_test_set().images, batch_size, **{**BOUNDS, **kwargs})


def assert_store_equals(store: Any, expected: dict[str, np.ndarray], rtol: float = 0.0) -> None:
    """Every stored sample is ok and equals the reference (bit for bit with ``rtol=0``)."""
    status = store.status()
    assert (status == relprop.dataset.OK).all(), f"{int((status != 1).sum())} samples are not ok"
    table = store.table()
    np.testing.assert_array_equal(table["source_index"], np.arange(len(store)))
    for name, value in expected.items():
        stored = table[name] if name in table else (store.layer(name[7:])[:] if name.startswith("layers/")
                                                    else getattr(store, name)[:])  # fmt: skip
        if rtol == 0.0 or np.issubdtype(value.dtype, np.integer):
            np.testing.assert_array_equal(stored, value, err_msg=name)
        else:
            scale = float(np.abs(value).max())
            np.testing.assert_allclose(stored, value, rtol=0, atol=rtol * scale, err_msg=name)


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store folder, read raw (for comparing two stores exactly)."""
    group = zarr.open_group(str(path), mode="r")
    with warnings.catch_warnings():  # zarr notes that the lock file is not part of the hierarchy
        warnings.simplefilter("ignore")
        names = list(group.array_keys())
        if "layers" in group:
            names += [f"layers/{k}" for k in group["layers"].array_keys()]
    arrays = {}
    for name in names:
        values = np.asarray(group[name][:])
        arrays[name] = values.astype(object).astype(str) if name in TABLE and TABLE[name][0] is str else values
    return arrays


def assert_same_store(a: Path, b: Path) -> None:
    """Two stores hold the same arrays, bit for bit (NaN equal to NaN)."""
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def run_cli(args: list[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    """Start ``relprop ARGS`` in a subprocess (the worktree's sources and these tests on the path)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(TESTS), environment.get("PYTHONPATH", "")])
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "relprop.cli", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def committed(path: Path) -> int:
    """Samples a store has committed so far (0 while it does not exist yet)."""
    try:
        return int((np.asarray(zarr.open_group(str(path), mode="r")["status"][:]) != 0).sum())
    except Exception:  # not created yet, or being created
        return 0


def wait_for(condition: Any, timeout: float, what: str, process: subprocess.Popen[str] | None = None) -> None:
    """Poll ``condition()`` every 20 ms until true; fail after ``timeout`` s or if ``process`` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the run ended (status {process.returncode}) before {what}:\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only; the test is skipped where mounting is refused)."""
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    """Change a tmpfs mounted by :func:`small_filesystem` (``ro``, ``rw``, ``size=4m``)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)
