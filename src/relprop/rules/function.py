r"""Rules that keep an operation's own gradient, cut it, or replace the operation outright."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from .base import Rule, register

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["FunctionRule", "GradientRule", "StopRule"]


@register
class GradientRule(Rule):
    """Use the operation's ordinary gradient (Gradient×Input semantics for this operation).

    Applies to any operation that is not linear (linear ones already get their gradient from
    LRP-0), including ones relprop has no rule for (give it by operation name, e.g.
    ``(relprop.match.op("exp"), GradientRule())``). The ledger records the relevance the
    operation creates or absorbs, so a non-conserving choice stays visible.
    """

    applies_to = ("nonlinear",)
    label = "gradient"


@register
class StopRule(Rule):
    """Treat the operation's output as a constant: no relevance flows into it.

    CP-LRP (Ali et al. 2022) holds the attention weights (the softmax) constant so that all
    relevance of an attention head flows through its values; on the statistics of a
    hand-written normalisation (``x.pow(2).mean()``, ``rsqrt``, ``var``) it is AttnLRP's identity
    rule (the normalisation divides by a constant). Conservation is kept by the operation that
    uses the constant: ``x ⊙ c`` hands all its relevance to ``x``.
    """

    applies_to = ("softmax", "statistic", "unknown")
    label = "constant"

    def forward(self, call: Call) -> Any:
        result = call.native()
        if isinstance(result, Tensor):
            return result.detach()
        if isinstance(result, (list, tuple)):
            return type(result)(r.detach() if isinstance(r, Tensor) else r for r in result)
        return result

    # The plan must follow the same (constant) outputs as the explaining pass.
    trace = forward


class FunctionRule(Rule):
    """A rule that replaces an operation's computation outright (forward and backward).

    The extension point for attribution methods that change how the gradient passes an
    operation — guided backprop and deconvnet on ReLUs, DeepLIFT's multipliers — and for
    your own rules on operations relprop does not know. ``apply`` receives the torch function
    and its arguments as the model called it and returns the operation's output, usually
    through a custom :class:`torch.autograd.Function`. With the ledger on, the operation gets a
    ledger row (relevance at its output and at its inputs) from probes around ``apply``.

    Subclasses set ``applies_to`` (e.g. ``("relu",)``) and implement :meth:`apply`.
    """

    applies_to: ClassVar[tuple[str, ...]] = ()
    label = "function"

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Compute the operation ``func(*args, **kwargs)`` with this rule's backward."""
        raise NotImplementedError

    def compute(self, call: Call) -> Any:
        return self.apply(call.func, tuple(call.args), dict(call.kwargs))
