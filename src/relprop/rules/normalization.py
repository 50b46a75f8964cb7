r"""Rules for normalisations that divide by a statistic of their input (LayerNorm, RMSNorm, ``x / d``).

Batch normalisation in eval mode is a per-channel affine map and is handled with the linear
rules (:class:`~relprop.rules.EpsilonRule`, or folded into the layer before it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..errors import UnsupportedOperationError
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
    absorbs its share (shown in the ledger). RMSNorm, ``F.normalize`` and a division by a
    relevance-carrying tensor (``x / d``) divide by a constant and conserve exactly.
    """

    applies_to = ("normalization",)
    label = "normalization"
    #: How each normalisation kind is computed with its statistic held constant.
    normalizers: ClassVar[dict[str, Callable[[NormalizationRule, Call], Tensor]]] = {
        "layer_norm": _layer_norm,
        "rms_norm": _rms_norm,
        "normalize": _normalize,
        "div": _division,
    }

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
