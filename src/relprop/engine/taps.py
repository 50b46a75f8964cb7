r"""Inner-layer relevance and conditions: taps on module outputs.

``layers=["layer4"]`` asks for the relevance arriving at a module's output, ``R = y ⊙ g`` with
``g`` the modified gradient the layers above hand down to ``y``. ``conditions={"layer4": mask}``
multiplies that relevance by ``mask`` before it is propagated further down — the basis of
Concept Relevance Propagation (Achtibat et al. 2023): with a batch expanded k times and k
channel masks, one backward pass gives k conditional heatmaps.

A tap is an identity in the forward pass, applied to the module's output by the engine's forward
hook; its backward reads ``y ⊙ g`` (and masks ``g``). A condition writes a ledger row, so the
ledger still closes: the relevance the mask removes is what that row absorbs.

Taps do not change the explanation. A ReLU fused with the layer before it rectifies that layer's
output in place, so a tapped layer output keeps its ReLU separate (the same maths, one more
tensor kept). A batch norm folded into the layer before it stays folded: as in a canonized model,
that layer's output is the folded layer's output, so a tap on the layer reads the relevance at
the batch norm's output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..ledger import LedgerEntry
from ..rules.base import per_sample_dot, per_sample_sum
from .model import display_path

__all__ = ["LAYER_REDUCTIONS", "LayerRequest", "TapSink"]

#: Values of ``layer_reduce``: ``None`` keeps the module output's shape, ``"channels"`` sums over
#: all dimensions after dimension 1 (one value per channel).
LAYER_REDUCTIONS = (None, "channels")


@dataclass(frozen=True)
class LayerRequest:
    """Which module outputs to tap, how to reduce what they receive, and the conditions to apply."""

    layers: tuple[str, ...] = ()
    reduce: str | None = None
    conditions: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def paths(self) -> frozenset[str]:
        """Every module path with a tap (asked for, or conditioned)."""
        return frozenset(self.layers) | frozenset(self.conditions)

    @staticmethod
    def build(
        model: nn.Module, layers: Iterable[str] | None, reduce: str | None, conditions: Mapping[str, Any] | None
    ) -> LayerRequest:
        """Check the request against the model's module paths."""
        if isinstance(layers, str):
            layers = [layers]
        requested = tuple(dict.fromkeys(layers or ()))
        if reduce not in LAYER_REDUCTIONS:
            raise ConfigurationError(f"layer_reduce must be None or 'channels', got {reduce!r}.")
        masks: dict[str, Tensor] = {}
        for path, mask in (conditions or {}).items():
            if not isinstance(mask, Tensor) or (not mask.is_floating_point() and mask.dtype != torch.bool):
                raise ConfigurationError(
                    f"the condition for '{path}' must be a tensor (float or bool) broadcastable to the module's "
                    f"output, got {type(mask).__name__}."
                )
            masks[path] = mask
        known = dict(model.named_modules())
        for path in (*requested, *masks):
            if not isinstance(path, str) or path not in known or path == "":
                some = [p for p in known if p][:12]
                more = f" (and {len(known) - 1 - len(some)} more)" if len(known) - 1 > len(some) else ""
                raise ConfigurationError(
                    f"the model has no module {path!r} to tap; give a module path such as "
                    f"{', '.join(repr(p) for p in some)}{more}."
                )
        return LayerRequest(requested, reduce, masks)


class TapSink:
    """Collects what the taps of one call read in the backward pass."""

    def __init__(self, request: LayerRequest) -> None:
        self.request = request
        self.relevance: dict[str, Tensor] = {}
        self.shapes: dict[str, tuple[torch.Size, torch.dtype, torch.device]] = {}

    def add(self, path: str, relevance: Tensor) -> None:
        self.relevance[path] = relevance if path not in self.relevance else self.relevance[path] + relevance

    def layers(self) -> dict[str, Tensor]:
        """The relevance at each requested layer (zeros where no relevance arrived), reduced as asked."""
        out: dict[str, Tensor] = {}
        for path in self.request.layers:
            r = self.relevance.get(path)
            if r is None:
                shape, dtype, device = self.shapes[path]
                r = torch.zeros(shape, dtype=dtype, device=device)
            if self.request.reduce == "channels" and r.dim() > 2:
                r = r.reshape(r.shape[0], r.shape[1], -1).sum(2)
            out[path] = r
        return out


class Tap(torch.autograd.Function):
    """Identity forward; backward records ``y ⊙ g`` for a module output and applies its condition."""

    @staticmethod
    def forward(
        ctx: Any, y: Tensor, path: str, sink: TapSink, mask: Tensor | None, entry: LedgerEntry | None
    ) -> Tensor:
        ctx.path, ctx.sink, ctx.mask, ctx.entry = path, sink, mask, entry
        ctx.save_for_backward(y)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        (y,) = ctx.saved_tensors
        relevance = y * grad
        ctx.sink.add(ctx.path, relevance.detach())
        mask: Tensor | None = ctx.mask
        if mask is None:
            return grad, None, None, None, None
        if ctx.entry is not None:
            ctx.entry.add(per_sample_dot(y.contiguous(), grad.contiguous()), per_sample_sum(relevance * mask))
        return grad * mask, None, None, None, None


def condition_mask(path: str, mask: Tensor, output: Tensor) -> Tensor:
    """The condition for ``path`` as a mask of the output's dtype and device, checked to broadcast."""
    try:
        shape = torch.broadcast_shapes(tuple(mask.shape), tuple(output.shape))
    except RuntimeError:
        shape = None
    if shape != tuple(output.shape):
        raise ConfigurationError(
            f"the condition for '{display_path(path)}' has shape {tuple(mask.shape)}, which does not broadcast to "
            f"the module's output of shape {tuple(output.shape)}; give e.g. shape "
            f"{(output.shape[0], output.shape[1], *([1] * (output.dim() - 2)))} to select channels."
        )
    return mask.to(device=output.device, dtype=output.dtype)
