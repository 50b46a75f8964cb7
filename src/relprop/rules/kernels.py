"""Fused kernels for LRP-ε's output-side factor and its ledger sums, compiled on request.

In its eager form the factor ``s = g ⊙ y / stab(y)`` of one layer and the layer's ledger row
(``Σ y ⊙ g``, ``Σ y ⊙ s`` and the bias share ``Σ_c b_c Σ s_c``) take seven passes over
activation-sized tensors, each reading its operands from memory again. Compiled
(``torch.compile``, inductor), they are one or two loops that read ``y`` and ``g`` once and
write ``s``. This is what ``Explainer(..., compile=True)`` switches on: the values are the same
(the factor to the last bit; the sums up to the order of summation).

Compilation needs a C++ compiler on CPU (Triton on CUDA) and takes seconds on first use per
kind of kernel (shapes are dynamic, so a new layer size does not recompile; a new dtype or
device does). Where it fails, relprop warns once and computes everything eagerly.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "compile_failure",
    "fused_epsilon",
    "reset",
]

#: Why compilation failed in this process (then every call runs eagerly), or ``None``.
_failure: str | None = None


def compile_failure() -> str | None:
    """The error that made relprop fall back to its eager kernels in this process, if any."""
    return _failure


def reset() -> None:
    """Forget a compilation failure and the compiled kernels (tests; a fixed compiler)."""
    global _failure
    _failure = None
    _kernel.cache_clear()


# --- the kernels, written as plain tensor code for the compiler --------------------------------------
def _factor(y: Tensor, g: Tensor, epsilon: float, nonnegative: bool) -> Tensor:
    # |y| / (|y| + ε) is y / stab(y) with stab(y) = y + ε·sign(y): the same division, bit for bit.
    if nonnegative:
        return y / (y + epsilon) * g
    magnitude = y.abs()
    return magnitude / (magnitude + epsilon) * g


def _sums(
    y: Tensor, g: Tensor, s: Tensor, bias: Tensor | None, channel_last: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``Σ y ⊙ g``, ``Σ y ⊙ s`` and ``Σ_c b_c Σ s_c`` per sample; ``y`` is (N, C, L) or (N, L, C)."""
    out = (y * g).sum((1, 2))
    kept = (y * s).sum((1, 2))
    if bias is None:
        return out, kept, None
    per_channel = s.sum(1) if channel_last else s.sum(2)
    return out, kept, (per_channel * bias).sum(1)


# Each variant is its own function, so that each has its own cache of compiled graphs (the compiler
# keeps a bounded number of graphs per function); within one, only the dtype, the device, the
# layout of the channels and the presence of a bias select a graph.
def _relu_factor(y: Tensor, g: Tensor, epsilon: float) -> Tensor:
    return _factor(y, g, epsilon, True)


def _signed_factor(y: Tensor, g: Tensor, epsilon: float) -> Tensor:
    return _factor(y, g, epsilon, False)


def _relu_factor_booked(
    y: Tensor, g: Tensor, epsilon: float, bias: Tensor | None, channel_last: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    s = _factor(y, g, epsilon, True)
    return (s, *_sums(y, g, s, bias, channel_last))


def _signed_factor_booked(
    y: Tensor, g: Tensor, epsilon: float, bias: Tensor | None, channel_last: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    s = _factor(y, g, epsilon, False)
    return (s, *_sums(y, g, s, bias, channel_last))


_BODIES: dict[str, Callable[..., Any]] = {
    "relu": _relu_factor,
    "signed": _signed_factor,
    "relu-booked": _relu_factor_booked,
    "signed-booked": _signed_factor_booked,
}


def _compile(body: Callable[..., Any]) -> Callable[..., Any]:
    # Dynamic shapes: one graph serves every layer size (sizes 0 and 1 are still specialised).
    return torch.compile(body, dynamic=True)  # type: ignore[no-any-return]


@functools.cache
def _kernel(name: str) -> Callable[..., Any]:
    return _compile(_BODIES[name])


def _run(name: str, *args: Any) -> Any:
    global _failure
    if _failure is not None:
        return None
    try:
        return _kernel(name)(*args)
    except Exception as error:  # no compiler, an unsupported platform or backend: compute eagerly
        first_line = next(iter(str(error).strip().splitlines()), "")
        _failure = f"{type(error).__name__}: {first_line}"
        warnings.warn(
            f"relprop could not compile its fused kernels ({_failure[:300]}); it computes them eagerly instead "
            "(the same values, more slowly). Pass compile=False to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _as_channels(t: Tensor, channel_last: bool) -> Tensor:
    """``t`` as (N, C, L) (channels after the batch) or (N, L, C) (channels last), without copying."""
    n = t.shape[0]
    if channel_last:
        return t.view(n, -1, t.shape[-1])
    return t.view(n, t.shape[1], -1)  # (callers check t.dim() ≥ 2)


#: Fewer values than this run eagerly: a compiled call costs about 40 µs of guards and dispatch,
#: more than the eager passes over a transformer's token activations (MiniLM at 2 × 8 tokens ran
#: 1.90× a gradient compiled against 1.70× eager); a ResNet layer's activations are 10–100× larger.
_MIN_VALUES = 1 << 17


def _fits(*tensors: Tensor) -> bool:
    first = tensors[0]
    return (
        first.dim() >= 2
        and first.numel() >= _MIN_VALUES
        and first.is_floating_point()
        and all(t.is_contiguous() and t.shape == first.shape for t in tensors)
    )


def fused_epsilon(
    y: Tensor, grad: Tensor, epsilon: float, bias: Tensor | None, *, nonnegative: bool, channel_last: bool, ledger: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None] | None:
    """``(s, Σ y⊙g, Σ y⊙s, bias share)`` per sample in one compiled kernel; ``None``: compute eagerly.

    ``bias`` is a per-channel constant of ``y`` (channels in dimension 1, or last with
    ``channel_last``); the sums are ``None`` without ``ledger``.
    """
    if not _fits(y, grad):
        return None
    y3, g3 = _as_channels(y, channel_last), _as_channels(grad, channel_last)
    variant = "relu" if nonnegative else "signed"
    if not ledger:
        s = _run(variant, y3, g3, float(epsilon))
        return None if s is None else (s.view(y.shape), None, None, None)
    bias = None if bias is None else bias.to(y.dtype)
    result = _run(variant + "-booked", y3, g3, float(epsilon), bias, channel_last)
    if result is None:
        return None
    s, out, kept, share = result
    return s.view(y.shape), out, kept, share
