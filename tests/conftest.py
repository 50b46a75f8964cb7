from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Two threads, as on the CI machine; keeps timings of the heavier tests predictable.
torch.set_num_threads(int(os.environ.get("RELPROP_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """Undo global torch settings a test changes (scripts/train_digits.py sets one thread and
    deterministic algorithms for training), so that later tests run as they would alone."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
