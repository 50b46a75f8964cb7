"""Datasets for the subprocess and Ray tests: the bundled digits, slowed down or dying once.

``RELPROP_TEST_DELAY`` (seconds per item) slows :func:`slow_digits`, so that a test can stop
or kill a run part-way; the delay does not change any stored number.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from relprop.models import digits_test_set


class SlowDigits(torch.utils.data.Dataset):
    """The 360 bundled test digits; each item waits ``delay`` seconds first."""

    def __init__(self, delay: float) -> None:
        test = digits_test_set()
        self.images, self.labels, self.delay = test.images, test.labels, delay

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.delay:
            time.sleep(self.delay)
        return self.images[index], int(self.labels[index])


def slow_digits() -> SlowDigits:
    """``dataset.slowdata:slow_digits`` for the CLI: the delay comes from ``RELPROP_TEST_DELAY``."""
    return SlowDigits(float(os.environ.get("RELPROP_TEST_DELAY", "0")))


class DieOnce(SlowDigits):
    """The digits; the process loading item ``index`` dies (``os._exit``) the first time, marked by a file."""

    def __init__(self, index: int, marker: Path) -> None:
        super().__init__(0.0)
        self.index, self.marker = index, Path(marker)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index == self.index and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # a worker killed in the middle of its chunk, as by the OOM killer
        return super().__getitem__(index)


class InterruptAt(SlowDigits):
    """The digits; loading item ``index`` sends this process SIGINT once (a Ctrl-C in the middle of a run)."""

    def __init__(self, index: int) -> None:
        super().__init__(0.0)
        self.index, self.sent = index, False

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index == self.index and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(index)
