r"""Rules for max pooling (average pooling is linear: see :class:`~relprop.rules.EpsilonRule`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigurationError
from ..ledger import LedgerEntry
from .base import Rule, per_sample_dot, register, stabilize

if TYPE_CHECKING:
    from ..engine.call import Call
    from ..engine.plan import OpRecord

__all__ = ["ProportionalMaxPoolRule", "WinnerTakesAllRule"]


@register
class WinnerTakesAllRule(Rule):
    """Max pooling: all relevance of a pooled output goes to the input that won the max.

    This is the ordinary gradient of max pooling, which conserves relevance exactly.
    """

    applies_to = ("maxpool",)
    label = "winner-takes-all"

    def forward(self, call: Call) -> Any:
        return call.native()


class ProportionalPool(torch.autograd.Function):
    """Max pooling whose backward splits relevance over each window in proportion to the inputs."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        pool: Callable[[Tensor], Tensor],
        window_sum: Callable[[Tensor], Tensor],
        stabilizer: float,
        entry: LedgerEntry | None,
    ) -> Tensor:
        y = pool(x)
        ctx.window_sum = window_sum
        ctx.stabilizer = stabilizer
        ctx.entry = entry
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        x, y = ctx.saved_tensors
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            sums = ctx.window_sum(probe)
            s = (y * grad) / stabilize(sums.detach(), ctx.stabilizer)
            (grad_x,) = torch.autograd.grad(sums, probe, s)
        if ctx.entry is not None:
            ctx.entry.add(per_sample_dot(y, grad), per_sample_dot(x, grad_x))
        return grad_x, None, None, None, None


def _window_sum(
    avg: Callable[..., Tensor], kernel: Any, stride: Any, padding: Any, ceil_mode: bool, volume: int, x: Tensor
) -> Tensor:
    return avg(x, kernel, stride if stride else kernel, padding, ceil_mode, True) * volume


def _pool(func: Callable[..., Any], rest: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> Tensor:
    return func(x, *rest, **kwargs)  # type: ignore[no-any-return]


@register
class ProportionalMaxPoolRule(Rule):
    r"""Max pooling: relevance split over the window in proportion to the inputs.

    :math:`R_i = \sum_{w \ni i} \frac{x_i}{\mathrm{stab}(\sum_{j \in w} x_j)} R_w` — the
    pooling treated like a sum over its window (as sum pooling is treated).
    """

    applies_to = ("maxpool",)
    label = "proportional"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def check(self, record: OpRecord) -> None:
        if "adaptive" in record.function:
            raise ConfigurationError(
                f"ProportionalMaxPoolRule does not support {record.function} at '{record.display_path}'; use "
                "WinnerTakesAllRule for adaptive max pooling."
            )

    def forward(self, call: Call) -> Tensor:
        bound = call.bound
        x = bound["input"]
        dim = x.dim() - 2
        avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dim - 1]
        kernel = bound["kernel_size"]
        volume = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel**dim
        window_sum = functools.partial(
            _window_sum, avg, kernel, bound["stride"], bound["padding"], bool(bound["ceil_mode"]), volume
        )
        rest = {k: v for k, v in call.kwargs.items() if k != "input"}
        pool = functools.partial(_pool, call.func, tuple(call.args[1:]), rest)
        return ProportionalPool.apply(x, pool, window_sum, self.stabilizer, call.entry)  # type: ignore[no-any-return]
