r"""LRP rules: one small object per rule.

relprop propagates relevance in the *Input×Gradient* form: every tensor ``t`` of the
forward pass carries a modified gradient ``g_t`` and its relevance is ``R_t = t ⊙ g_t``.
A rule changes the backward step of one operation. For a linear layer
``y = W ⋆ x + b`` every rule below follows the four steps of the generic rule

.. math::

    z_k = \epsilon + \sum_{0,j} a_j\,\rho(w_{jk}),\qquad
    s_k = R_k / z_k,\qquad
    c_j = \sum_k \rho(w_{jk})\, s_k,\qquad
    R_j = a_j c_j,

with ``R_k = y_k g_k`` the relevance arriving at the layer's output. Rules whose
relevance is a multiple of the input (``R_j = a_j c_j``) hand ``g_x = c`` down the
backward pass; the others (z^B, flat, w²) produce the relevance directly.

Stabilisers are sign-aware: ``stab(z) = z + ε·sign(z)`` with ``sign(0) = +1``, so a
denominator never crosses zero.

The rules' arithmetic lives here as plain tensor functions (``propagate``) so that it can
be read and tested on its own; :mod:`relprop.engine` decides where each rule applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .errors import ConfigurationError
from .ops import LinearOp

__all__ = [
    "AlphaBetaRule",
    "AttentionRule",
    "EpsilonRule",
    "FlatRule",
    "FunctionRule",
    "GammaRule",
    "GradientRule",
    "Hints",
    "LRP0Rule",
    "LinearRule",
    "ModifiedWeightRule",
    "NormRule",
    "NormalizationRule",
    "PassRule",
    "ProductRule",
    "Propagation",
    "ProportionalMaxPoolRule",
    "Rule",
    "SoftmaxRule",
    "StopRule",
    "WSquareRule",
    "WinnerTakesAllRule",
    "ZBoxRule",
    "ZPlusRule",
    "stabilize",
]

LINEAR_KINDS = frozenset({"conv", "conv_transpose", "linear"})


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """Return ``z + ε·sign(z)`` with ``sign(+0) = +1``: the sign-aware stabilised denominator.

    Computed as ``copysign(|z| + ε, z)`` in one fresh buffer (large fresh allocations are what
    element-wise work costs on CPU). A negative zero counts as negative; the rules only divide
    by a zero denominator where the numerator is zero too, so the sign of that zero never shows.
    """
    if epsilon == 0.0:
        return z
    return z.abs().add_(epsilon).copysign_(z)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Divide element-wise, returning 0 where the denominator is 0 (instead of NaN or ±inf)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1, denominator))


def per_sample_sum(t: Tensor) -> Tensor:
    """Sum all but the first (batch) dimension."""
    return t.reshape(t.shape[0], -1).sum(1)


def per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """Return ``Σ a ⊙ b`` per sample without materialising the product.

    On CPU one ``torch.dot`` per sample is several times faster than a batched matrix
    product or ``(a * b).sum()`` for activation-sized tensors.
    """
    n = a.shape[0]
    if a.shape != b.shape or not (a.is_contiguous() and b.is_contiguous()):
        return per_sample_sum(a * b)
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    if a.device.type == "cpu":
        return torch.stack([torch.dot(a2[i], b2[i]) for i in range(n)])
    return torch.linalg.vecdot(a2, b2)


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


class Rule:
    """Base class: a rule decides how relevance passes one kind of operation.

    Subclasses list the operation kinds they apply to in ``kinds`` (see
    :func:`relprop.ops.classify`); a composite entry whose rule does not apply to an
    operation's kind is skipped for that operation.
    """

    kinds: ClassVar[frozenset[str]] = frozenset()
    #: Short name shown in ledgers and rule tables.
    label: ClassVar[str] = "rule"

    def supports(self, kind: str) -> bool:
        """Return whether the rule can be applied to an operation of this kind."""
        return kind in self.kinds

    def params(self) -> dict[str, Any]:
        """Return the rule's parameters (for display)."""
        return {}

    def describe(self) -> str:
        """One-line description with parameters, e.g. ``gamma(gamma=0.25)``."""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{self.label}({params})" if params else self.label

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"


def _fmt(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}" if value.numel() > 1 else f"{value.item():g}"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


# --- linear layers -------------------------------------------------------------------------------
class LinearRule(Rule):
    """Base class for rules on convolutions, transposed convolutions and dense layers.

    ``prepare`` computes the modified parameters once (the engine caches them until the
    weights change); ``propagate`` does one backward step. Both are plain tensor code.
    """

    kinds = LINEAR_KINDS
    #: True for rules that are the ordinary gradient times a factor on the layer's output
    #: (LRP-0, LRP-ε); the engine then keeps the framework's own backward kernels.
    output_factor_only: ClassVar[bool] = False
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


class EpsilonRule(LinearRule):
    r"""LRP-ε: :math:`R_j = \sum_k \frac{a_j w_{jk}}{\epsilon + \sum_{0,j} a_j w_{jk}} R_k`.

    The stabiliser ε absorbs weak or contradictory relevance; larger ε gives sparser, less
    noisy explanations. ``ε = 0`` is LRP-0. In the gradient form the rule is the ordinary
    gradient with the output-side factor ``y / stab(y)``, so it costs one element-wise
    product more than Gradient×Input. Besides dense and convolutional layers it applies to
    every other linear operation with an optional constant term: residual sums, average
    pooling and batch normalisation that could not be merged into a layer.

    Parameters
    ----------
    epsilon
        Stabiliser added to the denominator with the sign of the denominator.
    """

    kinds = LINEAR_KINDS | {"add", "avgpool", "batchnorm"}
    output_factor_only = True
    label = "epsilon"

    def __init__(self, epsilon: float = 1e-6) -> None:
        if not epsilon >= 0:
            raise ConfigurationError(f"epsilon must be >= 0, got {epsilon!r}; pass a non-negative float.")
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


class LRP0Rule(EpsilonRule):
    r"""LRP-0: :math:`R_j = \sum_k \frac{a_j w_{jk}}{\sum_{0,j} a_j w_{jk}} R_k`.

    Applied to every layer it equals Gradient×Input.
    """

    label = "lrp-0"

    def __init__(self) -> None:
        super().__init__(epsilon=0.0)

    def params(self) -> dict[str, Any]:
        return {}


class NormRule(EpsilonRule):
    r"""Proportional redistribution for parameter-free linear operations.

    :math:`R_i = \frac{x_i}{\mathrm{stab}(\sum_j x_j)} R` for sums of several tensors (residual
    connections), average pooling and unmerged batch normalisation; the same arithmetic as
    :class:`EpsilonRule` with a small stabiliser, named for what it does on these operations.
    """

    kinds = frozenset({"add", "avgpool", "batchnorm"})
    label = "norm"

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
    """``s = (y ⊙ grad) / denominator`` computed in the denominator's own buffer (no new allocation)."""
    return denominator.reciprocal_().mul_(y).mul_(grad)


def _nonnegative(x: Tensor, hints: Hints) -> bool:
    if hints.input_nonnegative is not None:
        return hints.input_nonnegative
    return not bool((x < 0).any())


def _sum_relevance(
    s_a: Tensor, b_a: Tensor | None, s_b: Tensor, b_b: Tensor | None, op: LinearOp, sign: float
) -> Tensor | None:
    """Bias share of two sign-split terms: ``Σ s_a b_a + sign · Σ s_b b_b``."""
    first = channel_constant_relevance(s_a, b_a, op)
    second = channel_constant_relevance(s_b, b_b, op)
    if first is None or second is None:
        return first if second is None else sign * second
    return first + sign * second


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
        if not gamma >= 0:
            raise ConfigurationError(f"gamma must be >= 0, got {gamma!r}; pass a non-negative float.")
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
        negative_outputs = not hints.output_after_relu and bool((y < 0).any())
        if nonnegative and not negative_outputs:
            # ReLU nets: z = (W + γW⁺) a + b + γb⁺ ≥ y, so z > 0 wherever y > 0 carries relevance.
            s_pos = _relevance_ratio_(op.apply(x, w_pos, b_pos).clamp_(min=0).add_(eps), y, grad)
            if not hints.output_after_relu:
                s_pos.masked_fill_(y <= 0, 0.0)
            return Propagation(
                grad=op.vjp(s_pos, w_pos, x), bias_relevance=channel_constant_relevance(s_pos, b_pos, op)
            )
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
            bias_rel = channel_constant_relevance(s, bias * (1 + 0.5 * g), op) + channel_constant_relevance(
                d, bias.abs() * (0.5 * g), op
            )
        return Propagation(grad=grad_x, bias_relevance=bias_rel)


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
        if alpha < 0 or beta < 0:
            raise ConfigurationError(
                f"alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}; choose beta >= 0 and "
                "alpha = beta + 1."
            )
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ConfigurationError(
                f"the alpha-beta rule needs alpha = beta + 1 to conserve relevance, got alpha={alpha!r}, "
                f"beta={beta!r}; set alpha={beta + 1!r}."
            )
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
        z = stabilize(z, self.stabilizer) if bool((z < 0).any()) else z.add_(self.stabilizer)
        s = _relevance_ratio_(z, y, grad)
        del z
        relevance = x * op.vjp(s, weight, x)
        relevance.sub_(low * op.vjp(s, w_pos, x)).sub_(high * op.vjp(s, w_neg, x))
        return Propagation(relevance=relevance)


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
class PassRule(Rule):
    r"""Pass-through for element-wise activations: :math:`R_{in} = R_{out}` element by element.

    What each activation gets: for ReLU, leaky ReLU and PReLU (piecewise linear through 0)
    ``f(x)/x = f'(x)``, so this *is* the ordinary gradient and runs with PyTorch's own
    kernels. For GELU, SiLU, Tanh, ELU, ReLU6/hardtanh, softplus and the others the gradient
    is replaced by ``f(x) / stab(x)``; at ``x = 0`` an activation with ``f(0) ≠ 0``
    (sigmoid, softplus) cannot hand relevance to its input, and the ledger records that
    loss. Sigmoid-like *gates* are better treated by :class:`ProductRule`.
    """

    kinds = frozenset({"relu", "activation"})
    label = "pass"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)


class GradientRule(Rule):
    """Use the operation's ordinary gradient (Gradient×Input semantics for this operation).

    Applies to any operation, including ones relprop has no rule for (give it by operation
    name, e.g. ``(relprop.match.op("exp"), GradientRule())``). The ledger records the
    relevance the operation creates or absorbs, so a non-conserving choice stays visible.
    """

    kinds = frozenset(
        {
            "relu",
            "activation",
            "maxpool",
            "unknown",
            "mul",
            "matmul",
            "softmax",
            "attention",
            "layer_norm",
            "rms_norm",
            "normalize",
            "statistic",
            "div",
            "merge",
        }
    )
    label = "gradient"


class WinnerTakesAllRule(Rule):
    """Max pooling: all relevance of a pooled output goes to the input that won the max."""

    kinds = frozenset({"maxpool"})
    label = "winner-takes-all"


class ProportionalMaxPoolRule(Rule):
    r"""Max pooling: relevance split over the window in proportion to the inputs.

    :math:`R_i = \sum_{w \ni i} \frac{x_i}{\mathrm{stab}(\sum_{j \in w} x_j)} R_w` — the
    pooling treated like a sum over its window (as sum pooling is treated).
    """

    kinds = frozenset({"maxpool"})
    label = "proportional"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)


class ProductRule(Rule):
    """Element-wise or matrix product of two relevance-carrying tensors.

    ``mode="uniform"`` splits the relevance of each product equally between the two factors
    (AttnLRP's rule for bilinear products; conserving). ``mode="gate"`` treats a factor that
    comes from a gating function (sigmoid, hard-sigmoid, softmax) as a constant weight so
    that all relevance flows into the other factor (as CP-LRP does for attention). ``"auto"``
    (default) gates when exactly one factor is such a gate and splits uniformly otherwise.
    """

    kinds = frozenset({"mul", "matmul"})
    label = "product"

    def __init__(self, mode: str = "auto") -> None:
        if mode not in ("auto", "uniform", "gate"):
            raise ConfigurationError(f"ProductRule mode must be 'auto', 'uniform' or 'gate', got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode}


class SoftmaxRule(GradientRule):
    r"""AttnLRP's rule for softmax (Achtibat et al. 2024, Proposition 3.1).

    A Taylor decomposition of :math:`s = \mathrm{softmax}(x)` at the input itself, with the
    bias term left out: :math:`R_{in} = x \odot (R_{out} - s \sum_j R_{out,j})`. With
    :math:`R_{out} = s \odot g` this is :math:`x \odot J_s^\top g`, the ordinary gradient times
    the input, so the rule runs with PyTorch's own softmax backward. It does not conserve: the
    ledger shows what the softmax absorbs. Masked inputs (``-inf``) receive no relevance.
    """

    kinds = frozenset({"softmax"})
    label = "softmax"


class StopRule(Rule):
    """Treat the operation's output as a constant: no relevance flows into it.

    CP-LRP (Ali et al. 2022) holds the attention weights (the softmax) constant so that all
    relevance of an attention head flows through its values; on the statistics of a
    hand-written normalisation (``x.pow(2).mean()``, ``rsqrt``, ``var``) it is AttnLRP's identity
    rule (the normalisation divides by a constant). Conservation is kept by the operation that
    uses the constant: ``x ⊙ c`` hands all its relevance to ``x``.
    """

    kinds = frozenset({"softmax", "statistic", "unknown"})
    label = "constant"


class NormalizationRule(Rule):
    r"""The identity rule on normalisations: the statistic the input is divided by is a constant.

    LayerNorm :math:`y = \frac{x - \mu(x)}{\sigma(x)} \odot w + b` is treated as the affine map
    :math:`y = \frac{x - \mu(x)}{\sigma} \odot w + b` with :math:`\sigma` fixed (AttnLRP,
    Proposition 3.4; CP-LRP's LN rule): the centring is linear and conserves, the bias ``b``
    absorbs its share (shown in the ledger). RMSNorm, ``F.normalize`` and a division by a
    relevance-carrying tensor (``x / d``) divide by a constant and conserve exactly.
    """

    kinds = frozenset({"layer_norm", "rms_norm", "normalize", "div"})
    label = "normalization"


class AttentionRule(Rule):
    """Fused scaled dot-product attention ``softmax(q kᵀ · scale + mask) v``.

    ``mode="uniform"`` (AttnLRP): the two bilinear products split relevance equally between
    their factors and the softmax is explained by :class:`SoftmaxRule`, which in the gradient
    form is the ordinary gradient with the gradients of ``q`` and ``k`` scaled by 1/4 and that of
    ``v`` by 1/2; the fused kernel runs unchanged. ``mode="cp"`` (CP-LRP): the attention weights
    are constant, so all relevance goes to ``v`` and attention conserves it.
    """

    kinds = frozenset({"attention"})
    label = "attention"

    def __init__(self, mode: str = "uniform") -> None:
        if mode not in ("uniform", "cp"):
            raise ConfigurationError(f"AttentionRule mode must be 'uniform' or 'cp', got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode}


class FunctionRule(Rule):
    """A rule that replaces an operation's computation outright (forward and backward).

    The extension point for attribution methods that change how the gradient passes an
    operation — guided backprop and deconvnet on ReLUs, DeepLIFT's multipliers — and for
    your own rules on operations relprop does not know. ``apply`` receives the torch function
    and its arguments as the model called it and returns the operation's output, usually
    through a custom :class:`torch.autograd.Function`. The engine records nothing in the
    ledger for such an operation: give ``entry``-based bookkeeping yourself if you need it.

    Subclasses set ``kinds`` (e.g. ``frozenset({"relu"})``) and implement :meth:`apply`.
    """

    kinds: ClassVar[frozenset[str]] = frozenset()
    label = "function"

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Compute the operation ``func(*args, **kwargs)`` with this rule's backward."""
        raise NotImplementedError
