r"""Rules for products of two relevance-carrying tensors (element-wise and matrix products)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..kinds import GATE_FUNCS
from .base import Rule, register

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["GradScale", "ProductRule"]


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant (uniform product rule)."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


@register
class ProductRule(Rule):
    r"""Element-wise or matrix product of two relevance-carrying tensors.

    ``mode="uniform"`` splits the relevance of each product equally between the two factors
    (AttnLRP's rule for bilinear products; conserving): in the gradient form, the gradient of
    :math:`y = a \odot b` scaled by 1/2 hands :math:`R_a = R_b = R_y / 2`. ``mode="gate"`` treats
    a factor that comes from a gating function (sigmoid, hard-sigmoid, softmax) as a constant
    weight so that all relevance flows into the other factor (as CP-LRP does for attention).
    ``"auto"`` (default) gates when exactly one factor is such a gate and splits uniformly otherwise.
    """

    applies_to = ("product",)
    label = "product"

    def __init__(self, mode: str = "auto") -> None:
        if mode not in ("auto", "uniform", "gate"):
            raise ConfigurationError(f"ProductRule mode must be 'auto', 'uniform' or 'gate', got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def forward(self, call: Call) -> Tensor:
        gates = [t for t in call.carrying if call.producer_function(t) in GATE_FUNCS]
        gate_mode = self.mode == "gate" or (self.mode == "auto" and len(gates) == 1 and len(call.carrying) == 2)
        if gate_mode and len(gates) == 1:
            gate = gates[0]
            return call.native([a.detach() if a is gate else a for a in call.args], call.kwargs)  # type: ignore[no-any-return]
        return GradScale.apply(call.native(), 1.0 / len(call.carrying))  # type: ignore[no-any-return]
