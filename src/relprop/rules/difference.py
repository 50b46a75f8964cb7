r"""LRP rules applied to differences of activations: explaining :math:`f(x) - f(\bar x)`.

Reference-aware LRP runs the model once on the pair ``[x; x̄]`` (the inputs and their references
stacked along the batch, as DeepLIFT does) and explains the *difference* of the scores. Every
tensor ``t`` of the forward pass then has a difference :math:`\Delta t = t - \bar t`, and relevance
is carried in the Input×Gradient form on differences: :math:`R_t = \Delta t \odot g_t`, where ``g``
is the gradient of the input half (the reference half receives none).

For a layer :math:`z_k = \sum_j a_j w_{jk} + b_k` the bias cancels,
:math:`\Delta z_k = \sum_j \Delta a_j w_{jk}`, and :class:`DifferenceRule` applies the wrapped LRP
rule to this bias-free layer on :math:`\Delta a`:

* LRP-0 / ε: :math:`R_j = \sum_k \frac{\Delta a_j w_{jk}}{\Delta z_k + \epsilon\,\mathrm{sign}(\Delta z_k)} R_k`
  (the stabiliser ε keeps its meaning: it absorbs weak or contradictory *changes*).
* γ, αβ, z⁺: the same split of the contributions :math:`\Delta a_j w_{jk}` by sign (the rules'
  sign-aware forms: :math:`\Delta a` has either sign even after a ReLU).
* z^B: an input ``x`` in the box :math:`[l, h]` has :math:`\Delta x \in [l - \bar x,\, h - \bar x]`, so the
  bounds carry over shifted by the reference:
  :math:`R_i = \sum_j \frac{\Delta x_i w_{ij} - (l_i - \bar x_i) w_{ij}^+ - (h_i - \bar x_i) w_{ij}^-}
  {\sum_i \ldots} R_j`.
* flat and w² do not look at the input and hand on the same shares.

*Deep-Taylor reading.* LRP-ε/γ/z^B are first-order Taylor expansions of the relevance of a
neuron at a root point chosen on a search direction (Montavon et al. 2017, "Explaining nonlinear
classification decisions with deep Taylor decomposition"). Here the expansion point of every
layer is the reference's activation :math:`\bar a` instead of a root found from ``a`` alone: the
decomposed quantity is :math:`z_k(a) - z_k(\bar a)`, the first-order expansion is exact for a
linear layer, and the rules choose how :math:`\Delta z_k` is shared among the :math:`\Delta a_j`. Element-wise
nonlinearities :math:`y = f(z)` pass relevance with the ratio :math:`\Delta y/\Delta z`
(DeepLIFT's rescale rule, :class:`relprop.methods.deeplift.RescaleRule`): with differences,
the pass-through rule of LRP becomes exactly conserving for any activation. Affine operations
without parameters to choose (sums, pooling, batch norm, reshapes) pass the gradient, which
conserves exactly on differences because their constants cancel.

With a zero reference, a bias-free ReLU network and LRP-0 this is Gradient×Input; with the ε-rule
and ε → 0 on a ReLU network it is DeepLIFT-Rescale (Ancona et al. 2018, "Towards better
understanding of gradient-based attribution methods for deep neural networks", Prop. 3: ε-LRP
and DeepLIFT-Rescale agree for a zero reference on ReLU networks without biases; with biases
or other references the two agree when ε-LRP is applied to differences, as here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..errors import UnsupportedOperationError
from ..ledger import LedgerEntry
from ..ops import LinearOp, describe_function
from .base import Rule, per_sample_sum, safe_divide, stabilize
from .linear import Hints, LinearRule, Propagation, ZBoxRule, expand_bound

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["DifferenceRule", "DifferenceState", "zbox_on_differences"]


@dataclass
class DifferenceState:
    """What the difference rules of one explanation share: ledger rows and relevance for the input.

    Attributes
    ----------
    entries
        One ledger row per layer, in the order their backward ran (per input, not per pair).
    direct
        Relevance that rules producing relevance directly (z^B, flat, w²) hand to the model input.
    """

    entries: list[LedgerEntry] = field(default_factory=list)
    direct: Tensor | None = None

    def add_direct(self, relevance: Tensor) -> None:
        r = relevance.detach()
        self.direct = r if self.direct is None else self.direct + r


def zbox_on_differences(
    op: LinearOp, dx: Tensor, dy: Tensor, grad: Tensor, weight: Tensor, low: Tensor, high: Tensor, stabilizer: float
) -> Tensor:
    r"""z^B on differences: the relevance of ``Δx`` with the box ``[low, high]`` (already shifted by ``-x̄``)."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    z = dy - op.apply(low, w_pos) - op.apply(high, w_neg)
    s = safe_divide(dy * grad, stabilize(z, stabilizer))
    return dx * op.vjp(s, weight, dx) - low * op.vjp(s, w_pos, dx) - high * op.vjp(s, w_neg, dx)


def paired_halves(t: Tensor, method: str, where: str) -> int:
    """The number of inputs ``n`` of a ``[x; x̄]`` batch of ``2n``, checked (DeepLIFT, reference-aware LRP).

    ``where`` names the operation that received ``t`` for the error message.
    """
    if t.dim() == 0 or t.shape[0] % 2:
        raise UnsupportedOperationError(
            f"{method} pairs each input with its reference along the batch dimension, but {where} received a tensor "
            f"of shape {tuple(t.shape)} whose first dimension is not that batch; models that fold the batch into "
            f"another dimension cannot be explained with {method}."
        )
    return t.shape[0] // 2


@dataclass
class _LayerSpec:
    rule: LinearRule
    op: LinearOp
    weight: Tensor
    state: DifferenceState
    entry: LedgerEntry
    input_is_model_input: bool


class _DifferenceLinear(torch.autograd.Function):
    """The layer on ``[a; ā]``; backward applies the wrapped rule to ``Δa`` and hands ``[g_Δa; 0]`` down."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, bias: Tensor | None, spec: _LayerSpec) -> Tensor:
        ctx.spec = spec
        ctx.save_for_backward(x)
        return spec.op.apply(x, spec.weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        spec: _LayerSpec = ctx.spec
        (x,) = ctx.saved_tensors
        n = x.shape[0] // 2
        dx = x[:n] - x[n:]
        dy = spec.op.apply(dx, spec.weight)  # the bias cancels
        g = grad[:n]
        result = _propagate(spec, dx, dy, g, x)
        if result.grad is not None:
            grad_dx = result.grad
            relevance_in = per_sample_sum(dx * grad_dx)
        else:
            relevance = result.relevance
            assert relevance is not None
            relevance_in = per_sample_sum(relevance)
            if spec.input_is_model_input:
                spec.state.add_direct(relevance)
                grad_dx = torch.zeros_like(dx)
            else:
                # Carried on as a gradient of Δa; where Δa = 0 it cannot be, and the ledger records the loss.
                grad_dx = safe_divide(relevance, dx)
                relevance_in = per_sample_sum(dx * grad_dx)
        spec.entry.add(per_sample_sum(dy * g), relevance_in)
        return torch.cat([grad_dx, torch.zeros_like(grad_dx)]), None, None


def _propagate(spec: _LayerSpec, dx: Tensor, dy: Tensor, grad: Tensor, x: Tensor) -> Propagation:
    """The wrapped rule on the bias-free layer ``Δy = W Δx`` (z^B with its box shifted by the reference)."""
    rule = spec.rule
    if isinstance(rule, ZBoxRule):
        n = dx.shape[0]
        inputs, reference = x[:n], x[n:]
        low = expand_bound(rule.low, inputs, "low") - reference
        high = expand_bound(rule.high, inputs, "high") - reference
        return Propagation(
            relevance=zbox_on_differences(spec.op, dx, dy, grad, spec.weight, low, high, rule.stabilizer)
        )
    prepared = rule.prepare(spec.weight, None)
    return rule.propagate(spec.op, dx, dy, grad, prepared, Hints())


class DifferenceRule(Rule):
    """A layer rule applied to differences of activations (see the module docstring).

    Parameters
    ----------
    rule
        The LRP rule of the layer (ε, γ, αβ, z⁺, z^B, flat, w², or any :class:`LinearRule`).
    state
        Shared by the rules of one explanation: ledger rows and direct input relevance.
    """

    applies_to: ClassVar[tuple[str, ...]] = ("layer",)
    label = "difference"

    def __init__(self, rule: LinearRule, state: DifferenceState) -> None:
        self.rule = rule
        self.state = state

    def params(self) -> dict[str, Any]:
        return self.rule.params()

    def describe(self) -> str:
        return f"Δ{self.rule.describe()}"

    def forward(self, call: Call) -> Tensor:
        bound = call.bound
        x, weight, bias = bound["input"], bound["weight"], bound["bias"]
        n = paired_halves(x, "reference-aware LRP", f"{describe_function(call.func)} in '{call.display_path}'")
        record = call.record
        entry = LedgerEntry(record.index, call.display_path, record.function, self.describe(), samples=n)
        self.state.entries.append(entry)
        spec = _LayerSpec(
            rule=self.rule,
            op=LinearOp.from_call(call.kind.name, call.func, bound),
            weight=weight.detach(),
            state=self.state,
            entry=entry,
            input_is_model_input=call.is_model_input(x),
        )
        return _DifferenceLinear.apply(x, None if bias is None else bias.detach(), spec)  # type: ignore[no-any-return]
