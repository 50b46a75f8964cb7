"""The autograd functions through which rules change the backward pass.

Each function is applied to one operation's output (or inputs) during the explaining
forward pass and replaces or scales the gradient in the backward pass. Each also writes
the operation's relevance bookkeeping into its :class:`~relprop.ledger.LedgerEntry`.
Nothing here holds global state: everything a backward step needs travels in the
``ctx`` of its own node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .ledger import LedgerEntry
from .ops import LinearOp
from .rules import (
    EpsilonRule,
    Hints,
    LinearRule,
    channel_constant_relevance,
    per_sample_dot,
    per_sample_sum,
    safe_divide,
    stabilize,
)


@dataclass
class FactorSpec:
    """An output-side factor ``g ⊙ y / stab(y)`` (LRP-0/ε/norm) and its bookkeeping.

    ``channel_constant`` is a per-channel constant term of ``y`` (bias) with ``channel_op``
    telling which dimension is the channel; ``full_constant`` a constant broadcastable to ``y``.
    """

    rule: EpsilonRule
    entry: LedgerEntry | None
    channel_constant: Tensor | None = None
    channel_op: LinearOp | None = None
    full_constant: Tensor | None = None
    #: Applied to the output of the ReLU that alone consumes the layer's output (see ProxyHolder):
    #: the incoming gradient is not yet masked by the ReLU there.
    after_relu: bool = False
    #: ``y`` may hold ±inf (an additive -inf attention mask) where the gradient is 0: those entries
    #: hand on and record nothing.
    finite_only: bool = False

    def constant_relevance(self, scaled_grad: Tensor) -> Tensor | None:
        if self.channel_constant is not None:
            assert self.channel_op is not None
            return channel_constant_relevance(scaled_grad, self.channel_constant, self.channel_op)
        if self.full_constant is not None:
            return per_sample_sum(scaled_grad * self.full_constant)
        return None


def record_factor(spec: FactorSpec, y: Tensor, grad: Tensor, scaled: Tensor) -> None:
    """Write the ledger of an output-factor rule: ``in = Σ (y - c) ⊙ g'``, ``out = Σ y ⊙ g``."""
    if spec.entry is None:
        return
    out = per_sample_dot(y, grad)
    kept = per_sample_dot(y, scaled)
    bias = spec.constant_relevance(scaled)
    spec.entry.add(out, kept if bias is None else kept - bias, bias)


class OutputFactor(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``y / stab(y)`` (LRP-ε on the layer below)."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, spec: FactorSpec) -> Tensor:
        ctx.spec = spec
        ctx.save_for_backward(y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        spec: FactorSpec = ctx.spec
        if spec.finite_only:
            finite = torch.isfinite(y)
            y = torch.where(finite, y, torch.zeros((), dtype=y.dtype, device=y.device))
            grad = torch.where(finite, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        scaled = spec.rule.output_factor(y, grad, nonnegative=spec.after_relu)
        record_factor(spec, y, grad, scaled)
        return scaled, None


class RectifyWithFactor(torch.autograd.Function):
    """In-place ReLU that alone consumes a layer's output, with that layer's output-side rule.

    Forward: ``a = relu(y)`` in place. Backward: LRP-ε's factor ``g ⊙ a/(a + ε)`` is zero
    where ``a = 0``, so it replaces the ReLU's own masking pass; for LRP-0 the mask is applied.
    Without a spec (a modified-weight rule below, whose arithmetic multiplies by ``a`` anyway)
    the gradient passes unchanged.
    """

    @staticmethod
    def forward(ctx: Any, y: Tensor, spec: FactorSpec | None) -> Tensor:
        ctx.mark_dirty(y)
        a = y.relu_()
        ctx.spec = spec
        if spec is not None:
            ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        spec: FactorSpec | None = ctx.spec
        if spec is None:
            return grad, None
        (a,) = ctx.saved_tensors
        if spec.rule.epsilon == 0.0:
            scaled = torch.ops.aten.threshold_backward(grad, a, 0)  # the ReLU's own mask, one fused pass
        else:
            scaled = spec.rule.output_factor(a, grad, nonnegative=True)
        record_factor(spec, a, grad, scaled)
        return scaled, None


class AffineWithFactor(torch.autograd.Function):
    """Per-channel affine map ``y = c ⊙ scale + shift`` (an eval-mode batch norm) with LRP-ε on the layer.

    It keeps only its input ``c`` (as the batch norm itself would) and recomputes ``y`` in the
    backward pass, instead of keeping ``y`` as well.
    """

    @staticmethod
    def forward(ctx: Any, c: Tensor, scale: Tensor, shift: Tensor, spec: FactorSpec) -> Tensor:
        ctx.spec = spec
        ctx.save_for_backward(c, scale, shift)
        return torch.addcmul(shift, c, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        c, scale, shift = ctx.saved_tensors
        spec: FactorSpec = ctx.spec
        y = torch.addcmul(shift, c, scale)
        scaled = spec.rule.output_factor(y, grad)
        record_factor(spec, y, grad, scaled)
        del y
        return scaled.mul_(scale) if scaled is not grad else grad * scale, None, None, None


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant (uniform product rule)."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


class Probe(torch.autograd.Function):
    """Identity in both directions; records ``Σ t ⊙ g`` at an operation's input or output.

    With ``finite_only`` entries where ``t`` is infinite count as 0: attention masks put ``-inf``
    where the gradient is exactly 0, and ``-inf · 0`` must not turn the ledger into NaN.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor, entry: LedgerEntry, side: str, finite_only: bool = False) -> Tensor:
        ctx.entry = entry
        ctx.side = side
        ctx.finite_only = finite_only
        ctx.save_for_backward(t)
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (t,) = ctx.saved_tensors
        if ctx.finite_only:
            t = torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype, device=t.device))
        value = per_sample_dot(t, grad)
        zero = torch.zeros_like(value)
        if ctx.side == "out":
            ctx.entry.add(value, zero)
        else:
            ctx.entry.add(zero, value)
        return grad, None, None, None


class ProxyHolder:
    """Receives the output of the ReLU that alone consumes a layer's output.

    Where ``y ≤ 0`` the ReLU blocks the gradient, and where ``y > 0`` it equals ``relu(y)``,
    so the rule can read ``relu(y)`` (kept alive by the ReLU's own backward anyway) instead of
    keeping ``y``: this saves one activation tensor per layer.
    """

    __slots__ = ("tensor",)

    def __init__(self) -> None:
        self.tensor: Tensor | None = None


@dataclass
class LinearBundle:
    """Everything the backward of a modified-weight rule needs for one layer call."""

    op: LinearOp
    rule: LinearRule
    prepared: dict[str, Any]
    entry: LedgerEntry | None
    proxy: ProxyHolder | None
    input_is_model_input: bool
    direct: DirectRelevance
    input_nonnegative: bool | None = None


class DirectRelevance:
    """Relevance that rules hand directly to the model input (z^B, flat, w² on the input layer)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total: Tensor | None = None

    def add(self, relevance: Tensor) -> None:
        r = relevance.detach()
        self.total = r if self.total is None else self.total + r


class ModifiedLinear(torch.autograd.Function):
    """A parametric linear layer whose backward applies a modified-weight LRP rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, bundle: LinearBundle) -> Tensor:
        weight, bias = bundle.prepared["weight"], bundle.prepared["bias"]
        assert weight is not None
        y = bundle.op.apply(x, weight, bias)
        ctx.bundle = bundle
        if bundle.proxy is None:
            ctx.save_for_backward(x, y)
        else:
            ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        bundle: LinearBundle = ctx.bundle
        if bundle.proxy is None:
            x, y = ctx.saved_tensors
        else:
            (x,) = ctx.saved_tensors
            y = bundle.proxy.tensor
            assert y is not None, "the ReLU after this layer did not run"
            # The graph (and this node's ctx) lives until the whole backward ends; drop the
            # reference now so the activation is freed as soon as autograd is done with it.
            bundle.proxy.tensor = None
        hints = Hints(output_after_relu=bundle.proxy is not None, input_nonnegative=bundle.input_nonnegative)
        result = bundle.rule.propagate(bundle.op, x, y, grad, bundle.prepared, hints)
        grad_x: Tensor | None
        if result.grad is not None:
            grad_x = result.grad
            relevance_in = per_sample_dot(x, grad_x) if bundle.entry is not None else None
        else:
            relevance = result.relevance
            assert relevance is not None
            if bundle.input_is_model_input:
                bundle.direct.add(relevance)
                grad_x = None
                relevance_in = per_sample_sum(relevance)
            else:
                # Hand the relevance on in gradient form; where x == 0 it cannot be carried,
                # and the ledger records the loss.
                grad_x = safe_divide(relevance, x)
                relevance_in = per_sample_dot(x, grad_x) if bundle.entry is not None else None
        if bundle.entry is not None:
            assert relevance_in is not None
            bundle.entry.add(per_sample_dot(y.contiguous(), grad.contiguous()), relevance_in, result.bias_relevance)
        return grad_x, None


def _pass_backward(ctx: Any, grad: Tensor) -> Tensor:
    """Backward of the pass-through rules: ``g_x = g ⊙ y / stab(x)``, booked in the ledger."""
    x, y = ctx.saved_tensors
    grad_x = grad * safe_divide(y, stabilize(x, ctx.stabilizer))
    if ctx.entry is not None:
        ctx.entry.add(per_sample_dot(y, grad), per_sample_dot(x, grad_x))
    return grad_x


class PassActivation(torch.autograd.Function):
    """An element-wise activation whose backward passes relevance unchanged: ``g_x = g ⊙ f(x)/stab(x)``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor], stabilizer: float, entry: LedgerEntry | None
    ) -> Tensor:
        y = fn(x)
        ctx.stabilizer = stabilizer
        ctx.entry = entry
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _pass_backward(ctx, grad), None, None, None


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


class PassComputed(torch.autograd.Function):
    """Pass-through rule for an element-wise module whose output ``y`` was computed natively.

    Forward returns ``y``; backward hands ``g ⊙ y / stab(x)`` to ``x`` (relevance passes unchanged
    element by element), as :class:`PassActivation` does for single torch functions.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, stabilizer: float, entry: LedgerEntry | None) -> Tensor:
        ctx.stabilizer = stabilizer
        ctx.entry = entry
        ctx.save_for_backward(x, y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        return _pass_backward(ctx, grad), None, None, None


class LayerNormIdentity(torch.autograd.Function):
    r"""LayerNorm with the standard deviation held constant (AttnLRP's identity rule on 1/σ).

    Forward: PyTorch's own kernel, ``y = (x - μ) · r ⊙ w + b`` with ``r = 1/σ``. Backward:
    ``g_x = r · (g_w - mean(g_w))`` with ``g_w = g ⊙ w``, the gradient of the affine map with ``r``
    fixed; ``Σ x ⊙ g_x = Σ (y - b) ⊙ g``, so the bias absorbs ``Σ b ⊙ g`` and nothing else is lost.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        normalized_shape: tuple[int, ...],
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        entry: LedgerEntry | None,
    ) -> Tensor:
        y, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
        ctx.entry = entry
        ctx.has_weight = weight is not None
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, rstd, mean, weight, bias)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:
        x, rstd, mean, weight, bias = ctx.saved_tensors
        scaled = grad * weight if ctx.has_weight else grad
        grad_x = (scaled - scaled.mean(ctx.dims, keepdim=True)).mul_(rstd)
        entry: LedgerEntry | None = ctx.entry
        if entry is not None:
            centred = (x - mean).mul_(rstd)
            normalised_out = per_sample_dot(centred.contiguous(), scaled.contiguous())
            bias_part = per_sample_sum(grad * bias) if ctx.has_bias else None
            out = normalised_out if bias_part is None else normalised_out + bias_part
            entry.add(out, per_sample_dot(x.contiguous(), grad_x.contiguous()), bias_part)
        return grad_x, None, None, None, None, None
