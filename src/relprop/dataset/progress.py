"""Progress of a dataset run: a bar on a terminal, plain periodic lines otherwise, and the summary.

Rates count the samples of this run only (a resumed run does not take credit for what an
earlier run stored); the ETA is the remaining samples at that rate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["PROGRESS_MODES", "Progress", "RunStats", "format_duration"]

PROGRESS_MODES = ("auto", "bar", "lines", "none")


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class RunStats:
    """What one run did (also recorded in the store's ``runs`` list)."""

    total: int
    already: int
    explained: int = 0
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    redone_chunks: int = 0
    cpu_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        """Wall time of the run so far (or in all)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Samples (explained or failed) per second in this run."""
        done = self.explained + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def remaining(self) -> int:
        """Samples not yet done."""
        return self.total - self.already - self.explained - self.failed

    def record(self) -> dict[str, Any]:
        """The numbers as JSON for the store's run log."""
        return {
            "explained": self.explained,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.rate, 3),
            "redone_chunks": self.redone_chunks,
            # CPU time of the worker processes: on a shared machine it shows the cost per sample
            # that a dedicated core would deliver (samples / cpu_seconds per core).
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


class Progress:
    """Reports a run's progress on ``stream`` (stderr): ``"bar"``, ``"lines"``, ``"none"`` or ``"auto"``.

    ``"auto"`` draws a bar (rich) on a terminal and prints a plain line every ``interval``
    seconds otherwise (logs, CI, ``nohup``).
    """

    def __init__(self, stats: RunStats, mode: str = "auto", interval: float = 10.0, stream: TextIO | None = None):
        self.stats = stats
        self.stream = stream or sys.stderr
        self.interval = interval
        self.mode = self._choose(mode)
        self._last = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        if self.mode == "bar":
            self._start_bar()

    def _choose(self, mode: str) -> str:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
        if mode != "auto":
            return mode
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        try:
            import rich  # noqa: F401
        except ImportError:
            return "lines"
        return "bar" if tty else "lines"

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("explaining"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} samples/s"),
            TextColumn("{task.fields[failed]} failed"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
        )
        self._bar.start()
        s = self.stats
        self._task = self._bar.add_task("explain", total=s.total, completed=s.already, rate=0.0, failed=0)

    def update(self) -> None:
        """Show the stats' current numbers (a bar redraw, or a line once per interval)."""
        s = self.stats
        if self.mode == "bar":
            done = s.already + s.explained + s.failed
            self._bar.update(self._task, completed=done, rate=s.rate, failed=s.failed)
        elif self.mode == "lines" and time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """One line: done/total, percentage, rate, ETA, failures."""
        s = self.stats
        done = s.already + s.explained + s.failed
        eta = format_duration(s.remaining / s.rate) if s.rate > 0 else "?"
        return (
            f"explain-dataset: {done}/{s.total} samples ({100.0 * done / max(1, s.total):.1f}%), "
            f"{s.rate:.1f} samples/s, ETA {eta}, {s.failed} failed"
        )

    def message(self, text: str) -> None:
        """A note for the user (printed above the bar when one is shown)."""
        if self.mode == "bar":
            self._bar.console.print(text, markup=False, highlight=False)
        elif self.mode != "none" or text.startswith(("note", "warning")):
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
