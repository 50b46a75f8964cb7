"""``explain_dataset``: explain every sample of a source into a resumable relevance store.

A run takes the store's lock, creates the store (or, with ``resume``, checks that it was
written with the same model, settings and source), then hands the blocks that are not
committed yet to an executor (``"local"`` or ``"ray"``; :data:`EXECUTORS` is the registry)
and reports progress. At the end it records the run in the store's metadata, marks the
store complete when no sample is pending, prints a summary and releases the lock.
"""

from __future__ import annotations

import math
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from ..composites import Composite
from ..errors import ConfigurationError, StoreError
from .context import RunContext, StopRequest, write_error
from .lock import LOCK_FILE, StoreLock
from .progress import Progress, RunStats, format_duration
from .settings import RunSettings, first_difference, jsonable, model_identity, tuned_record
from .sources import Preprocess, Source, as_source
from .store import (
    FORMAT,
    PENDING,
    RelevanceStore,
    StoreLayout,
    create_store,
    downsampled_shape,
    read_metadata,
    read_status,
    write_metadata,
)
from .work import make_runner, probe

__all__ = ["EXECUTORS", "default_chunk_size", "explain_dataset", "register_executor"]

Executor = Callable[[RunContext], None]


def _run_ray(ctx: RunContext) -> None:
    from .ray_executor import run_ray

    run_ray(ctx)


def _run_local(ctx: RunContext) -> None:
    from .local_executor import run_local

    run_local(ctx)


#: Executors by name: a function that fills the context's pending blocks.
EXECUTORS: dict[str, Executor] = {"local": _run_local, "ray": _run_ray}
# Settings a resumed run must share with the store (keys of the settings record), then model and source.
_SOURCE_KEYS = ("kind", "location", "length")
# Bytes of relevance a committed chunk aims at (it is written in one piece per array), and at most this many
# samples: each array write costs about a millisecond of CPU whatever its size, so small samples (8×8 digits)
# need large chunks for the writer to stay a few per cent of the explainer's CPU time.
_CHUNK_BYTES = 64 * 2**20
_CHUNK_SAMPLES = 2048


def register_executor(name: str, executor: Executor) -> None:
    """Add an executor: ``executor(context)`` explains ``context.blocks`` and commits them."""
    EXECUTORS[name] = executor


def default_chunk_size(batch_size: int, sample_bytes: int) -> int:
    """Samples per committed chunk: a multiple of ``batch_size`` near 2048 samples or 64 MiB of relevance."""
    target = max(1, min(_CHUNK_SAMPLES, _CHUNK_BYTES // max(1, sample_bytes)))
    return max(1, round(target / batch_size)) * batch_size


def explain_dataset(
    model: nn.Module,
    source: Source | str | Path | Any,
    store: str | Path,
    *,
    composite: str | Composite = "epsilon-gamma-box",
    method: str = "lrp",
    target: int | str | None = None,
    top: str = "logit",
    contrast: Any = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    layers: Sequence[str] | None = None,
    layer_reduce: str | None = "channels",
    dtype: str = "float32",
    store_inputs: bool = False,
    analysis_size: int = 32,
    executor: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    preprocess: Preprocess | None = None,
    model_name: str | None = None,
    progress: str = "auto",
    progress_interval: float = 10.0,
    stream: TextIO | None = None,
    summary: bool | None = None,
    **params: Any,
) -> RelevanceStore:
    """Explain every sample of ``source`` and store the results in a chunked Zarr store.

    Parameters
    ----------
    model
        The model (eval mode, never modified).
    source
        A :class:`~relprop.dataset.sources.Source`, a spec (``"digits"``, a folder of images,
        a ``.npz``/``.npy`` file, ``"package.module:dataset"``) or a ``torch.utils.data.Dataset``.
    store
        The store folder (on a file system every worker sees, for Ray).
    composite, method, top, contrast, **params
        What to explain, as for :func:`relprop.explain` (``low``, ``high``, ``epsilon`` ...). A
        :class:`relprop.tuning.TunedComposite` or the path of its ``.json`` file explains with the
        tuned setting, relative to its reference if it has one; the store's settings record it
        (``settings["tuned"]``: spec, parameters, reference, model fingerprint).
    target
        ``None``/``"predicted"``, a class index, or ``"label"`` (each sample's label).
    batch_size
        Samples per explainer call (default 32; a resumed run uses the store's).
    chunk_size
        Samples per committed chunk, a multiple of ``batch_size`` (default: near 2048 samples
        or 64 MiB of relevance). Ctrl-C and resume work at this granularity.
    layers, layer_reduce
        Module paths whose output relevance is stored too; ``"channels"`` (default) keeps one
        number per channel, ``None`` the whole map.
    dtype
        ``"float32"`` or ``"float16"`` for the stored relevance.
    store_inputs
        Also store the preprocessed inputs.
    analysis_size
        Largest side of the downsampled relevance (channel sum, sum-pooled) kept for analyses.
    executor, workers, ray_address, threads, device
        ``"local"`` (this process) or ``"ray"`` (``workers`` actors; ``ray_address=None``
        starts a local Ray instance); torch threads per worker (Ray default 1); device.
    resume, overwrite
        Continue an existing store (same settings required), or replace it.
    preprocess
        PIL image → model input, for image folders and datasets of images.
    model_name
        How the store names the model (default: its class name).
    progress, progress_interval, stream
        ``"auto"`` (a bar on a terminal, a line every ``progress_interval`` s otherwise),
        ``"bar"``, ``"lines"`` or ``"none"``, written to ``stream`` (stderr).
    summary
        Print the end summary (explained, failed with reasons, time, rate); default: unless
        ``progress="none"``.

    Returns
    -------
    RelevanceStore
        The store, opened for reading.

    Raises
    ------
    KeyboardInterrupt
        After Ctrl-C, once the chunk in flight is committed (the store can be resumed).
    """
    if executor not in EXECUTORS:
        raise ConfigurationError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}.")
    if executor == "ray":
        from .ray_executor import import_ray

        import_ray()  # a missing Ray is reported before anything is written
    if workers < 1:
        raise ConfigurationError(f"workers must be at least 1, got {workers}.")
    src = as_source(source, preprocess)
    if len(src) == 0:
        raise ConfigurationError(f"source {src.location()} has no samples; nothing to explain.")
    path = Path(store).expanduser().resolve()
    composite, tuned = _tuned(model, composite, method, params)
    composite_name = composite if isinstance(composite, str) else tuned["name"] if tuned else repr(composite)
    request = dict(
        method=method, composite=composite_name if method == "lrp" else None, params=params, target=target, top=top,
        contrast=contrast, layers=tuple(layers or ()), layer_reduce=layer_reduce, dtype=dtype,
        store_inputs=store_inputs, analysis_size=analysis_size, tuned=tuned and tuned["record"],
    )  # fmt: skip
    identity = model_identity(model, model_name)
    out = stream or sys.stderr
    created = not path.exists()
    lock = _prepare_folder(path)
    try:
        note = lock.acquire()
        if note:
            out.write(f"note: {note}\n")
        meta = _existing(path, resume, overwrite)
        if meta is None:
            settings = RunSettings(batch_size=batch_size or 32, **request)  # type: ignore[arg-type]
            meta, layout, runner = _create(path, model, composite, src, settings, identity, chunk_size)
        else:
            settings = RunSettings(batch_size=batch_size or int(meta["settings"]["batch_size"]), **request)  # type: ignore[arg-type]
            _check_resume(path, meta, settings, identity, src, chunk_size)
            layout, runner = StoreLayout.from_record(meta["layout"]), None
        report = (progress, progress_interval, out, progress != "none" if summary is None else summary)
        return _fill(path, meta, model, composite, src, settings, layout, executor, workers, ray_address, threads,
                     device, report, runner)  # fmt: skip
    finally:
        lock.release()
        if created and not (path / "zarr.json").exists():
            shutil.rmtree(path, ignore_errors=True)  # a run that failed before creating the store leaves nothing


def _tuned(model: nn.Module, composite: Any, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """A tuned composite (object or ``.json`` path), checked against the model, and what the store records of it."""
    from ..tuning import TunedComposite
    from ..tuning.resolve import AUTO, as_composite, is_tuned

    if method != "lrp" or not is_tuned(composite):
        return composite, None
    if isinstance(composite, str) and composite == AUTO:
        raise ConfigurationError(
            "composite='auto' would search on the data set being explained; tune once with relprop.tune or "
            "relprop tune and pass the tuned .json file as the composite."
        )
    tuned = composite if isinstance(composite, TunedComposite) else TunedComposite.load(composite)
    as_composite(composite, model, params)  # the model check and the refusal of parameters beside it, as Explainer
    return tuned, {"name": tuned.composite().name, "record": tuned_record(tuned)}


def _prepare_folder(path: Path) -> StoreLock:
    """Make sure the store folder exists (so its lock can be taken) and is not someone else's folder."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"--out {path} is a file; the store is a folder, choose another path")
    if path.is_dir():
        entries = {p.name for p in path.iterdir()} - {LOCK_FILE}
        if entries and "zarr.json" not in entries:
            raise StoreError(f"{path} exists and is not a relevance store; choose another --out (nothing was changed)")
    else:
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"cannot create store {path} ({exc.strerror}); choose a writable --out location") from None
    return StoreLock(path)


def _existing(path: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The metadata of the store to resume, or ``None`` when a new store is to be created (holding the lock)."""
    if not (path / "zarr.json").exists():
        return None
    meta = read_metadata(path)
    if overwrite:
        for entry in path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            try:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError as exc:
                raise write_error(path, exc) from None
        return None
    if not resume:
        total = int(meta.get("samples", 0))
        raise StoreError(
            f"store {path} already exists ({_done(path)} of {total} samples done); pass --resume to continue it or "
            "--force to replace it"
        )
    return meta


def _create(
    path: Path,
    model: nn.Module,
    composite: str | Composite,
    source: Source,
    settings: RunSettings,
    identity: dict[str, Any],
    chunk_size: int | None,
) -> tuple[dict[str, Any], StoreLayout, Any]:
    """Probe the shapes on the first readable sample and create the store; (metadata, layout, prepared explainer)."""
    runner = make_runner(model, settings, composite)
    found = probe(runner, source, settings)
    layout = _layout(len(source), found, settings, chunk_size)
    meta = _new_metadata(settings, layout, identity, source)
    try:
        create_store(path, layout, meta)
    except OSError as exc:
        raise write_error(path, exc) from None
    return meta, layout, runner


def _done(path: Path) -> int:
    return int((read_status(path) != PENDING).sum())


def _layout(samples: int, found: Any, settings: RunSettings, chunk_size: int | None) -> StoreLayout:
    batch = settings.batch_size
    sample_bytes = math.prod(found.input_shape) * (2 if settings.dtype == "float16" else 4)
    chunk = chunk_size or default_chunk_size(batch, sample_bytes)
    if chunk % batch:
        raise ConfigurationError(
            f"chunk_size {chunk} is not a multiple of batch_size {batch}; choose e.g. {max(1, chunk // batch) * batch}."
        )
    return StoreLayout(
        samples=samples,
        chunk_size=chunk,
        input_shape=found.input_shape,
        output_shape=found.output_shape,
        downsampled_shape=downsampled_shape(found.input_shape, settings.analysis_size),
        dtype=settings.dtype,
        layer_shapes=found.layer_shapes,
        store_inputs=settings.store_inputs,
    )


def _versions() -> dict[str, str]:
    import zarr

    from .. import __version__

    return {"relprop": __version__, "torch": torch.__version__, "zarr": zarr.__version__}


def _new_metadata(settings: RunSettings, layout: StoreLayout, model: dict[str, Any], source: Source) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "state": "writing",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "samples": layout.samples,
        "chunk_size": layout.chunk_size,
        "layout": layout.record(),
        "settings": settings.record(),
        "model": model,
        "source": jsonable(source.describe()),
        "runs": [],
    }


def _check_resume(
    path: Path,
    meta: dict[str, Any],
    settings: RunSettings,
    model: dict[str, Any],
    source: Source,
    chunk_size: int | None,
) -> None:
    """Refuse to resume a store written with another model, other settings or another source."""
    stored_settings = meta["settings"]
    problem = (
        first_difference(meta["model"], model, ["class", "weights_sha256"])
        or first_difference(stored_settings, settings.record(), list(stored_settings))
        or first_difference(meta["source"], jsonable(source.describe()), list(_SOURCE_KEYS))
    )
    if problem is None and chunk_size is not None and chunk_size != int(meta["chunk_size"]):
        problem = f"chunk_size={meta['chunk_size']} (this run: {chunk_size})"
    if problem:
        raise ConfigurationError(
            f"store {path} was written with {problem}; resume it with the same model, settings and source, or choose "
            "another --out (--force replaces it)."
        )


def _sweep_partial_files(path: Path) -> None:
    """Remove temporary files of writes that a killed run left (Zarr writes ``*.partial`` then renames)."""
    for leftover in path.rglob("*.partial"):
        leftover.unlink(missing_ok=True)


def _pending_blocks(path: Path, layout: StoreLayout) -> list[int]:
    status = read_status(path)
    pending = np.flatnonzero(status == PENDING)
    return sorted({int(i) // layout.chunk_size for i in pending})


def _fill(
    path: Path,
    meta: dict[str, Any],
    model: nn.Module,
    composite: str | Composite,
    source: Source,
    settings: RunSettings,
    layout: StoreLayout,
    executor: str,
    workers: int,
    ray_address: str | None,
    threads: int | None,
    device: str | None,
    report: tuple[str, float, TextIO, bool],
    runner: Any = None,
) -> RelevanceStore:
    """Run the executor on the pending blocks, record the run, summarise; the caller holds the lock."""
    progress, progress_interval, out, summary = report
    try:
        _sweep_partial_files(path)
    except OSError as exc:
        raise write_error(path, exc) from None
    blocks = _pending_blocks(path, layout)
    pending_samples = sum(layout.block_range(b)[1] - layout.block_range(b)[0] for b in blocks)
    stats = RunStats(total=layout.samples, already=layout.samples - pending_samples)
    run_record: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "executor": executor,
        "workers": workers if executor != "local" else 1,
        "blocks": len(blocks),
    }
    meta["state"] = "writing"
    _save(path, meta)
    reporter = Progress(stats, progress, progress_interval, out)
    stop = StopRequest(reporter)
    ctx = RunContext(
        model=model, composite=composite, source=source, settings=settings, layout=layout, path=path,
        blocks=blocks, stats=stats, progress=reporter, stop=stop, workers=workers, threads=threads,
        ray_address=ray_address, device=device, runner=runner,
    )  # fmt: skip
    outcome = "complete"
    try:
        with stop:
            EXECUTORS[executor](ctx)
        if stop.requested:
            outcome = "interrupted"
    except BaseException:
        outcome = "failed"
        raise
    finally:
        reporter.close()
        stats.finished = stats.started + stats.seconds
        try:
            pending = _pending_blocks(path, layout)
        except OSError:  # the store became unreadable: the run's own error says more
            pending = list(blocks)
        meta["state"] = "complete" if not pending else "interrupted"
        meta["runs"] = [*meta.get("runs", []), {**run_record, **stats.record(), "outcome": outcome, **ctx.info}]
        _save(path, meta, quiet=outcome == "failed")
        if summary and outcome != "failed":  # a failed run says why in its error, nothing more
            _summary(out, path, stats, layout, pending, outcome)
    if outcome == "interrupted":
        raise KeyboardInterrupt
    return RelevanceStore(path)


def _save(path: Path, meta: dict[str, Any], quiet: bool = False) -> None:
    try:
        write_metadata(path, meta)
    except OSError as exc:
        if not quiet:  # after a failed write the store's own error is the one to report
            raise write_error(path, exc) from None


def _summary(out: TextIO, path: Path, stats: RunStats, layout: StoreLayout, pending: list[int], outcome: str) -> None:
    lines = [
        f"explained {stats.explained} samples, {stats.failed} failed, in {format_duration(stats.seconds)} "
        f"({stats.rate:.1f} samples/s); store: {path}"
    ]
    if stats.already:
        lines.append(f"{stats.already} samples were already in the store from an earlier run")
    if stats.redone_chunks:
        lines.append(f"{stats.redone_chunks} chunks were redone after a worker died")
    for index, reason in stats.failures[:10]:
        lines.append(f"failed: sample {index}: {reason}")
    if len(stats.failures) > 10:
        lines.append(f"... and {len(stats.failures) - 10} more failures (RelevanceStore.failures() lists them)")
    if pending:
        left = sum(layout.block_range(b)[1] - layout.block_range(b)[0] for b in pending)
        verb = "stopped after the chunk in flight" if outcome == "interrupted" else "stopped"
        lines.append(f"{verb}: {left} samples are not done; run again with --resume to finish")
    out.write("\n".join(lines) + "\n")
    out.flush()
