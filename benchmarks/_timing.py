"""What the speed benchmarks share: the model and batch they time, and round-robin timing.

Imported by the scripts next to it (``python benchmarks/<script>.py`` puts this folder on the
import path).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any


def setup_model(model_name: str, device: str, threads: int, batch: int) -> tuple[Any, Any]:
    """A random-init torchvision model in eval mode and a seeded batch of 3 × 224 × 224 inputs."""
    import torch
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    return model, x


def gradient_x_input_call(model: Any, x: Any) -> Callable[[], Any]:
    """One Gradient×Input call for the predicted class: the baseline every ratio is taken to."""
    import torch

    def gxi() -> Any:
        xx = x.detach().requires_grad_(True)
        out = model(xx)
        target = out.argmax(1)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xx)
        return g * xx.detach()

    return gxi


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_round_robin(
    calls: Mapping[str, Callable[[], Any]],
    device: str,
    repeats: int,
    is_slow: Callable[[str], bool],
    slow_repeats: int,
    progress: str | None = None,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Time each call ``repeats`` times (``slow_repeats`` for the slow ones) after one warm-up.

    The calls take turns within each round, so that drift of a shared machine hits all alike.
    With ``progress`` (a label) the warm-ups and rounds are reported on stderr. Wall times are
    returned; pass a dict as ``cpu_times`` to also get the process CPU time of each call
    (``time.process_time``, all threads), which other processes on a shared machine disturb far less.
    """
    for name, call in calls.items():
        if progress is not None:
            print(f"  warm-up {progress} {name}", file=sys.stderr)
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats):
        for name, call in calls.items():
            if is_slow(name) and round_index >= slow_repeats:
                continue
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            sync(device)
            times[name].append(time.perf_counter() - start)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(time.process_time() - cpu_start)
        if progress is not None:
            print(f"  round {round_index + 1}/{repeats} done", file=sys.stderr)
    return times
