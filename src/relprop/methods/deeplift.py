r"""DeepLIFT (Shrikumar et al. 2017): explain the difference from a reference input.

Every tensor ``t`` of the forward pass on the input ``x`` has a counterpart ``t̄`` on the
reference ``x̄`` and a difference :math:`\Delta t = t - \bar t`. DeepLIFT hands each input
feature a contribution :math:`C_i = \Delta x_i\, m_i` such that *summation-to-delta* holds,

.. math::

    \sum_i C_i = s(x) - s(\bar x),

where the multipliers ``m`` follow the chain rule like a gradient but pass every nonlinearity
``y = f(z)`` with a ratio of differences instead of a derivative:

* **Rescale**: :math:`m = \Delta y / \Delta z` (the derivative where :math:`|\Delta z| < \epsilon`).
  Max pooling hands each window's :math:`\Delta y` to the input that decided it: the winner
  on the input if :math:`y \ge \bar y`, else the winner on the reference (as Captum does).
* **RevealCancel**: the difference at the nonlinearity's input is split into its positive
  and negative contributions :math:`\Delta z = \Delta z^+ + \Delta z^-` (the terms
  :math:`w_j \Delta a_j` of the layer below, by sign), and the two parts share
  :math:`\Delta y` like two players of a Shapley value:

  .. math::

      \Delta y^+ = \tfrac12\bigl(f(\bar z + \Delta z^+) - f(\bar z)\bigr)
                 + \tfrac12\bigl(f(\bar z + \Delta z^- + \Delta z^+) - f(\bar z + \Delta z^-)\bigr),

  and symmetrically :math:`\Delta y^-`, with multipliers :math:`m^\pm = \Delta y^\pm / \Delta z^\pm`.
  Positive and negative contributions then travel down separately: a layer ``W`` hands
  :math:`m^+` to the inputs whose term :math:`w_j \Delta a_j` was positive and :math:`m^-` to the
  others (half of each where :math:`\Delta a_j = 0`). Where rescale gives all credit to one
  input — ``min(a, b) = a - max(0, a - b)`` from ``(0, 0)`` to ``(3, 1)`` credits ``b`` alone —
  RevealCancel shares it (0.5 each). For max pooling the positive and negative differences in
  a window are the two players, and each shares its part in proportion to its difference.

Implementation: the model runs once on ``[x; x̄]`` concatenated along the batch, through the
LRP engine with :class:`~relprop.rules.FunctionRule` rules on the nonlinearities that pair the
two halves; linear layers, batch norm and residual sums keep their ordinary gradient, which is
already the DeepLIFT linear rule. For RevealCancel the layers additionally carry
:math:`\Delta^\pm` to the next nonlinearity (through convolutions, dense layers, batch norm,
sums and average pooling; other linear operations such as reshapes and concatenations hand
on the total difference, which is then split by sign). Operations without a DeepLIFT rule
(products of two signals, operations relprop does not know) use their gradient, as in Captum;
summation-to-delta then holds only approximately, and ``info["completeness_gap"]`` says by
how much.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import match
from ..composites import Composite
from ..engine import Explainer, guard
from ..errors import ConfigurationError, InputError, UnsupportedOperationError
from ..explanation import Explanation
from ..kinds import ACTIVATION_FUNCS, CONV_FUNCS, CONV_TRANSPOSE_FUNCS, KINDS, RELU_FUNCS
from ..ops import LinearOp, describe_function
from ..outputs import select_output
from ..rules import FunctionRule, per_sample_sum
from ..rules.base import call_with
from ..rules.difference import paired_halves
from . import _common, register

__all__ = [
    "RULES",
    "DifferencePartsRule",
    "RescaleMaxPoolRule",
    "RescaleRule",
    "RevealCancelMaxPoolRule",
    "RevealCancelRule",
    "deeplift",
    "deeplift_composite",
]

RULES = ("rescale", "reveal-cancel")
_RULE_ALIASES = {"revealcancel": "reveal-cancel", "reveal_cancel": "reveal-cancel"}
_ADD_NAMES = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_SUB_NAMES = {"sub", "subtract", "__sub__", "__isub__", "sub_"}


# -- pairing the two halves of the batch ----------------------------------------------------------
def _halves(t: Tensor, func: Callable[..., Any]) -> int:
    """The number of inputs ``n`` of a ``[x; x̄]`` batch of ``2n``, checked."""
    return paired_halves(t, "DeepLIFT", describe_function(func))


def _shapley_split(
    fn: Callable[[Tensor], Tensor], reference: Tensor, y: Tensor, n: int, positive: Tensor, negative: Tensor
) -> tuple[Tensor, Tensor]:
    r"""RevealCancel's output difference split between the positive and the negative part.

    The two parts are the players of a two-player game; each gets its Shapley value, the mean of
    its effect alone and its effect after the other:
    :math:`\Delta y^+ = \tfrac12[(f(\bar z + \Delta^+) - f(\bar z)) + (f(z) - f(\bar z + \Delta^-))]`,
    and :math:`\Delta y^-` likewise. ``y`` holds :math:`f` of the inputs (first ``n`` rows) and of
    the references (the rest), so that :math:`\Delta y^+ + \Delta y^- = f(z) - f(\bar z)`.
    """
    y_in, y_ref = y[:n], y[n:]
    f_pos, f_neg = fn(reference + positive), fn(reference + negative)
    dy_pos = 0.5 * ((f_pos - y_ref) + (y_in - f_neg))
    dy_neg = 0.5 * ((f_neg - y_ref) + (y_in - f_pos))
    return dy_pos, dy_neg


def _safe_ratio(numerator: Tensor, denominator: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``numerator / denominator`` and the mask where ``|denominator| < eps`` (ratio 0 there)."""
    small = denominator.abs() < eps
    ratio = torch.where(small, torch.zeros_like(numerator), numerator / torch.where(small, 1.0, denominator))
    return ratio, small


def _local_gradient(fn: Callable[[Tensor], Tensor], z: Tensor, grad: Tensor) -> Tensor:
    """``grad ⊙ f'(z)``: the ordinary backward of an element-wise function (the fallback multiplier)."""
    with torch.enable_grad():
        probe = z.detach().requires_grad_(True)
        (result,) = torch.autograd.grad(fn(probe), probe, grad)
    return result


def _by_sign(delta: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """The multiplier of an atom with difference ``delta``: positive part's, negative part's, or half each at 0."""
    return torch.where(delta > 0, positive, torch.where(delta < 0, negative, 0.5 * (positive + negative)))


def _pad_reference_half(grad_x: Tensor) -> Tensor:
    """The gradient of the ``[x; x̄]`` batch: the inputs' multipliers, nothing for the references."""
    return torch.cat([grad_x, torch.zeros_like(grad_x)])


class _SignSplit(torch.autograd.Function):
    """``Δ → (Δ⁺, Δ⁻)``; backward hands each atom its part's multiplier (half of each where Δ = 0)."""

    @staticmethod
    def forward(ctx: Any, delta: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(delta)
        return delta.clamp(min=0), delta.clamp(max=0)

    @staticmethod
    def backward(ctx: Any, grad_pos: Tensor, grad_neg: Tensor) -> Tensor:
        (delta,) = ctx.saved_tensors
        return _by_sign(delta, grad_pos, grad_neg)


class _Parts:
    """The positive and negative parts ``Δ⁺, Δ⁻`` of tensors' differences within one DeepLIFT call."""

    def __init__(self) -> None:
        self._parts: dict[int, tuple[weakref.ReferenceType[Tensor], int, Tensor, Tensor]] = {}

    def put(self, t: Tensor, positive: Tensor, negative: Tensor) -> None:
        key = id(t)
        self._parts[key] = (weakref.ref(t), t._version, positive, negative)
        weakref.finalize(t, self._parts.pop, key, None)

    def get(self, t: Tensor) -> tuple[Tensor, Tensor] | None:
        entry = self._parts.get(id(t))
        if entry is None or entry[0]() is not t or entry[1] != t._version:
            return None
        return entry[2], entry[3]

    def of(self, t: Tensor, func: Callable[..., Any]) -> tuple[Tensor, Tensor]:
        """The parts of ``t``: carried from the layer that made it, or its own difference split by sign."""
        found = self.get(t)
        if found is not None:
            return found
        n = _halves(t, func)
        return _SignSplit.apply(t[:n] - t[n:])  # type: ignore[no-any-return]


# -- element-wise nonlinearities -------------------------------------------------------------------
def _elementwise(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Any]:
    """The input of an element-wise activation call and the activation as a function of one tensor."""
    func, args, kwargs = _common.out_of_place(func, args, kwargs)
    z = args[0] if args else kwargs["input"]
    if func in RELU_FUNCS:
        return z, torch.relu
    fn = ACTIVATION_FUNCS[func][0]
    rest = tuple(args[1:])
    kw = {k: v for k, v in kwargs.items() if k != "input"}
    return z, functools.partial(call_with, fn, rest, kw)


class _Rescale(torch.autograd.Function):
    """``y = f(z)`` on ``[z; z̄]``; backward: ``g_z = g ⊙ Δy/Δz`` for the inputs (``g ⊙ f'(z)`` where Δz ≈ 0)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, fn: Callable[[Tensor], Tensor], eps: float, func: Any) -> Tensor:
        n = _halves(z, func)
        y = fn(z)
        multiplier, small = _safe_ratio(y[:n] - y[n:], z[:n] - z[n:], eps)
        ctx.fn = fn
        ctx.any_small = bool(small.any())
        ctx.save_for_backward(multiplier, small, z[:n] if ctx.any_small else None)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        multiplier, small, z_inputs = ctx.saved_tensors
        n = multiplier.shape[0]
        grad_x = grad[:n] * multiplier
        if ctx.any_small:
            grad_x = torch.where(small, _local_gradient(ctx.fn, z_inputs, grad[:n]), grad_x)
        return _pad_reference_half(grad_x), None, None, None


class _RevealCancel(torch.autograd.Function):
    """``y = f(z)`` on ``[z; z̄]``; backward hands ``g ⊙ m⁺`` to ``Δz⁺`` and ``g ⊙ m⁻`` to ``Δz⁻``.

    With ``positive``/``negative`` given, the gradient goes to those parts (carried from the layer
    below); without, ``Δz`` itself is split by sign and the gradient goes to ``z``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        positive: Tensor | None,
        negative: Tensor | None,
        fn: Callable[[Tensor], Tensor],
        eps: float,
        func: Any,
    ) -> Tensor:
        n = _halves(z, func)
        y = fn(z)
        delta = None
        if positive is None or negative is None:
            delta = z[:n] - z[n:]
            positive, negative = delta.clamp(min=0), delta.clamp(max=0)
        dy_pos, dy_neg = _shapley_split(fn, z[n:], y, n, positive, negative)
        m_pos, small_pos = _safe_ratio(dy_pos, positive, eps)
        m_neg, small_neg = _safe_ratio(dy_neg, negative, eps)
        ctx.fn = fn
        ctx.atomic = delta is not None
        ctx.any_small = bool(small_pos.any() or small_neg.any())
        ctx.save_for_backward(m_pos, m_neg, small_pos, small_neg, delta, z[:n] if ctx.any_small else None)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None, None]:
        m_pos, m_neg, small_pos, small_neg, delta, z_inputs = ctx.saved_tensors
        n = m_pos.shape[0]
        g = grad[:n]
        g_pos, g_neg = g * m_pos, g * m_neg
        if ctx.any_small:
            # Where a part is (nearly) empty its multiplier is undefined: use the derivative, as rescale does.
            local = _local_gradient(ctx.fn, z_inputs, g)
            g_pos = torch.where(small_pos, local, g_pos)
            g_neg = torch.where(small_neg, local, g_neg)
        if ctx.atomic:
            return _pad_reference_half(_by_sign(delta, g_pos, g_neg)), None, None, None, None, None
        return None, g_pos, g_neg, None, None, None


class RescaleRule(FunctionRule):
    r"""DeepLIFT's rescale rule on element-wise nonlinearities: :math:`m = \Delta y / \Delta z`.

    Parameters
    ----------
    eps
        Below this :math:`|\Delta z|` the derivative is used instead of the ratio.
    """

    applies_to = ("relu", "activation")
    label = "deeplift-rescale"

    def __init__(self, eps: float = 1e-10) -> None:
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        z, fn = _elementwise(func, args, kwargs)
        return _Rescale.apply(z, fn, self.eps, func)


class RevealCancelRule(FunctionRule):
    r"""DeepLIFT's RevealCancel rule on element-wise nonlinearities (see :mod:`relprop.methods.deeplift`).

    Parameters
    ----------
    parts
        The per-call store of :math:`\Delta^\pm` shared with :class:`DifferencePartsRule`.
    eps
        Below this :math:`|\Delta z^\pm|` the derivative is used instead of the ratio.
    """

    applies_to = ("relu", "activation")
    label = "deeplift-reveal-cancel"

    def __init__(self, parts: _Parts, eps: float = 1e-10) -> None:
        self.parts = parts
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        z, fn = _elementwise(func, args, kwargs)
        found = self.parts.get(z)
        positive, negative = (None, None) if found is None else found
        return _RevealCancel.apply(z, positive, negative, fn, self.eps, func)


# -- linear operations carrying Δ⁺ and Δ⁻ (RevealCancel) -------------------------------------------
class DifferencePartsRule(FunctionRule):
    r"""Computes a linear operation natively and carries the parts :math:`\Delta^\pm` of its output.

    For ``y = W a + b`` with input parts :math:`\Delta a^\pm`:
    :math:`\Delta y^+ = W^+ \Delta a^+ + W^- \Delta a^-` and
    :math:`\Delta y^- = W^- \Delta a^+ + W^+ \Delta a^-` — the sums of the positive and the
    negative terms :math:`w_j \Delta a_j` (the bias cancels in the difference). Batch norm is a
    per-channel ``W``; sums add their operands' parts (a subtracted operand swaps them); average
    pooling has positive weights. The gradient of ``y`` itself stays the ordinary one.
    """

    applies_to = ("layer", "batchnorm", "add", "avgpool")
    label = "deeplift-parts"

    def __init__(self, parts: _Parts) -> None:
        self.parts = parts

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        func, args, kwargs = _common.out_of_place(func, args, kwargs)
        y = func(*args, **kwargs)
        if func in CONV_FUNCS or func in CONV_TRANSPOSE_FUNCS or func is F.linear:
            parts = self._layer(func, args, kwargs)
        elif func is F.batch_norm:
            parts = self._batchnorm(args, kwargs)
        elif getattr(func, "__name__", "") in _ADD_NAMES | _SUB_NAMES | {"__rsub__"}:
            parts = self._sum(func, args, kwargs, y)
        else:  # average pooling: positive weights keep the parts apart
            x = args[0] if args else kwargs["input"]
            positive, negative = self.parts.of(x, func)
            rest_args, rest_kwargs = tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "input"}
            parts = func(positive, *rest_args, **rest_kwargs), func(negative, *rest_args, **rest_kwargs)
        if parts is not None:
            self.parts.put(y, *parts)
        return y

    def _layer(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        kind = "linear" if func is F.linear else ("conv" if func in CONV_FUNCS else "conv_transpose")
        bound = KINDS[kind].bind(func, args, kwargs)
        op = LinearOp.from_call(kind, func, bound)
        positive, negative = self.parts.of(bound["input"], func)
        weight = bound["weight"].detach()
        n = positive.shape[0]
        both = torch.cat([positive, negative])
        through_pos = op.apply(both, weight.clamp(min=0))
        through_neg = op.apply(both, weight.clamp(max=0))
        return through_pos[:n] + through_neg[n:], through_neg[:n] + through_pos[n:]

    def _batchnorm(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        bound = KINDS["batchnorm"].bind(F.batch_norm, args, kwargs)
        x = bound["input"]
        scale = torch.rsqrt(bound["running_var"].detach() + bound["eps"])
        if bound["weight"] is not None:
            scale = scale * bound["weight"].detach()
        scale = scale.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        positive, negative = self.parts.of(x, F.batch_norm)
        up, down = scale.clamp(min=0), scale.clamp(max=0)
        return up * positive + down * negative, down * positive + up * negative

    def _sum(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], y: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        name = func.__name__
        first = args[0]
        second = args[1] if len(args) > 1 else kwargs.get("other")
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        if name == "__rsub__":
            terms = [(first, -1.0), (second, 1.0)]
        else:
            terms = [(first, 1.0), (second, -float(alpha) if name in _SUB_NAMES else float(alpha))]
        n = y.shape[0] // 2
        positive: Tensor | float = 0.0
        negative: Tensor | float = 0.0
        for operand, coefficient in terms:
            # Operands without the paired batch dimension (biases, constants) have no difference.
            if not (isinstance(operand, Tensor) and operand.dim() == y.dim() and operand.shape[0] == y.shape[0]):
                continue
            pos, neg = self.parts.of(operand, func)
            if coefficient < 0:
                pos, neg = neg, pos
            positive = positive + coefficient * pos
            negative = negative + coefficient * neg
        if not isinstance(positive, Tensor) or not isinstance(negative, Tensor):
            return None
        shape = y[:n].shape
        return torch.broadcast_to(positive, shape), torch.broadcast_to(negative, shape)


# -- max pooling -----------------------------------------------------------------------------------
_POOL_ARGUMENTS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ADAPTIVE_ARGUMENTS = ("input", "output_size", "return_indices")


def _bind_pool(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    adaptive = "adaptive" in getattr(func, "__name__", "")
    names = _ADAPTIVE_ARGUMENTS if adaptive else _POOL_ARGUMENTS
    bound: dict[str, Any] = {"return_indices": False}
    if not adaptive:
        bound.update({"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False})
    bound.update(dict(zip(names, args, strict=False)))
    bound.update(kwargs)
    bound["adaptive"] = adaptive
    return bound


def _pool_call(func: Callable[..., Any], bound: dict[str, Any], with_indices: bool, t: Tensor) -> Any:
    if bound["adaptive"]:
        return func(t, bound["output_size"], return_indices=with_indices)
    return func(
        t,
        bound["kernel_size"],
        bound["stride"],
        bound["padding"],
        bound["dilation"],
        ceil_mode=bound["ceil_mode"],
        return_indices=with_indices,
    )


def _with_indices(values: Tensor, func: Callable[..., Any], bound: dict[str, Any], x: Tensor) -> Any:
    if not bound["return_indices"]:
        return values
    with torch.no_grad():
        _, indices = _pool_call(func, bound, True, x.detach())
    return values, indices


def _scatter_to_inputs(like: Tensor, indices: Tensor, values: Tensor) -> Tensor:
    """Add each pooled value to the input position its window's index names (per sample and channel)."""
    out = torch.zeros(*like.shape[:2], like[0, 0].numel(), dtype=values.dtype, device=values.device)
    out.scatter_add_(2, indices.flatten(2), values.flatten(2))
    return out.view_as(like)


class _RescalePool(torch.autograd.Function):
    """Max pooling on ``[x; x̄]``; backward: each window's ``Δy`` to the input that decided it, over ``Δx``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, pool: Callable[[Tensor], tuple[Tensor, Tensor]], eps: float, func: Any) -> Tensor:
        n = _halves(x, func)
        y, indices = pool(x)
        y_in, y_ref = y[:n], y[n:]
        top = torch.maximum(y_in, y_ref)
        delta = x[:n] - x[n:]
        ctx.save_for_backward(indices[:n], indices[n:], top - y_ref, y_in - top, delta)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        winner_in, winner_ref, share_in, share_ref, delta = ctx.saved_tensors
        g = grad[: delta.shape[0]]
        # y ≥ ȳ: Δy = y − ȳ goes to the input's winner; y < ȳ: Δy goes to the reference's winner.
        handed = _scatter_to_inputs(delta, winner_in, g * share_in) + _scatter_to_inputs(
            delta, winner_ref, g * share_ref
        )
        multiplier, small = _safe_ratio(handed, delta, ctx.eps)
        plain = _scatter_to_inputs(delta, winner_in, g)  # the ordinary max-pool gradient, where Δx ≈ 0
        return _pad_reference_half(torch.where(small, plain, multiplier)), None, None, None


class RescaleMaxPoolRule(FunctionRule):
    r"""DeepLIFT's rescale rule on max pooling (Captum's): a window's :math:`\Delta y` goes to the input
    that won the max on the input (if :math:`y \ge \bar y`) or on the reference, divided by its :math:`\Delta x`.

    Parameters
    ----------
    eps
        Below this :math:`|\Delta x|` the ordinary gradient is used instead of the ratio.
    """

    applies_to = ("maxpool",)
    label = "deeplift-rescale-pool"

    def __init__(self, eps: float = 1e-10) -> None:
        self.eps = float(eps)

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = _bind_pool(func, args, kwargs)
        x = bound["input"]
        if x.dim() < 3:
            raise UnsupportedOperationError(
                f"DeepLIFT needs batched max pooling inputs (N, C, ...), but {describe_function(func)} received shape "
                f"{tuple(x.shape)}."
            )
        pool = functools.partial(_pool_call, func, bound, True)
        values = _RescalePool.apply(x, pool, self.eps, func)
        return _with_indices(values, func, bound, x)


def _window_sum(bound: dict[str, Any], t: Tensor) -> Tensor:
    """Sum of ``t`` over each max-pooling window (zero padding; the padding is no input)."""
    dims = t.dim() - 2
    if dims == 1:
        return _window_sum(_as_2d(bound), t.unsqueeze(-1)).squeeze(-1)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    kernel = bound["kernel_size"]
    stride = bound["stride"] if bound["stride"] else kernel
    return pool(t, kernel, stride, bound["padding"], bound["ceil_mode"], True, divisor_override=1)


def _as_2d(bound: dict[str, Any]) -> dict[str, Any]:
    def pair(v: Any, last: int) -> tuple[int, int]:
        v = v[0] if isinstance(v, (tuple, list)) else v
        return (int(v), last)

    kernel = pair(bound["kernel_size"], 1)
    stride = pair(bound["stride"], 1) if bound["stride"] else kernel
    return {**bound, "kernel_size": kernel, "stride": stride, "padding": pair(bound["padding"], 0)}


def _window_sum_transpose(bound: dict[str, Any], like: Tensor, grad: Tensor) -> Tensor:
    """Each input's sum of ``grad`` over the windows that contain it (the transpose of the window sum)."""
    with torch.enable_grad():
        probe = torch.zeros_like(like, requires_grad=True)
        (result,) = torch.autograd.grad(_window_sum(bound, probe), probe, grad)
    return result


class _RevealCancelPool(torch.autograd.Function):
    """Max pooling on ``[x; x̄]``: per window, ``Δy`` shared between the positive and the negative differences."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        positive: Tensor | None,
        negative: Tensor | None,
        pool: Callable[[Tensor], Tensor],
        bound: dict[str, Any],
        eps: float,
        func: Any,
    ) -> Tensor:
        n = _halves(x, func)
        y = pool(x)
        delta = None
        if positive is None or negative is None:
            delta = x[:n] - x[n:]
            positive, negative = delta.clamp(min=0), delta.clamp(max=0)
        dy_pos, dy_neg = _shapley_split(pool, x[n:], y, n, positive, negative)
        # Within a part, each input shares in proportion to its difference (as a layer's terms do).
        m_pos, _ = _safe_ratio(dy_pos, _window_sum(bound, positive), eps)
        m_neg, _ = _safe_ratio(dy_neg, _window_sum(bound, negative), eps)
        ctx.bound = bound
        ctx.atomic = delta is not None
        ctx.save_for_backward(m_pos, m_neg, delta, x[n:])
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None, None, None]:
        m_pos, m_neg, delta, x_ref = ctx.saved_tensors
        g = grad[: m_pos.shape[0]]
        g_pos = _window_sum_transpose(ctx.bound, x_ref, g * m_pos)
        g_neg = _window_sum_transpose(ctx.bound, x_ref, g * m_neg)
        if ctx.atomic:
            return _pad_reference_half(_by_sign(delta, g_pos, g_neg)), None, None, None, None, None, None
        return None, g_pos, g_neg, None, None, None, None


class RevealCancelMaxPoolRule(FunctionRule):
    r"""DeepLIFT RevealCancel on max pooling: per window, :math:`\Delta y^\pm` by the two-player Shapley
    split between the positive and the negative input differences, shared within each part in
    proportion to the differences.

    Parameters
    ----------
    parts
        The per-call store of :math:`\Delta^\pm` shared with :class:`DifferencePartsRule`.
    eps
        Window sums of a part below this count as empty.
    """

    applies_to = ("maxpool",)
    label = "deeplift-reveal-cancel-pool"

    def __init__(self, parts: _Parts, eps: float = 1e-10) -> None:
        self.parts = parts
        self.eps = float(eps)

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = _bind_pool(func, args, kwargs)
        x = bound["input"]
        dilation = bound.get("dilation", 1)
        if bound["adaptive"] or any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else [dilation])):
            raise UnsupportedOperationError(
                f"DeepLIFT RevealCancel supports max pooling with fixed windows and dilation 1, not "
                f"{describe_function(func)} with these arguments; use rule='rescale'."
            )
        if x.dim() < 3:
            raise UnsupportedOperationError(
                f"DeepLIFT needs batched max pooling inputs (N, C, ...), but {describe_function(func)} received shape "
                f"{tuple(x.shape)}."
            )
        found = self.parts.get(x)
        positive, negative = (None, None) if found is None else found
        pool = functools.partial(_pool_call, func, bound, False)
        values = _RevealCancelPool.apply(x, positive, negative, pool, bound, self.eps, func)
        return _with_indices(values, func, bound, x)


# -- the method ------------------------------------------------------------------------------------
def deeplift_composite(rule: str = "rescale", eps: float = 1e-10) -> Composite:
    """The composite that computes DeepLIFT multipliers with ``rule`` (``"rescale"`` or ``"reveal-cancel"``)."""
    name = _RULE_ALIASES.get(rule, rule)
    if name not in RULES:
        raise ConfigurationError(f"deeplift rule must be one of {', '.join(RULES)}, got {rule!r}.")
    elementwise = match.kind("relu", "activation")
    if name == "rescale":
        entries: list[tuple[Any, FunctionRule]] = [
            (elementwise, RescaleRule(eps)),
            (match.kind("maxpool"), RescaleMaxPoolRule(eps)),
        ]
    else:
        parts = _Parts()
        entries = [
            (elementwise, RevealCancelRule(parts, eps)),
            (match.kind("maxpool"), RevealCancelMaxPoolRule(parts, eps)),
            (match.kind("layer", "batchnorm", "add", "avgpool"), DifferencePartsRule(parts)),
        ]
    return _common.plain_gradient_composite(entries, f"deeplift-{name}")


class _Paired(nn.Module):
    """Runs the model on ``[x; x̄]`` and returns the scores of ``x`` (those of ``x̄`` are kept aside).

    The model is registered under the empty name, so module paths in rule tables and error
    messages are the model's own. Only this wrapper is new; the model is not touched.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._modules[""] = model
        self.last_output: Tensor | None = None

    def forward(self, paired: Tensor) -> Tensor:
        out = select_output(self._modules[""](paired))
        self.last_output = out
        # While the plan is recorded on a single sample there is no reference half.
        return out[: (out.shape[0] + 1) // 2]


class PairedRun:
    """An explainer of ``[x; x̄]`` through :class:`_Paired`, reusable across calls (one recorded plan).

    DeepLIFT and reference-aware LRP call it once per batch; keeping it (as
    :class:`relprop.Explainer` does for a reference) records the plan and caches the modified
    weights once instead of on every call.
    """

    def __init__(self, model: nn.Module, composite: Composite) -> None:
        self.model = model
        self.paired = _Paired(model)
        self.explainer = Explainer(self.paired, composite, canonize=False, ledger=False, nonfinite="report")

    def __call__(self, x: Tensor, ref: Tensor, target: Any) -> tuple[Explanation, Tensor]:
        """The explanation of the ``x`` half and the reference's score ``s(x̄)`` per sample.

        The target is resolved at ``x``. A torch error of the model's forward pass is reported of
        the user's model and inputs, not of the pair the call runs.
        """
        try:
            result = self.explainer(torch.cat([x, ref]), target)
        except InputError as exc:
            if exc.__cause__ is None:
                raise
            raise guard.model_failure(self.model, tuple(x.shape), exc.__cause__) from exc.__cause__
        assert self.paired.last_output is not None
        head = _common.resolve_target(result.output, target)
        reference_output = self.paired.last_output.detach()[x.shape[0] :]
        self.paired.last_output = None
        return result, per_sample_sum(reference_output * head.grad.to(reference_output.dtype))


def run_paired(
    model: nn.Module, composite: Composite, x: Tensor, ref: Tensor, target: Any
) -> tuple[Explanation, Tensor]:
    """One call of a fresh :class:`PairedRun` (see there)."""
    return PairedRun(model, composite)(x, ref, target)


@register("deeplift", "DeepLIFT against a reference input, with the rescale or the RevealCancel rule")
def deeplift(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    *,
    reference: Any = "zeros",
    rule: str = "rescale",
    eps: float = 1e-10,
    blur_sigma: float = 5.0,
) -> Explanation:
    r"""DeepLIFT: contributions :math:`C = (x - \bar x) \odot m` with :math:`\sum C = s(x) - s(\bar x)`.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.explain`; the target is resolved at ``inputs``.
    reference
        The reference input ``x̄``: ``"zeros"``, ``"blurred"``, ``"mean"``, a number, or a
        tensor shaped like the inputs or like one input.
    rule
        ``"rescale"`` or ``"reveal-cancel"``.
    eps
        Differences below this use the derivative instead of a ratio.
    blur_sigma
        Standard deviation in pixels of the ``"blurred"`` reference.

    Returns
    -------
    Explanation
        ``score`` is ``s(x) - s(x̄)``; ``info`` holds ``completeness_gap`` (``score - Σ C``, the
        summation-to-delta error), ``reference``, ``reference_score``, ``input_score``,
        ``input_gradient`` (the multipliers ``m``) and ``rule``.
    """
    composite = deeplift_composite(rule, eps)
    x = inputs  # checked, on the model's device and dtype: see methods.register
    ref = _common.make_baseline(reference, x, "reference", blur_sigma)
    result, reference_score = run_paired(model, composite, x, ref, target)
    multipliers = result.info["input_gradient"][: x.shape[0]]
    contributions = (x - ref) * multipliers
    input_score = result.ledger.score
    explained = input_score - reference_score
    info = {
        "method": "deeplift",
        "rule": _RULE_ALIASES.get(rule, rule),
        "completeness_gap": explained - per_sample_sum(contributions),
        "reference": ref,
        "reference_score": reference_score,
        "input_score": input_score,
        "input_gradient": multipliers,
    }
    return _common.explanation(contributions, result.output, result.target, explained, info)
