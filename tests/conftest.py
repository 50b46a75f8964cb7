from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# Two threads, as on the CI machine; keeps timings of the heavier tests predictable.
torch.set_num_threads(int(os.environ.get("RELPROP_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
