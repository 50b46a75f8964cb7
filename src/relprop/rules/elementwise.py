r"""Rules for element-wise activations: relevance passes through unchanged, element by element.

:class:`PassRule` is the default for every activation. For ReLU, leaky ReLU and PReLU (piecewise
linear through 0) ``f(x)/x = f'(x)``, so pass-through *is* the ordinary gradient and runs with
PyTorch's own kernels. For the others the gradient is replaced by ``f(x) / stab(x)``.

:class:`FusedRectify` is what a ReLU gets when a plan pass fuses it with the layer before it: the
ReLU runs in place on the layer's output (which nothing else reads) and carries that layer's
output-side step, so the layer's output need not be kept for the backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..kinds import PIECEWISE_LINEAR, out_of_place
from ..ledger import LedgerEntry
from ..params import NON_NEGATIVE, Spec
from .base import Rule, call_with, per_sample_dot, register, safe_divide, stabilize
from .linear import FactorSpec, ProxyHolder, epsilon_step, record_factor

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["FusedRectify", "PassRule"]


def _pass_backward(ctx: Any, grad: Tensor) -> Tensor:
    """Backward of the pass-through rules: ``g_x = g ⊙ y / stab(x)``, booked in the ledger."""
    x, y = ctx.saved_tensors
    if ctx.stabilizer > 0.0:
        # |x| + ε > 0: the denominator has no zero, so divide in its own buffer (two passes, not six).
        denominator = stabilize(x, ctx.stabilizer)
        grad_x = torch.div(y, denominator, out=denominator).mul_(grad)
    else:
        grad_x = grad * safe_divide(y, x)
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


@register
class PassRule(Rule):
    r"""Pass-through for element-wise activations: :math:`R_{in} = R_{out}` element by element.

    What each activation gets: for ReLU, leaky ReLU and PReLU (piecewise linear through 0)
    ``f(x)/x = f'(x)``, so this *is* the ordinary gradient and runs with PyTorch's own
    kernels. For GELU, SiLU, Tanh, ELU, ReLU6/hardtanh, softplus and the others the gradient
    is replaced by ``f(x) / stab(x)``; at ``x = 0`` an activation with ``f(0) ≠ 0``
    (sigmoid, softplus) cannot hand relevance to its input, and the ledger records that
    loss. Sigmoid-like *gates* are better treated by :class:`~relprop.rules.ProductRule`.
    Element-wise modules written with several torch calls (see
    :data:`relprop.ops.ELEMENTWISE_MODULE_TYPES`) are explained as one such operation.
    """

    applies_to = ("elementwise",)
    label = "pass"
    whole_modules = True
    # f(x) / stab(x) is computed with a safe division: 0 where x = 0, so no stabiliser is needed.
    parameter_ranges: ClassVar[dict[str, Spec]] = {"stabilizer": NON_NEGATIVE}

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def forward(self, call: Call) -> Any:
        if call.func in PIECEWISE_LINEAR:
            return call.native()  # ReLU, leaky ReLU, PReLU: the gradient passes relevance unchanged
        fn, args, kwargs = out_of_place(call.func, call.args, call.kwargs)
        x = args[0] if args else kwargs.pop("input")
        closure = functools.partial(call_with, fn, tuple(args[1:]), kwargs)
        return PassActivation.apply(x, closure, self.stabilizer, call.entry)

    def module_output(self, call: Call, x: Tensor, output: Tensor) -> Tensor:
        """An element-wise module run natively as a whole: relevance passes from ``output`` to ``x``."""
        return PassComputed.apply(x, output, self.stabilizer, call.entry)  # type: ignore[no-any-return]


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
        if spec.rule.epsilon != 0.0:
            return epsilon_step(spec, a, grad, nonnegative=True), None
        scaled = torch.ops.aten.threshold_backward(grad, a, 0)  # the ReLU's own mask, one fused pass
        record_factor(spec, a, grad, scaled)
        return scaled, None


class FusedRectify(Rule):
    """A ReLU fused with the layer before it (assigned by the plan pass ``fuse_rectifiers``).

    The ReLU alone consumes a layer output that no backward keeps: it rectifies it in place and
    carries the layer's output-side step (an ε factor, or the layer's modified-weight backward
    reading the rectified output instead of keeping the layer's own).
    """

    label = "fused-rectify"

    def forward(self, call: Call) -> Tensor:
        x = call.bound["input"]
        handed = call.take_handed()
        if isinstance(handed, FactorSpec):
            return RectifyWithFactor.apply(x, handed)  # type: ignore[no-any-return]
        if isinstance(handed, ProxyHolder):
            y: Tensor = RectifyWithFactor.apply(x, None)
            handed.tensor = y
            return y
        return torch.relu_(x)  # LRP-0 without bookkeeping: the ordinary (masking) ReLU gradient
