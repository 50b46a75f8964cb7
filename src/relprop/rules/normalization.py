r"""Rules for normalisations that divide by a statistic of their input (LayerNorm, RMSNorm, ``x / d``).

Batch normalisation in eval mode is a per-channel affine map and is handled with the linear
rules (:class:`~relprop.rules.EpsilonRule`, or folded into the layer before it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..errors import ConfigurationError, UnsupportedOperationError
from ..ledger import LedgerEntry
from .base import Rule, per_sample_dot, per_sample_sum, register

if TYPE_CHECKING:
    from ..engine.call import Call

__all__ = ["LayerNormIdentity", "NormalizationRule"]


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


class GroupNormIdentity(torch.autograd.Function):
    r"""GroupNorm (and InstanceNorm: one channel per group) with the deviation of each group held constant.

    Forward: PyTorch's own kernel, ``y = (x - μ_G) · r_G ⊙ w + b``. Backward: per group,
    ``g_x = r_G · (g_w - mean_G(g_w))`` with ``g_w = g ⊙ w`` — the gradient with ``r_G = 1/σ_G``
    fixed, as :class:`LayerNormIdentity` does over the normalised dimensions.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        groups: int,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        entry: LedgerEntry | None,
        native: Callable[[Tensor], Tensor],
    ) -> Tensor:
        grouped = x.detach().reshape(x.shape[0], groups, -1)
        mean = grouped.mean(-1, keepdim=True)
        rstd = torch.rsqrt(grouped.var(-1, unbiased=False, keepdim=True) + eps)
        ctx.groups, ctx.entry = groups, entry
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        return native(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None, None, None]:
        x, mean, rstd, weight, bias = ctx.saved_tensors
        shape = (1, -1, *([1] * (x.dim() - 2)))
        scaled = grad if weight is None else grad * weight.view(shape)
        grouped = scaled.reshape(x.shape[0], ctx.groups, -1)
        grad_x = ((grouped - grouped.mean(-1, keepdim=True)) * rstd).reshape_as(x)
        entry: LedgerEntry | None = ctx.entry
        if entry is not None:
            centred = ((x.reshape(x.shape[0], ctx.groups, -1) - mean) * rstd).reshape_as(x)
            bias_part = None if bias is None else per_sample_sum(grad * bias.view(shape))
            out = per_sample_dot(centred.contiguous(), scaled.contiguous())
            out = out if bias_part is None else out + bias_part
            entry.add(out, per_sample_dot(x.contiguous(), grad_x.contiguous()), bias_part)
        return grad_x, None, None, None, None, None, None


def _check_constant_parameters(call: Call) -> None:
    for name in ("weight", "bias"):
        t = call.bound.get(name)
        if isinstance(t, Tensor) and call.is_carried(t):
            raise UnsupportedOperationError(
                f"module '{call.display_path}' ({call.record.module_type.__name__}) calls {call.record.function} "
                f"with a {name} computed from the input; the normalisation rule needs a constant {name}, so give "
                "this operation a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]."
            )


def _layer_norm(rule: NormalizationRule, call: Call) -> Tensor:
    _check_constant_parameters(call)
    bound = call.bound
    weight, bias = bound["weight"], bound["bias"]
    return LayerNormIdentity.apply(  # type: ignore[no-any-return]
        bound["input"],
        tuple(bound["normalized_shape"]),
        None if weight is None else weight.detach(),
        None if bias is None else bias.detach(),
        float(bound["eps"]),
        call.entry,
    )


def _rms_norm(rule: NormalizationRule, call: Call) -> Tensor:
    _check_constant_parameters(call)
    bound = call.bound
    x, weight = bound["input"], bound["weight"]
    dims = tuple(range(x.dim() - len(tuple(bound["normalized_shape"])), x.dim()))
    eps = bound["eps"] if bound["eps"] is not None else torch.finfo(x.dtype).eps
    y = x * torch.rsqrt(x.detach().square().mean(dims, keepdim=True) + eps)
    return y if weight is None else y * weight.detach()


def _group_norm(rule: NormalizationRule, call: Call) -> Tensor:
    _check_constant_parameters(call)
    bound = call.bound
    if rule.mode == "affine":
        return _affine(call, bound["input"], int(bound["num_groups"]), float(bound["eps"]))
    return _grouped_identity(call, int(bound["num_groups"]), float(bound["eps"]))


def _instance_norm(rule: NormalizationRule, call: Call) -> Tensor:
    _check_constant_parameters(call)
    bound = call.bound
    x = bound["input"]
    if not bound["use_input_stats"] or rule.mode == "affine":
        # With running statistics the normalisation is a per-channel affine map in any mode.
        return _affine(call, x, x.shape[1], float(bound["eps"]))
    return _grouped_identity(call, x.shape[1], float(bound["eps"]))


def _grouped_identity(call: Call, groups: int, eps: float) -> Tensor:
    bound = call.bound
    weight, bias = bound["weight"], bound["bias"]
    native = functools.partial(_native_detached_parameters, call)
    return GroupNormIdentity.apply(  # type: ignore[no-any-return]
        bound["input"],
        groups,
        None if weight is None else weight.detach(),
        None if bias is None else bias.detach(),
        eps,
        call.entry,
        native,
    )


def _native_detached_parameters(call: Call, x: Tensor) -> Tensor:
    args, kwargs = call.args, call.kwargs
    for name in ("weight", "bias"):
        value = call.bound.get(name)
        if isinstance(value, Tensor):
            args, kwargs = call.with_arguments(args, kwargs).replaced(name, value.detach())
    args, kwargs = call.with_arguments(args, kwargs).replaced("input", x)
    return call.native(args, kwargs)  # type: ignore[no-any-return]


def _affine(call: Call, x: Tensor, groups: int, eps: float) -> Tensor:
    """The normalisation with its mean *and* deviation held: ``y = x ⊙ a + c`` per element (the alternative).

    ``c`` takes relevance like a bias (as for an unfolded batch norm); the ledger row records it.
    """
    with torch.no_grad():
        y = _native_detached_parameters(call, x.detach())
        grouped = x.detach().reshape(x.shape[0], groups, -1)
        rstd = torch.rsqrt(grouped.var(-1, unbiased=False, keepdim=True) + eps)
        if not call.bound.get("use_input_stats", True):
            var = call.bound["running_var"].detach()
            rstd = torch.rsqrt(var + eps).view(1, -1, 1).expand(x.shape[0], -1, 1)
        shape = (1, -1, *([1] * (x.dim() - 2)))
        weight = call.bound["weight"]
        scale = rstd.expand_as(grouped).reshape_as(x)
        if weight is not None:
            scale = scale * weight.detach().view(shape)
        shift = y - x.detach() * scale
    return call.probed(lambda c: c.bound["input"] * scale + shift)  # type: ignore[no-any-return]


def _normalize(rule: NormalizationRule, call: Call) -> Tensor:
    # F.normalize(x, p, dim, eps): x divided by its (constant) norm.
    bound = call.bound
    x = bound["input"]
    norm = torch.linalg.vector_norm(x.detach(), bound["p"], dim=bound["dim"], keepdim=True)
    return x / norm.clamp_min(bound["eps"])


def _division(rule: NormalizationRule, call: Call) -> Tensor:
    # x / d with d treated as a constant: the identity rule of a normalisation.
    denominator = call.bound["other"]
    if not isinstance(denominator, Tensor):
        return call.native()  # type: ignore[no-any-return]
    args, kwargs = call.replaced("other", denominator.detach())
    return call.native(args, kwargs)  # type: ignore[no-any-return]


@register
class NormalizationRule(Rule):
    r"""The identity rule on normalisations: the statistic the input is divided by is a constant.

    LayerNorm :math:`y = \frac{x - \mu(x)}{\sigma(x)} \odot w + b` is treated as the affine map
    :math:`y = \frac{x - \mu(x)}{\sigma} \odot w + b` with :math:`\sigma` fixed (AttnLRP,
    Proposition 3.4; CP-LRP's LN rule): the centring is linear and conserves, the bias ``b``
    absorbs its share (shown in the ledger). GroupNorm and InstanceNorm get the same rule per group
    (per channel). RMSNorm, ``F.normalize`` and a division by a relevance-carrying tensor
    (``x / d``) divide by a constant and conserve exactly.

    Parameters
    ----------
    mode
        ``"identity"`` (default, above). ``"affine"`` (GroupNorm, InstanceNorm): the mean is held
        constant too, so the normalisation is the per-element affine map
        :math:`y = x \odot \frac{w}{\sigma} + (b - \mu \frac{w}{\sigma})` whose constant part takes
        relevance like a bias — the treatment of an unfolded batch norm; relevance then stays with
        the elements that are large in absolute terms instead of those that deviate from the mean.
    """

    applies_to = ("normalization",)
    label = "normalization"
    #: How each normalisation kind is computed with its statistic held constant.
    normalizers: ClassVar[dict[str, Callable[[NormalizationRule, Call], Tensor]]] = {
        "layer_norm": _layer_norm,
        "rms_norm": _rms_norm,
        "normalize": _normalize,
        "div": _division,
        "group_norm": _group_norm,
        "instance_norm": _instance_norm,
    }

    def __init__(self, mode: str = "identity") -> None:
        if mode not in ("identity", "affine"):
            raise ConfigurationError(f"NormalizationRule mode must be 'identity' or 'affine', got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {} if self.mode == "identity" else {"mode": self.mode}

    def forward(self, call: Call) -> Tensor:
        normalizer = self.normalizers.get(call.kind.name)
        if normalizer is None:
            raise UnsupportedOperationError(
                f"NormalizationRule has no identity rule for {call.record.function} ({call.kind.name}) in module "
                f"'{call.display_path}'; give the operation another rule."
            )
        return normalizer(self, call)

    def trace(self, call: Call) -> Any:
        # A constant denominator cuts the graph: the plan must follow the same tensors.
        return self.forward(call) if call.kind.name == "div" else call.native()
