r"""Rules for attention: fused scaled dot-product attention and softmax (AttnLRP, CP-LRP)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..ledger import LedgerEntry
from .base import Probe, Rule, per_sample_dot, register
from .function import GradientRule

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["AttentionRule", "ScaledInputs", "SoftmaxRule"]


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
        # The relevance-carrying q, k, v pass one function together: it scales each gradient by its
        # factor and books Σ t ⊙ g (one autograd node instead of a probe and a scaling per tensor).
        scaled = [(i, t, f) for i, (t, carried, f) in enumerate(zip(tensors, carries, factors, strict=True)) if carried]
        for i, t, _ in scaled:
            if factors[i] == 0.0:
                self._put(args, kwargs, i, t.detach())
        flowing = [(i, t, f) for i, t, f in scaled if f != 0.0]
        if flowing and (entry is not None or any(f != 1.0 for _, _, f in flowing)):
            outputs = ScaledInputs.apply(tuple(f for _, _, f in flowing), entry, *(t for _, t, _ in flowing))
            for (i, _, _), new in zip(flowing, outputs, strict=True):
                self._put(args, kwargs, i, new)
        result = call.native(args, kwargs)
        if entry is not None and call.carries(result):
            return Probe.apply(result, entry, "out", False)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    @staticmethod
    def _put(args: list[Any], kwargs: dict[str, Any], i: int, value: Tensor) -> None:
        if i < len(args):
            args[i] = value
        else:
            kwargs[_QKV[i]] = value


class ScaledInputs(torch.autograd.Function):
    """Identity on several tensors; backward multiplies each gradient by its factor and books ``Σ t ⊙ g``.

    The inputs of an attention call under AttnLRP's uniform rule (a probe and a
    :class:`~relprop.rules.products.GradScale` per tensor, fused): the relevance handed to the
    inputs, ``Σ_t Σ t ⊙ (factor_t · g_t)``, goes to the operation's ledger row.
    """

    @staticmethod
    def forward(
        ctx: Any, factors: tuple[float, ...], entry: LedgerEntry | None, *tensors: Tensor
    ) -> tuple[Tensor, ...]:
        ctx.factors = factors
        ctx.entry = entry
        if entry is not None:
            ctx.save_for_backward(*tensors)
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        scaled = [g if g is None or f == 1.0 else g * f for g, f in zip(grads, ctx.factors, strict=True)]
        entry: LedgerEntry | None = ctx.entry
        if entry is not None:
            total = None
            for t, g in zip(ctx.saved_tensors, scaled, strict=True):
                if g is not None:
                    value = per_sample_dot(t, g)
                    total = value if total is None else total + value
            if total is not None:
                entry.add(torch.zeros_like(total), total)
        return (None, None, *scaled)
