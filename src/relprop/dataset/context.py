"""What an executor is given: the run's pieces, the blocks to do, and how to report a committed block."""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from torch import nn

from ..composites import Composite
from ..errors import StoreError, first_line
from .progress import Progress, RunStats
from .settings import RunSettings
from .sources import Source
from .store import StoreLayout

__all__ = ["RunContext", "StopRequest", "write_error"]


class StopRequest:
    """Set by Ctrl-C (SIGINT): executors finish the chunk in flight, commit it and stop.

    Installed only in the main thread; a second Ctrl-C raises ``KeyboardInterrupt`` at once
    (the store stays consistent either way: uncommitted chunks are redone on resume).
    """

    def __init__(self, progress: Progress | None = None) -> None:
        self.requested = False
        self._progress = progress
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._progress is not None:
            self._progress.message("stopping after the chunk in flight (Ctrl-C again to stop at once)")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class RunContext:
    """Everything an executor needs to fill the pending blocks of a store.

    Executors call :meth:`committed` once per block whose status chunk they wrote, stop
    early when ``stop.requested``, and raise :class:`~relprop.errors.StoreError` (see
    :func:`write_error`) when the store cannot be written. ``runner`` is the explainer the
    run prepared in this process (its plan and modified weights are cached), when it has one.
    """

    model: nn.Module
    composite: str | Composite | None
    source: Source
    settings: RunSettings
    layout: StoreLayout
    path: Path
    blocks: Sequence[int]
    stats: RunStats
    progress: Progress
    stop: StopRequest
    workers: int = 1
    threads: int | None = None
    ray_address: str | None = None
    device: str | None = None
    runner: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def committed(self, explained: int, failures: list[tuple[int, str]], cpu_seconds: float = 0.0) -> None:
        """Count a committed block (and the worker CPU time it took, if known) and show progress."""
        self.stats.cpu_seconds += cpu_seconds
        self.stats.explained += explained
        self.stats.failed += len(failures)
        self.stats.failures.extend(failures)
        self.progress.update()


def write_error(path: Path, exc: BaseException) -> StoreError:
    """The one-line error for a store that could not be written (full, read-only, gone)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = f"{exc.strerror or 'not writable'}"
    else:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
    return StoreError(
        f"cannot write to store {path} ({reason}); the samples committed before are kept; make room or fix the "
        "location, then run again with --resume"
    )
