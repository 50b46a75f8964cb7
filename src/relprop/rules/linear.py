r"""Rules for linear operations: convolutions, transposed convolutions, dense layers, and the
affine operations with a constant term (residual sums, average pooling, batch normalisation).

For a linear layer ``y = W ⋆ x + b`` every rule below follows the four steps of the generic rule

.. math::

    z_k = \epsilon + \sum_{0,j} a_j\,\rho(w_{jk}),\qquad
    s_k = R_k / z_k,\qquad
    c_j = \sum_k \rho(w_{jk})\, s_k,\qquad
    R_j = a_j c_j,

with ``R_k = y_k g_k`` the relevance arriving at the layer's output. Rules whose relevance is a
multiple of the input (``R_j = a_j c_j``) hand ``g_x = c`` down the backward pass; the others
(z^B, flat, w²) produce the relevance directly. The arithmetic is plain tensor code
(``prepare`` / ``propagate``) that can be read and tested on its own; ``forward`` attaches it to
one layer call through :class:`ModifiedLinear`, or — for LRP-0 and LRP-ε, which are the ordinary
gradient times a factor on the layer's output — through :class:`OutputFactor`.

Two plan passes (see :mod:`relprop.engine.plan`) let a layer share work with its neighbours: a
batch norm right after it is folded into its weights (:class:`FoldedBatchNorm` stands in for the
batch norm), and a ReLU that alone consumes its output carries its output-side step
(:class:`~relprop.rules.elementwise.FusedRectify`).

Stabilisers are sign-aware: ``stab(z) = z + ε·sign(z)`` with ``sign(0) = +1``, so a
denominator never crosses zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..errors import ConfigurationError, GraphChangedError
from ..ledger import DotMemo, LedgerEntry
from ..ops import LinearOp
from ..params import NON_NEGATIVE, Spec
from . import kernels
from .base import Rule, per_sample_dot, per_sample_sum, register, safe_divide, stabilize

if TYPE_CHECKING:
    from ..engine.call import Call, DirectRelevance
    from ..engine.plan import OpRecord

__all__ = [
    "AlphaBetaRule",
    "EpsilonRule",
    "FlatRule",
    "FoldedBatchNorm",
    "GammaRule",
    "Hints",
    "LRP0Rule",
    "LinearRule",
    "ModifiedWeightRule",
    "NormRule",
    "Propagation",
    "WSquareRule",
    "ZBoxRule",
    "ZPlusRule",
    "batchnorm_scale_shift",
    "channel_constant_relevance",
    "expand_bound",
]


def channel_constant_relevance(s: Tensor, constant: Tensor | None, op: LinearOp) -> Tensor | None:
    """Return ``Σ_k s_k c_k`` per sample for a per-output-channel constant ``c`` (a bias)."""
    if constant is None:
        return None
    if op.kind == "linear":
        summed = s.reshape(s.shape[0], -1, s.shape[-1]).sum(1)
    else:
        summed = s.reshape(s.shape[0], s.shape[1], -1).sum(2)
    return summed @ constant.to(summed.dtype)


@dataclass
class Propagation:
    """What a linear rule hands down for one layer.

    Exactly one of ``grad`` (multiplicative rules: ``R_x = x ⊙ grad``) and ``relevance``
    (rules that distribute relevance to zero inputs too) is set. ``bias_relevance`` is the
    per-sample relevance the layer's bias absorbs (``None`` when the rule uses no bias).
    """

    grad: Tensor | None = None
    relevance: Tensor | None = None
    bias_relevance: Tensor | None = None


@dataclass(frozen=True)
class Hints:
    """What the engine knows about a layer call, letting a rule skip work.

    Attributes
    ----------
    output_after_relu
        ``y`` is the output of the ReLU that alone consumes the layer's output, and the
        gradient is already masked by it: ``y ≥ 0`` and no negative output gets relevance.
    input_nonnegative
        ``x ≥ 0`` is known (``None``: check).
    """

    output_after_relu: bool = False
    input_nonnegative: bool | None = None


Prepared = dict[str, Any]


class LinearRule(Rule):
    """Base class for rules on convolutions, transposed convolutions and dense layers.

    ``prepare`` computes the modified parameters once (the engine caches them until the
    weights change); ``propagate`` does one backward step. Both are plain tensor code;
    :meth:`forward` attaches them to one layer call.
    """

    applies_to: ClassVar[tuple[str, ...]] = ("layer",)
    #: True when the rule's relevance is ``x ⊙ c`` (it can be handed down as a gradient).
    multiplicative: ClassVar[bool] = True

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        """Return the modified parameters the rule needs (computed once and cached)."""
        return {"weight": weight, "bias": bias}

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        """Propagate ``R_y = y ⊙ grad`` from the layer output ``y`` to its input ``x``."""
        raise NotImplementedError

    def forward(self, call: Call) -> Tensor:
        """The layer computed with the (batch-norm folded) weights; backward through :meth:`propagate`."""
        bound = call.bound
        record = call.record
        op = LinearOp.from_call(call.kind.name, call.func, bound)
        x, weight, bias = bound["input"], bound["weight"], bound["bias"]
        prepared = call.weights.prepared(record, self, weight, bias, op, call.folded_batch_norm)
        proxy = None
        if record.relu_proxy is not None:
            proxy = ProxyHolder()
            call.hand_over(record.relu_proxy, proxy)
        bundle = LinearBundle(
            op=op,
            rule=self,
            prepared=prepared,
            entry=call.entry,
            proxy=proxy,
            input_is_model_input=call.is_model_input(x),
            direct=call.direct,
            input_nonnegative=True if record.input_nonnegative else None,
            dots=call.dots,
        )
        y = ModifiedLinear.apply(x, bundle)
        if record.merge_bn is not None:
            # The batch norm after this layer is folded into its weights: y is already its output.
            call.hand_over(record.merge_bn, LayerOutput(y, record, None, op, bias))
        return y  # type: ignore[no-any-return]


def _cached(prepared: Prepared, name: str, key: tuple[Any, ...], compute: Any) -> Tensor:
    """Per-layer constant (e.g. a convolution of the z^B bounds) cached alongside the weights."""
    entry = prepared.get(name)
    if entry is not None and entry[0] == key:
        return entry[1]  # type: ignore[no-any-return]
    value = compute()
    prepared[name] = (key, value)
    return value  # type: ignore[no-any-return]


def _lazy(prepared: Prepared, name: str, compute: Any) -> Tensor:
    """A modified weight computed on first use (only some inputs need the sign-general path)."""
    value = prepared.get(name)
    if value is None:
        value = prepared[name] = compute()
    return value  # type: ignore[no-any-return]


@register
class EpsilonRule(LinearRule):
    r"""LRP-ε: :math:`R_j = \sum_k \frac{a_j w_{jk}}{\epsilon + \sum_{0,j} a_j w_{jk}} R_k`.

    The stabiliser ε absorbs weak or contradictory relevance; larger ε gives sparser, less
    noisy explanations. ``ε = 0`` is LRP-0. In the gradient form the rule is the ordinary
    gradient with the output-side factor ``y / stab(y)``, so it costs one element-wise
    product more than Gradient×Input. Besides dense and convolutional layers it applies to
    every other linear operation with an optional constant term (the ``affine`` kinds):
    residual sums, average pooling and batch normalisation that could not be merged into a layer.

    Parameters
    ----------
    epsilon
        Stabiliser added to the denominator with the sign of the denominator.
    """

    applies_to: ClassVar[tuple[str, ...]] = ("layer", "affine")
    label = "epsilon"

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def output_factor(self, y: Tensor, grad: Tensor, nonnegative: bool = False) -> Tensor:
        """Return the scaled output gradient ``g ⊙ y / stab(y)`` (``g`` itself for ε = 0).

        ``nonnegative`` promises ``y ≥ 0`` (a ReLU output), where ``stab(y) = y + ε``.
        """
        if self.epsilon == 0.0:
            return grad
        scaled = y + self.epsilon if nonnegative else stabilize(y, self.epsilon)
        torch.div(y, scaled, out=scaled)
        return scaled.mul_(grad)

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        s = self.output_factor(y, grad, nonnegative=hints.output_after_relu)
        bias = prepared["bias"]
        return Propagation(
            grad=op.vjp(s, prepared["weight"], x), bias_relevance=channel_constant_relevance(s, bias, op)
        )

    def forward(self, call: Call) -> Tensor:
        """The operation computed natively, with the factor ``y / stab(y)`` on its output gradient.

        The framework's own backward kernels do the rest (``Wᵀ`` for a layer, the sum's or the
        pooling's transpose), so LRP-ε costs one element-wise pass more than the gradient.
        """
        if call.kind.positional:
            return self._layer_forward(call)
        return _AFFINE_FORWARD.get(call.kind.name, _affine_forward)(self, call)

    def _layer_forward(self, call: Call) -> Tensor:
        record = call.record
        bias = call.bound["bias"]
        op = LinearOp.from_call(call.kind.name, call.func, call.bound)
        y: Tensor = call.native()
        if record.merge_bn is not None:
            # The batch norm after the layer applies the factor at its own output (see FoldedBatchNorm).
            call.hand_over(record.merge_bn, LayerOutput(y, record, self, op, bias))
            return y
        constant = None if bias is None else bias.detach()
        return attach_factor(call, record, y, self, call.entry, constant, op)

    def _pool_forward(self, call: Call) -> Tensor:
        return attach_factor(call, call.record, call.native(), self, call.entry, None, None)

    def _batchnorm_forward(self, call: Call) -> Tensor:
        scale, shift = batchnorm_affine(call.bound)
        record = call.record
        if record.relu_proxy is None and (call.ledger or self.epsilon != 0.0):
            spec = FactorSpec(self, call.entry, shift.reshape(-1), _CHANNEL_OP, compiled=call.compiled)
            return AffineWithFactor.apply(call.bound["input"], scale, shift, spec)  # type: ignore[no-any-return]
        return attach_factor(call, record, call.native(), self, call.entry, shift.reshape(-1), _CHANNEL_OP)


def _sum_forward(rule: EpsilonRule, call: Call) -> Tensor:
    """A sum: of several signals (residual connections), or of a signal and a constant (``x + c``)."""
    y: Tensor = call.native()
    return _with_constant(rule, call, y, call.constant_part() if len(call.carrying) < 2 else None)


def _affine_forward(rule: EpsilonRule, call: Call) -> Tensor:
    """Any other affine operation ``y = A(x) + c``: ``c`` is the operation with its signals at 0."""
    y: Tensor = call.native()
    constant = call.constant_part()
    return _with_constant(rule, call, y, constant if constant is not None and bool(constant.any()) else None)


def _with_constant(rule: EpsilonRule, call: Call, y: Tensor, constant: Tensor | None) -> Tensor:
    if constant is not None and not bool(torch.isfinite(constant).all()):
        # An additive attention mask with -inf: no gradient reaches those entries; keep the
        # factor and the ledger free of inf / inf and -inf · 0.
        entry = call.entry
        if entry is None and rule.epsilon == 0.0:
            return y
        zero = torch.zeros((), dtype=constant.dtype, device=constant.device)
        finite = torch.where(torch.isfinite(constant), constant, zero)
        spec = FactorSpec(rule, entry, None, None, finite, finite_only=True)
        return OutputFactor.apply(y, spec)  # type: ignore[no-any-return]
    return attach_factor(call, call.record, y, rule, call.entry, None, None, constant)


_AFFINE_FORWARD: dict[str, Callable[[EpsilonRule, Call], Tensor]] = {
    "avgpool": EpsilonRule._pool_forward,
    "batchnorm": EpsilonRule._batchnorm_forward,
    "add": _sum_forward,
}


@register
class LRP0Rule(EpsilonRule):
    r"""LRP-0: :math:`R_j = \sum_k \frac{a_j w_{jk}}{\sum_{0,j} a_j w_{jk}} R_k`.

    Applied to every layer it equals Gradient×Input.
    """

    label = "lrp-0"

    def __init__(self) -> None:
        super().__init__(epsilon=0.0)

    def params(self) -> dict[str, Any]:
        return {}


@register
class NormRule(EpsilonRule):
    r"""Proportional redistribution for parameter-free linear operations.

    :math:`R_i = \frac{x_i}{\mathrm{stab}(\sum_j x_j)} R` for sums of several tensors (residual
    connections), average pooling and unmerged batch normalisation; the same arithmetic as
    :class:`EpsilonRule` with a small stabiliser, named for what it does on these operations.
    """

    applies_to: ClassVar[tuple[str, ...]] = ("affine",)
    label = "norm"
    # The stabiliser is LRP-ε's ε here: 0 is the plain gradient, no division.
    parameter_ranges: ClassVar[dict[str, Spec]] = {"stabilizer": NON_NEGATIVE}

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(epsilon=stabilizer)

    def params(self) -> dict[str, Any]:
        return {"stabilizer": self.epsilon}


def _bias_parts(bias: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    if bias is None:
        return None, None
    return bias.clamp(min=0), bias.clamp(max=0)


def _view(op: LinearOp, b: Tensor | None, like: Tensor) -> Tensor | float:
    return 0.0 if b is None else op.bias_view(b, like)


def _relevance_ratio_(denominator: Tensor, y: Tensor, grad: Tensor) -> Tensor:
    """``s = (y ⊙ grad) / denominator`` computed in the denominator's own buffer (no new allocation, two passes)."""
    return torch.div(y, denominator, out=denominator).mul_(grad)


def _nonnegative(x: Tensor, hints: Hints) -> bool:
    if hints.input_nonnegative is not None:
        return hints.input_nonnegative
    return not _has_negative(x)


def _has_negative(t: Tensor) -> bool:
    """Whether any value is below 0 (NaN is not): one reduction, no boolean temporary."""
    return t.numel() > 0 and bool(t.amin() < 0)


def _sum_relevance(
    s_a: Tensor, b_a: Tensor | None, s_b: Tensor, b_b: Tensor | None, op: LinearOp, sign: float
) -> Tensor | None:
    """Bias share of two sign-split terms: ``Σ s_a b_a + sign · Σ s_b b_b``."""
    first = channel_constant_relevance(s_a, b_a, op)
    second = channel_constant_relevance(s_b, b_b, op)
    if first is None or second is None:
        return first if second is None else sign * second
    return first + sign * second


@register
class GammaRule(LinearRule):
    r"""LRP-γ: :math:`\rho(w) = w + \gamma w^+`, favouring positive contributions.

    .. math::

        R_j = \sum_k \frac{a_j (w_{jk} + \gamma w_{jk}^+)}
                         {\sum_{0,j} a_j (w_{jk} + \gamma w_{jk}^+)} R_k

    The sign-aware generalisation (Andéol et al. 2021, as in Zennit) is used: outputs
    ``z_k > 0`` are explained by emphasising positive contributions
    (``a⁺ (w + γw⁺) + a⁻ (w + γw⁻)``, bias ``b + γb⁺``), outputs ``z_k < 0`` by emphasising
    negative ones (``a⁺ (w + γw⁻) + a⁻ (w + γw⁺)``, bias ``b + γb⁻``). For non-negative
    inputs and positive outputs, the usual case in ReLU networks, this is exactly the
    rule above and costs one extra forward of the layer. ``γ → ∞`` approaches z⁺.

    Parameters
    ----------
    gamma
        Weight of the added positive (or negative) part, ``γ ≥ 0``.
    stabilizer
        Sign-aware stabiliser of the denominators.
    """

    label = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        self.gamma = float(gamma)
        self.stabilizer = float(stabilizer)

    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma}

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        g = self.gamma
        b_pos = None if bias is None else bias.clamp(min=0)
        return {
            "weight": weight,
            "bias": bias,
            "weight_pos_gamma": weight + g * weight.clamp(min=0),
            "bias_pos_gamma": None if bias is None else bias + g * b_pos,  # type: ignore[operator]
        }

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        g, eps = self.gamma, self.stabilizer
        weight, bias = prepared["weight"], prepared["bias"]
        w_pos = prepared["weight_pos_gamma"]
        b_pos = prepared["bias_pos_gamma"]
        nonnegative = _nonnegative(x, hints)
        negative_outputs = not hints.output_after_relu and _has_negative(y)
        if nonnegative and not negative_outputs:
            # ReLU nets: z = (W + γW⁺) a + b + γb⁺ ≥ y, so z > 0 wherever y > 0 carries relevance.
            # The stabiliser rides in the layer's bias: max(z + ε, ε) = max(z, 0) + ε.
            b_eps = _lazy(prepared, "bias_pos_gamma_eps", lambda: _plus_stabilizer(b_pos, y, op, eps))
            z = op.apply(x, w_pos, b_eps).clamp_(min=eps)
            s_pos = torch.div(y, z, out=z).mul_(grad)
            if not hints.output_after_relu:
                s_pos.masked_fill_(y <= 0, 0.0)
            return Propagation(
                grad=op.vjp(s_pos, w_pos, x), bias_relevance=channel_constant_relevance(s_pos, b_pos, op)
            )
        if nonnegative and op.groups == 1:
            return self._propagate_signed_stacked(op, x, y, grad, prepared)
        w_abs = _lazy(prepared, "weight_abs", weight.abs)
        # With m = |W||a|: a⁺w⁺ + a⁻w⁻ = (Wa + m)/2 and a⁺w⁻ + a⁻w⁺ = (Wa − m)/2, so the two
        # denominators are z± = (1 + γ/2) y ± (γ/2)(m + |b|), and z₊ ≥ y > 0, z₋ ≤ y < 0 where they
        # are used. Positive and negative outputs never overlap: one buffer holds
        # s = R / stab(z_sign(y)), i.e. s₊ + s₋, and d = s·sign(y) = s₊ − s₋.
        z = op.apply(x if nonnegative else x.abs(), w_abs)
        if bias is not None:
            z.add_(op.bias_view(bias.abs(), z))
        z.mul_(0.5 * g).add_(eps).copysign_(y).add_(y, alpha=1 + 0.5 * g)
        s = _relevance_ratio_(z, y, grad)
        d = torch.where(y < 0, -s, s)
        # Aᵀs₊ + Bᵀs₋ = (1 + γ/2) Wᵀs + (γ/2)|W|ᵀd for a > 0 (and with −(γ/2)|W|ᵀd for a < 0).
        signed = op.vjp(d, w_abs, x).mul_(0.5 * g)
        if not nonnegative:
            signed.mul_(torch.sign(x))
        grad_x = op.vjp(s, weight, x).mul_(1 + 0.5 * g).add_(signed)
        bias_rel = None
        if bias is not None:
            # Σ s₊(b + γb⁺) + Σ s₋(b + γb⁻) = Σ_c (1 + γ/2) b_c S_c + (γ/2)|b_c| D_c.
            plain = channel_constant_relevance(s, bias * (1 + 0.5 * g), op)
            signed_part = channel_constant_relevance(d, bias.abs() * (0.5 * g), op)
            assert plain is not None and signed_part is not None
            bias_rel = plain + signed_part
        return Propagation(grad=grad_x, bias_relevance=bias_rel)

    def _propagate_signed_stacked(
        self, op: LinearOp, x: Tensor, y: Tensor, grad: Tensor, prepared: Prepared
    ) -> Propagation:
        """The sign-aware rule for ``x ≥ 0`` with the two backward products in one.

        The same arithmetic as the general path, with the constant factors moved into cached weights:
        ``z = (1 + γ/2) y ± ((γ/2)(|W|a + |b|) + ε)`` with the sign of ``y``, ``s = y g / z`` and
        ``d = |y| g / z`` (``= s·sign(y)``, as ``z`` has the sign of ``y``), and
        ``(1 + γ/2) Wᵀs + (γ/2)|W|ᵀd`` is one transposed product of ``[s, d]`` with the weights
        ``[(1 + γ/2) W, (γ/2)|W|]`` stacked along the output channels.
        """
        g, eps = self.gamma, self.stabilizer
        weight, bias = prepared["weight"], prepared["bias"]
        half_abs = _lazy(prepared, "weight_abs_half_gamma", lambda: weight.abs().mul_(0.5 * g))
        half_abs_bias = _lazy(
            prepared,
            "bias_abs_half_gamma_eps",
            lambda: _plus_stabilizer(None if bias is None else bias.abs().mul_(0.5 * g), y, op, eps),
        )
        channel = -1 if op.kind == "linear" else 1
        stacked = _lazy(
            prepared,
            "weight_stacked_gamma",
            lambda: torch.cat([weight * (1 + 0.5 * g), half_abs], dim=op.out_channel_dim),
        )
        both = torch.empty(
            (*y.shape[:channel], 2 * y.shape[channel], *y.shape[channel:][1:]), dtype=y.dtype, device=y.device
        )
        s, d = both.chunk(2, dim=channel)
        # z = sign(y)·u with u = (1 + γ/2)|y| + (γ/2)(|W|a + |b|) + ε > 0, so s = y g / z = |y| g / u and
        # d = |y| g / z = y g / u: five passes, no sign handling.
        torch.abs(y, out=s)
        u = op.apply(x, half_abs, half_abs_bias).add_(s, alpha=1 + 0.5 * g)
        ratio = torch.div(grad, u, out=u)
        torch.mul(y, ratio, out=d)
        s.mul_(ratio)
        del ratio, u
        bias_rel = None
        if bias is not None:
            # Σ s₊(b + γb⁺) + Σ s₋(b + γb⁻) = Σ_c (1 + γ/2) b_c S_c + (γ/2)|b_c| D_c.
            stacked_bias = _lazy(
                prepared, "bias_stacked_gamma", lambda: torch.cat([bias * (1 + 0.5 * g), bias.abs() * (0.5 * g)])
            )
            bias_rel = channel_constant_relevance(both, stacked_bias, op)
        return Propagation(grad=op.vjp(both, stacked, x), bias_relevance=bias_rel)


def _plus_stabilizer(bias: Tensor | None, y: Tensor, op: LinearOp, eps: float) -> Tensor:
    """``bias + ε`` per output channel (``ε`` alone without a bias), to add ε inside the layer's own product."""
    if bias is not None:
        return bias + eps
    channels = y.shape[-1] if op.kind == "linear" else y.shape[1]
    return torch.full((channels,), eps, dtype=y.dtype, device=y.device)


@register
class AlphaBetaRule(LinearRule):
    r"""LRP-αβ: positive and negative contributions weighted separately.

    .. math::

        R_j = \sum_k \Big( \alpha \frac{(a_j w_{jk})^+}{\sum_{0,j} (a_j w_{jk})^+}
                         - \beta \frac{(a_j w_{jk})^-}{\sum_{0,j} (a_j w_{jk})^-} \Big) R_k

    with ``α = β + 1`` so that relevance is conserved. Positive contributions are
    ``a⁺w⁺ + a⁻w⁻`` (and the bias part ``b⁺``), negative ones ``a⁺w⁻ + a⁻w⁺`` (``b⁻``).

    Parameters
    ----------
    alpha, beta
        Non-negative weights with ``alpha - beta == 1``.
    stabilizer
        Stabiliser of both denominators (the positive one is ``≥ 0``, the negative ``≤ 0``).
    """

    label = "alpha-beta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.stabilizer = float(stabilizer)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta}

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        b_pos, b_neg = _bias_parts(bias)
        return {
            "weight": weight,
            "bias": bias,
            "weight_pos": weight.clamp(min=0),
            "weight_neg": weight.clamp(max=0),
            "bias_pos": b_pos,
            "bias_neg": b_neg,
        }

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        eps = self.stabilizer
        weight, bias = prepared["weight"], prepared["bias"]
        w_pos, w_neg = prepared["weight_pos"], prepared["weight_neg"]
        b_pos, b_neg = prepared["bias_pos"], prepared["bias_neg"]
        nonnegative = _nonnegative(x, hints)
        wx = y - _view(op, bias, y)
        if nonnegative:
            positive = op.apply(x, w_pos)
        else:
            w_abs = _lazy(prepared, "weight_abs", weight.abs)
            positive = op.apply(x.abs(), w_abs).add_(wx).mul_(0.5)
        # Positive contributions (+ b⁺) are ≥ 0 and negative ones (Wa − positive, + b⁻) ≤ 0.
        negative = None if self.beta == 0.0 else wx.sub_(positive).add_(_view(op, b_neg, y)).sub_(eps)
        del wx
        s_pos = _relevance_ratio_(positive.add_(_view(op, b_pos, y)).add_(eps), y, grad).mul_(self.alpha)
        s_neg = None if negative is None else _relevance_ratio_(negative, y, grad).mul_(self.beta)
        if nonnegative:
            grad_x = op.vjp(s_pos, w_pos, x)
            if s_neg is not None:
                grad_x.sub_(op.vjp(s_neg, w_neg, x))
        else:
            w_abs = prepared["weight_abs"]
            difference = s_pos if s_neg is None else s_pos - s_neg
            total = s_pos if s_neg is None else s_pos + s_neg
            grad_x = op.vjp(difference, weight, x).add_(op.vjp(total, w_abs, x).mul_(torch.sign(x))).mul_(0.5)
        if s_neg is None:
            return Propagation(grad=grad_x, bias_relevance=channel_constant_relevance(s_pos, b_pos, op))
        return Propagation(grad=grad_x, bias_relevance=_sum_relevance(s_pos, b_pos, s_neg, b_neg, op, -1.0))


@register
class ZPlusRule(AlphaBetaRule):
    r"""LRP-z⁺ (Deep Taylor's rule for ReLU layers): the αβ rule with α = 1, β = 0.

    :math:`R_j = \sum_k \frac{(a_j w_{jk})^+}{\sum_{0,j} (a_j w_{jk})^+} R_k`; the positive part
    of the bias counts as a contribution, as in Zennit.
    """

    label = "z-plus"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(alpha=1.0, beta=0.0, stabilizer=stabilizer)

    def params(self) -> dict[str, Any]:
        return {}


def expand_bound(bound: float | Tensor | None, x: Tensor, name: str) -> Tensor:
    """Broadcast a z^B bound (scalar, per-channel, per-sample or input-shaped) to ``x``'s shape."""
    if bound is None:
        # The smallest box that holds each sample.
        reduced = x.detach().reshape(x.shape[0], -1)
        value = reduced.min(1).values if name == "low" else reduced.max(1).values
        return value.view(-1, *([1] * (x.dim() - 1))).expand_as(x)
    t = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand_as(x)
    if t.dim() == 1 and x.dim() >= 2 and t.shape[0] == x.shape[1]:
        return t.view(1, -1, *([1] * (x.dim() - 2))).expand_as(x)
    if tuple(t.shape) == tuple(x.shape[1:]):
        return t.unsqueeze(0).expand_as(x)
    if tuple(t.shape) == tuple(x.shape):
        return t
    try:
        return t.expand_as(x)
    except RuntimeError:
        raise ConfigurationError(
            f"z^B bound {name!r} has shape {tuple(t.shape)}, which does not fit the layer input of shape "
            f"{tuple(x.shape)}; pass a scalar, one value per channel ({x.shape[1] if x.dim() > 1 else 1}), "
            "or a tensor shaped like one input."
        ) from None


def _bound_key(bound: float | Tensor | None) -> Any:
    if isinstance(bound, Tensor):
        return (id(bound), bound._version)
    return bound


@register
class ZBoxRule(LinearRule):
    r"""LRP-z^B (box rule) for an input layer whose values lie in ``[l, h]`` (pixels).

    .. math::

        R_i = \sum_j \frac{x_i w_{ij} - l_i w_{ij}^+ - h_i w_{ij}^-}
                         {\sum_i x_i w_{ij} - l_i w_{ij}^+ - h_i w_{ij}^-} R_j

    The bias cancels from the denominator (as in Zennit). Relevance is produced directly,
    not as a multiple of the input, so a zero pixel can be relevant.

    Parameters
    ----------
    low, high
        Bounds of the layer input: scalars, one value per channel, or tensors shaped like an
        input. ``None`` uses each sample's own minimum and maximum (the smallest box that holds
        it); :func:`relprop.composites.bounds_from_normalization` derives them from a
        ``Normalize(mean, std)`` transform.
    stabilizer
        Sign-aware stabiliser of the denominator.
    """

    multiplicative = False
    label = "z-box"

    def __init__(
        self, low: float | Tensor | None = None, high: float | Tensor | None = None, stabilizer: float = 1e-6
    ) -> None:
        self.low = low
        self.high = high
        self.stabilizer = float(stabilizer)

    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        return {
            "weight": weight,
            "bias": bias,
            "weight_pos": weight.clamp(min=0),
            "weight_neg": weight.clamp(max=0),
        }

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        weight, bias = prepared["weight"], prepared["bias"]
        w_pos, w_neg = prepared["weight_pos"], prepared["weight_neg"]
        low = expand_bound(self.low, x, "low")
        high = expand_bound(self.high, x, "high")

        def box_term(lo: Tensor, hi: Tensor) -> Tensor:
            # b + l·W⁺ + h·W⁻: what the denominator subtracts from y.
            term = op.apply(lo, w_pos, bias).add_(op.apply(hi, w_neg))
            return term

        if self.low is None or self.high is None:
            subtract = box_term(low, high)
        else:
            # The bounds do not depend on the sample: compute once per input shape.
            key = (tuple(x.shape[1:]), x.dtype, x.device, _bound_key(self.low), _bound_key(self.high))
            subtract = _cached(prepared, "box_term", key, lambda: box_term(low[:1], high[:1]))
        z = y - subtract
        # Inside the box z ≥ 0; outside it, fall back to the sign-aware stabiliser.
        z = stabilize(z, self.stabilizer) if _has_negative(z) else z.add_(self.stabilizer)
        s = _relevance_ratio_(z, y, grad)
        del z
        stacked = _lazy(prepared, "weight_box_stacked", lambda: _stack_inputs(op, (weight, w_pos, w_neg)))
        c, c_pos, c_neg = _vjp_stacked(op, s, stacked, x, 3)
        relevance = torch.mul(x, c).addcmul_(low, c_pos, value=-1.0).addcmul_(high, c_neg, value=-1.0)
        return Propagation(relevance=relevance)


def _in_channel_dim(op: LinearOp) -> int:
    """The weight dimension that indexes input channels."""
    return 0 if op.kind == "conv_transpose" else 1


def _stack_inputs(op: LinearOp, weights: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """Weights stacked along their input channels, so that one transposed product serves all of them.

    Grouped convolutions cannot be stacked this way; their weights are returned as they are.
    """
    if op.kind != "linear" and op.groups != 1:
        return weights
    return torch.cat(weights, dim=_in_channel_dim(op))


def _vjp_stacked(op: LinearOp, s: Tensor, stacked: Tensor | tuple[Tensor, ...], x: Tensor, count: int) -> list[Tensor]:
    """``[W₁ᵀ ⋆ s, …, W_countᵀ ⋆ s]`` from weights stacked along their input channels (:func:`_stack_inputs`).

    One transposed product with ``count`` times the input channels costs about as much as one with
    the plain weight where the input has few channels (a first convolution on 3-channel pixels:
    oneDNN's backward-data kernel is slow there whatever the channel count), and reads ``s`` once.
    """
    if isinstance(stacked, tuple):
        return [op.vjp(s, w, x) for w in stacked]
    channel = -1 if op.kind == "linear" else 1
    shape = list(x.shape)
    shape[channel] *= count
    # The transposed product reads only the shape of its input argument (a dense layer not even that).
    like = x if op.kind == "linear" else x.new_empty(shape)
    return list(op.vjp(s, stacked, like).chunk(count, dim=channel))


@register
class FlatRule(LinearRule):
    r"""LRP-flat: relevance spread uniformly over each output's receptive field.

    :math:`R_i = \sum_j \frac{1}{\sum_i 1} R_j` — the w² rule with all weights set to one and
    no bias. Used on the input layer to get explanations independent of pixel values.
    """

    multiplicative = False
    label = "flat"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        return {"weight": weight, "bias": bias, "weight_ones": torch.ones_like(weight)}

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        ones_w = prepared["weight_ones"]
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        z = _cached(
            prepared,
            "receptive_count",
            key,
            lambda: stabilize(op.apply(torch.ones_like(x[:1]), ones_w), self.stabilizer),
        )
        s = torch.div(y, z).mul_(grad)
        return Propagation(relevance=op.vjp(s, ones_w, x))


@register
class WSquareRule(LinearRule):
    r"""LRP-w²: :math:`R_i = \sum_j \frac{w_{ij}^2}{\sum_i w_{ij}^2} R_j`, independent of the input.

    Parameters
    ----------
    bias
        Include ``b²`` in the denominator (Zennit does; the rule as published does not).
    stabilizer
        Sign-aware stabiliser of the denominator.
    """

    multiplicative = False
    label = "w-square"

    def __init__(self, bias: bool = False, stabilizer: float = 1e-6) -> None:
        self.bias = bool(bias)
        self.stabilizer = float(stabilizer)

    def params(self) -> dict[str, Any]:
        return {"bias": self.bias} if self.bias else {}

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        return {
            "weight": weight,
            "bias": bias,
            "weight_square": weight * weight,
            "bias_square": bias * bias if (bias is not None and self.bias) else None,
        }

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        w2, b2 = prepared["weight_square"], prepared["bias_square"]
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        z = _cached(
            prepared, "square_sum", key, lambda: stabilize(op.apply(torch.ones_like(x[:1]), w2, b2), self.stabilizer)
        )
        s = torch.div(y, z).mul_(grad)
        return Propagation(relevance=op.vjp(s, w2, x), bias_relevance=channel_constant_relevance(s, b2, op))


@register
class ModifiedWeightRule(LinearRule):
    r"""The generic rule with any weight modifier ρ, computed by the four-step recipe.

    :math:`z = \epsilon + \rho(W) \star a + \rho(b)`, :math:`s = R / z`,
    :math:`c = \rho(W)^\top \star s`, :math:`R_a = a \odot c`.

    Parameters
    ----------
    weight_fn
        ρ applied to the weight, e.g. ``lambda w: w + 0.1 * w.clamp(min=0)``.
    bias_fn
        ρ applied to the bias; ``None`` keeps the bias, pass ``lambda b: 0 * b`` to drop it.
    epsilon
        Sign-aware stabiliser (0 for none: zero denominators then yield zero relevance).
    name
        Label shown in ledgers.
    """

    label = "modified-weight"

    def __init__(
        self,
        weight_fn: Callable[[Tensor], Tensor],
        bias_fn: Callable[[Tensor], Tensor] | None = None,
        epsilon: float = 0.0,
        name: str = "modified-weight",
    ) -> None:
        self.weight_fn = weight_fn
        self.bias_fn = bias_fn
        self.epsilon = float(epsilon)
        self.label = name  # type: ignore[misc]

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def prepare(self, weight: Tensor, bias: Tensor | None) -> Prepared:
        rho_b = None if bias is None else (bias if self.bias_fn is None else self.bias_fn(bias))
        return {"weight": weight, "bias": bias, "weight_rho": self.weight_fn(weight), "bias_rho": rho_b}

    def propagate(
        self,
        op: LinearOp,
        x: Tensor,
        y: Tensor,
        grad: Tensor,
        prepared: Prepared,
        hints: Hints = Hints(),
    ) -> Propagation:
        w, b = prepared["weight_rho"], prepared["bias_rho"]
        z = stabilize(op.apply(x, w, b), self.epsilon)
        s = safe_divide(y * grad, z)
        return Propagation(grad=op.vjp(s, w, x), bias_relevance=channel_constant_relevance(s, b, op))


# --- element-wise, pooling and products ------------------------------------------------------------


# --- attaching the rules to one call ---------------------------------------------------------------
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
    #: Run the factor and its ledger sums as one compiled kernel (``Explainer(..., compile=True)``).
    compiled: bool = False

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
    _book(spec.entry, per_sample_dot(y, grad), per_sample_dot(y, scaled), spec.constant_relevance(scaled))


def _book(entry: LedgerEntry, out: Tensor, kept: Tensor, bias: Tensor | None) -> None:
    """One output factor's row: ``out = Σ y ⊙ g``, handed on ``Σ y ⊙ g' − bias``, the bias share."""
    entry.add(out, kept if bias is None else kept - bias, bias)


def _fusable(spec: FactorSpec) -> bool:
    """Whether the compiled kernel computes exactly this factor: LRP-ε's own, with a per-channel constant at most."""
    rule = spec.rule
    return (
        spec.compiled
        and rule.epsilon != 0.0
        and type(rule).output_factor is EpsilonRule.output_factor
        and spec.full_constant is None
        and not spec.finite_only
    )


def epsilon_step(spec: FactorSpec, y: Tensor, grad: Tensor, nonnegative: bool = False) -> Tensor:
    """The scaled gradient ``g ⊙ y / stab(y)`` of one output factor, booked in its ledger row."""
    if _fusable(spec):
        channel_last = spec.channel_op is not None and spec.channel_op.kind == "linear"
        ledger = spec.entry is not None
        fused = kernels.fused_epsilon(
            y,
            grad,
            spec.rule.epsilon,
            spec.channel_constant,
            nonnegative=nonnegative,
            channel_last=channel_last,
            ledger=ledger,
        )
        if fused is not None:
            scaled, out, kept, bias = fused
            if spec.entry is not None:
                assert out is not None and kept is not None  # the kernel sums whenever there is a row
                _book(spec.entry, out, kept, bias)
            return scaled
    scaled = spec.rule.output_factor(y, grad, nonnegative=nonnegative)
    record_factor(spec, y, grad, scaled)
    return scaled


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
        return epsilon_step(spec, y, grad, nonnegative=spec.after_relu), None


class AffineWithFactor(torch.autograd.Function):
    """Per-channel affine map ``y = c ⊙ scale + shift`` (an eval-mode batch norm) with LRP-ε on the layer.

    It keeps its output ``y`` instead of its input ``c`` (the same memory; the batch norm's
    input is freed after the forward pass): the backward pass reads ``y`` for the factor and
    the ledger and multiplies by ``scale``, allocating one buffer instead of recomputing ``y``
    into a second one.
    """

    @staticmethod
    def forward(ctx: Any, c: Tensor, scale: Tensor, shift: Tensor, spec: FactorSpec) -> Tensor:
        ctx.spec = spec
        y = torch.addcmul(shift, c, scale)
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        y, scale = ctx.saved_tensors
        scaled = epsilon_step(ctx.spec, y, grad)
        return scaled.mul_(scale) if scaled is not grad else grad * scale, None, None, None


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
    dots: DotMemo | None = None


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
        relevance_out = None
        if bundle.entry is not None:
            relevance_out = None if bundle.dots is None else bundle.dots.recall(y, grad)
            if relevance_out is None:
                relevance_out = per_sample_dot(y.contiguous(), grad.contiguous())
        if result.grad is not None:
            grad_x = result.grad
            relevance_in = per_sample_dot(x, grad_x) if bundle.entry is not None else None
            if relevance_in is not None and bundle.dots is not None:
                bundle.dots.remember(x, grad_x, relevance_in)
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
            assert relevance_out is not None
            bundle.entry.add(relevance_out, relevance_in, result.bias_relevance)
        return grad_x, None


def attach_factor(
    call: Call,
    owner: OpRecord,
    y: Tensor,
    rule: EpsilonRule,
    entry: LedgerEntry | None,
    channel_constant: Tensor | None,
    channel_op: LinearOp | None,
    full_constant: Tensor | None = None,
) -> Tensor:
    """Attach LRP-ε's output-side factor to ``y``, or hand it to the ReLU fused with ``owner``."""
    if entry is None and rule.epsilon == 0.0:
        return y  # LRP-0 without bookkeeping is the plain gradient
    spec = FactorSpec(rule, entry, channel_constant, channel_op, full_constant, compiled=call.compiled)
    if owner.relu_proxy is not None:
        spec.after_relu = True
        call.hand_over(owner.relu_proxy, spec)
        return y
    return OutputFactor.apply(y, spec)  # type: ignore[no-any-return]


# --- batch normalisation -------------------------------------------------------------------------
# A batch norm is a per-channel map: the channel dimension is the one of a convolution's output.
_CHANNEL_OP = LinearOp(kind="conv")


def batchnorm_scale_shift(
    mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """An eval-mode batch norm as ``x ⊙ scale + shift`` (per channel, detached)."""
    scale = torch.rsqrt(var.detach() + eps)
    if weight is not None:
        scale = scale * weight.detach()
    shift = -mean.detach() * scale
    if bias is not None:
        shift = shift + bias.detach()
    return scale, shift


def batchnorm_affine(bound: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as ``x ⊙ scale + shift``, both shaped to broadcast over channels."""
    x = bound["input"]
    scale, shift = batchnorm_scale_shift(
        bound["running_mean"], bound["running_var"], bound["weight"], bound["bias"], bound["eps"]
    )
    shape = (1, -1, *([1] * (x.dim() - 2)))
    return scale.to(x.dtype).view(shape), shift.to(x.dtype).view(shape)


@dataclass
class LayerOutput:
    """What a layer hands to the batch norm folded into it: its output and, for LRP-ε, its factor's parts."""

    output: Tensor
    record: OpRecord
    rule: EpsilonRule | None
    op: LinearOp
    bias: Tensor | None


class FoldedBatchNorm(Rule):
    """Stands in for a batch norm folded into the layer before it (assigned by the plan pass).

    With a modified-weight rule the layer already computed with the folded weights, so its output
    *is* the batch norm's output. With LRP-0/ε the layer ran natively: the batch norm runs here and
    carries the layer's output factor, with the folded bias as the layer's constant term.
    """

    label = "folded-batch-norm"

    def forward(self, call: Call) -> Tensor:
        bound = call.bound
        x = bound["input"]
        handed = call.take_handed()
        recorded = call.record.recorded
        same = all(bound[n] is recorded[n] for n in ("running_mean", "running_var", "weight", "bias"))
        if not isinstance(handed, LayerOutput) or handed.output is not x or not same:
            raise GraphChangedError(
                f"batch norm at '{call.display_path}' no longer directly follows the layer it was folded into "
                "when the plan was recorded; create a new Explainer for this model."
            )
        rule, owner = handed.rule, handed.record
        if rule is None:
            return x  # type: ignore[no-any-return]  # the layer already computed with the folded weights
        folded_bias = call.weights.folded_bias(recorded, handed.bias)
        entry = call.entry_for(owner, rule)
        if owner.relu_proxy is None and (call.ledger or rule.epsilon != 0.0):
            scale, shift = batchnorm_affine(bound)
            spec = FactorSpec(rule, entry, folded_bias, handed.op, compiled=call.compiled)
            return AffineWithFactor.apply(x, scale, shift, spec)  # type: ignore[no-any-return]
        return attach_factor(call, owner, call.native(), rule, entry, folded_bias, handed.op)
