"""The local executor: a loader thread, the explainer in the calling thread, a writer thread.

Reading the next block (image decoding, dataset ``__getitem__``) and writing the previous
one (shaping the rows, the downsampled copy, Zarr encoding and file writes) overlap with the
explanation of the current block; the queues between the stages hold at most two blocks, so
memory stays bounded. The explainer runs in the calling (main) thread, where Ctrl-C arrives,
and does nothing there but slice batches and call the explainer: every thread shares the GIL,
so per-sample Python work anywhere slows a small model down.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from .context import RunContext, write_error
from .store import StoreWriter
from .work import BlockExplainer, ExplainedBlock, LoadedBlock, make_runner

__all__ = ["run_local"]

_DEPTH = 2


@dataclass
class _Raised:
    """An exception from the loader thread, re-raised in the main thread."""

    exc: BaseException


def _put(q: queue.Queue[Any], item: Any, halt: threading.Event) -> bool:
    """Put ``item`` unless ``halt`` is set first; ``False`` if it was not put."""
    while not halt.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_local(ctx: RunContext) -> None:
    """Explain ``ctx.blocks`` in this process and write them to the store (with ``ctx.threads`` torch threads)."""
    before = torch.get_num_threads()
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    cpu = time.process_time()
    try:
        _pipeline(ctx)
    finally:
        torch.set_num_threads(before)
        ctx.stats.cpu_seconds += time.process_time() - cpu


def _pipeline(ctx: RunContext) -> None:
    runner = ctx.runner or make_runner(ctx.model, ctx.settings, ctx.composite)
    work = BlockExplainer(runner, ctx.source, ctx.settings, ctx.layout)
    writer = StoreWriter(ctx.path)
    loaded: queue.Queue[LoadedBlock | _Raised | None] = queue.Queue(maxsize=_DEPTH)
    results: queue.Queue[ExplainedBlock | None] = queue.Queue(maxsize=_DEPTH)
    halt = threading.Event()
    failed: list[BaseException] = []

    def load_blocks() -> None:
        try:
            for block in ctx.blocks:
                if halt.is_set() or not _put(loaded, work.load(block), halt):
                    return
        except BaseException as exc:  # handed to the main thread, which raises it
            _put(loaded, _Raised(exc), halt)
        _put(loaded, None, halt)

    def write_blocks() -> None:
        while (explained := results.get()) is not None:
            if failed:
                continue  # drain: nothing more is written after a failed write
            try:
                result = work.assemble(explained)
                writer.write(result)
            except BaseException as exc:
                failed.append(exc)
                halt.set()
                continue
            ctx.committed(result.ok, result.failures)

    loader = threading.Thread(target=load_blocks, name="relprop-loader", daemon=True)
    saver = threading.Thread(target=write_blocks, name="relprop-writer", daemon=True)
    loader.start()
    saver.start()
    try:
        while not failed and not ctx.stop.requested:
            item = loaded.get()
            if item is None:
                break
            if isinstance(item, _Raised):
                raise item.exc
            results.put(work.explain(item))
    finally:
        halt.set()
        results.put(None)  # the writer commits every block explained so far, then stops
        saver.join()
        while loader.is_alive():
            with contextlib.suppress(queue.Empty):
                loaded.get(timeout=0.1)
        loader.join()
    if failed:
        raise write_error(ctx.path, failed[0]) from failed[0]
