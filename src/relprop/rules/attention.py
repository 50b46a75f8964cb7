r"""Rules for attention: fused scaled dot-product attention and softmax (AttnLRP, CP-LRP)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..errors import ConfigurationError
from .base import Probe, Rule, register
from .function import GradientRule
from .products import GradScale

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["AttentionRule", "SoftmaxRule"]


@register
class SoftmaxRule(GradientRule):
    r"""AttnLRP's rule for softmax (Achtibat et al. 2024, Proposition 3.1).

    A Taylor decomposition of :math:`s = \mathrm{softmax}(x)` at the input itself, with the
    bias term left out: :math:`R_{in} = x \odot (R_{out} - s \sum_j R_{out,j})`. With
    :math:`R_{out} = s \odot g` this is :math:`x \odot J_s^\top g`, the ordinary gradient times
    the input, so the rule runs with PyTorch's own softmax backward. It does not conserve: the
    ledger shows what the softmax absorbs. Masked inputs (``-inf``) receive no relevance.
    """

    applies_to = ("softmax",)
    label = "softmax"


_QKV = ("query", "key", "value")


@register
class AttentionRule(Rule):
    """Fused scaled dot-product attention ``softmax(q kᵀ · scale + mask) v``.

    ``mode="uniform"`` (AttnLRP): the two bilinear products split relevance equally between
    their factors and the softmax is explained by :class:`SoftmaxRule`, which in the gradient
    form is the ordinary gradient with the gradients of ``q`` and ``k`` scaled by 1/4 and that of
    ``v`` by 1/2; the fused kernel runs unchanged. ``mode="cp"`` (CP-LRP): the attention weights
    are constant, so all relevance goes to ``v`` and attention conserves it.
    """

    applies_to = ("attention",)
    label = "attention"

    def __init__(self, mode: str = "uniform") -> None:
        if mode not in ("uniform", "cp"):
            raise ConfigurationError(f"AttentionRule mode must be 'uniform' or 'cp', got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def forward(self, call: Call) -> Tensor:
        args = list(call.args)
        kwargs = dict(call.kwargs)
        tensors = [args[i] if i < len(args) else kwargs[n] for i, n in enumerate(_QKV)]
        carries = [call.is_carried(t) for t in tensors]
        if self.mode == "cp":
            factors = [0.0, 0.0, 1.0]
        else:
            # q kᵀ splits its relevance equally (if both carry), the weights · v product too.
            score_split = 0.5 if carries[0] and carries[1] else 1.0
            value_split = 0.5 if (carries[0] or carries[1]) and carries[2] else 1.0
            factors = [score_split * value_split, score_split * value_split, value_split]
        entry = call.entry
        for i, (name, t, carried, factor) in enumerate(zip(_QKV, tensors, carries, factors, strict=True)):
            if not carried:
                continue
            if factor == 0.0:
                new = t.detach()
            else:
                new = t if entry is None else Probe.apply(t, entry, "in", False)
                if factor != 1.0:
                    new = GradScale.apply(new, factor)
            if i < len(args):
                args[i] = new
            else:
                kwargs[name] = new
        result = call.native(args, kwargs)
        if entry is not None and call.carries(result):
            return Probe.apply(result, entry, "out", False)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]
