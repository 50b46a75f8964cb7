"""The explainer's cache of folded and rule-modified layer weights.

A rule's modified parameters (``W + γW⁺``, ``|W|``, a batch norm folded into ``W`` and ``b``) are
computed once per layer and reused on every call, until a weight changes. Each entry keeps a
:class:`Snapshot` of the tensors it was computed from and is recomputed when any of them differs:

* another tensor object (a new ``nn.Parameter``, ``load_state_dict(..., assign=True)``);
* other memory (``layer.weight.data = ...``, ``module.to(dtype)``, ``swap_tensors``), another
  shape, strides, dtype or device;
* a write counted by PyTorch's version counter (``load_state_dict``, an optimizer step, any
  in-place operation on the tensor or a ``detach()``-ed alias);
* different values at a few fixed positions (writes that bypass the version counter, such as
  ``weight.data.copy_(...)`` or writes through ``.numpy()``; a change of all or most values is
  seen, a change of a few single values may not be — call :meth:`relprop.Explainer.refresh`).

A snapshot holds the tensors' storage alive, so that a freed weight's memory cannot be reused
by a new weight that would then look unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..ops import LinearOp
from ..rules.linear import batchnorm_scale_shift

if TYPE_CHECKING:
    from ..rules.linear import LinearRule
    from .plan import OpRecord

__all__ = ["Snapshot", "WeightCache"]

_BN_SOURCES = ("running_mean", "running_var", "weight", "bias")
#: Values compared per source tensor to notice writes that bypass the version counter.
PROBES = 64


def _mark(t: Tensor) -> tuple[Any, ...]:
    """Everything PyTorch tracks about a tensor's memory and writes, without reading its values."""
    return (
        t.data_ptr(),
        t.storage_offset(),
        t._version,
        tuple(t.shape),
        t.stride(),
        t.dtype,
        t.device,
        t.requires_grad,
    )


def _probe(t: Tensor) -> tuple[Tensor | None, Tensor] | None:
    """``(positions, values)`` to compare later: all values of a small tensor, else :data:`PROBES` spread ones.

    ``None`` for tensors without values (meta device, empty).
    """
    if t.is_meta or t.numel() == 0:
        return None
    if t.numel() <= PROBES:
        return None, t.detach().clone()
    positions = torch.linspace(0, t.numel() - 1, PROBES, dtype=torch.float64, device=t.device).round().long()
    return positions, torch.take(t.detach(), positions)


def _probe_matches(t: Tensor, probe: tuple[Tensor | None, Tensor]) -> bool:
    positions, values = probe
    return torch.equal(t if positions is None else torch.take(t, positions), values)


@dataclass(eq=False)
class Snapshot:
    """What the tensors a cache entry was computed from looked like then."""

    tensors: tuple[Tensor, ...]
    storages: tuple[Tensor, ...]
    marks: tuple[tuple[Any, ...], ...]
    probes: tuple[tuple[Tensor | None, Tensor] | None, ...]

    @classmethod
    def of(cls, sources: list[Tensor | None]) -> Snapshot:
        tensors = tuple(t for t in sources if t is not None)
        return cls(
            tensors,
            tuple(t.detach() for t in tensors),
            tuple(_mark(t) for t in tensors),
            tuple(_probe(t) for t in tensors),
        )

    def matches(self, sources: list[Tensor | None]) -> bool:
        """Whether ``sources`` are the same tensors, in the same memory, with the same values as then."""
        tensors = [t for t in sources if t is not None]
        if len(tensors) != len(self.tensors):
            return False
        for t, old, mark in zip(tensors, self.tensors, self.marks, strict=True):
            if t is not old or _mark(t) != mark:
                return False
        with torch.no_grad():
            return all(p is None or _probe_matches(t, p) for t, p in zip(tensors, self.probes, strict=True))


class WeightCache:
    """Folded and modified weights per layer, recomputed only when their source tensors change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[Snapshot, Any]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def _get(self, key: tuple[Any, ...], sources: list[Tensor | None]) -> Any:
        cached = self._cache.get(key)
        if cached is not None and cached[0].matches(sources):
            return cached[1]
        return None

    def _put(self, key: tuple[Any, ...], sources: list[Tensor | None], value: Any) -> None:
        self._cache[key] = (Snapshot.of(sources), value)

    def folded(
        self, record: OpRecord, weight: Tensor, bias: Tensor | None, op: LinearOp, fold: dict[str, Any] | None
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's weight and bias with the batch norm ``fold`` (its recorded arguments) folded in."""
        if fold is None:
            return weight.detach(), None if bias is None else bias.detach()
        key = ("fold", record.index, id(weight), id(fold["running_mean"]))
        sources = [weight, bias, *(fold[n] for n in _BN_SOURCES)]
        cached = self._get(key, sources)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        weight = weight.detach()
        bias = None if bias is None else bias.detach()
        scale, shift = batchnorm_scale_shift(
            fold["running_mean"], fold["running_var"], fold["weight"], fold["bias"], fold["eps"]
        )
        shape = [1] * weight.dim()
        shape[op.out_channel_dim] = -1
        folded_weight = weight * scale.view(shape).to(weight)
        folded_bias = shift.to(weight) if bias is None else bias * scale.to(weight) + shift.to(weight)
        self._put(key, sources, (folded_weight, folded_bias))
        return folded_weight, folded_bias

    def folded_bias(self, fold: dict[str, Any], bias: Tensor | None) -> Tensor:
        """The bias of a layer with the batch norm ``fold`` folded in (all that LRP-0/ε need of the folding)."""
        scale, shift = batchnorm_scale_shift(
            fold["running_mean"], fold["running_var"], fold["weight"], fold["bias"], fold["eps"]
        )
        return shift if bias is None else bias.detach() * scale + shift

    def prepared(
        self,
        record: OpRecord,
        rule: LinearRule,
        weight: Tensor,
        bias: Tensor | None,
        op: LinearOp,
        fold: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The rule's modified parameters for this layer (``rule.prepare`` of the folded weights)."""
        key = (record.index, id(rule), id(weight), None if fold is None else id(fold["running_mean"]))
        sources: list[Tensor | None] = [weight, bias]
        if fold is not None:
            sources.extend(fold[n] for n in _BN_SOURCES)
        cached = self._get(key, sources)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        folded_weight, folded_bias = self.folded(record, weight, bias, op, fold)
        prepared = rule.prepare(folded_weight, folded_bias)
        self._put(key, sources, prepared)
        return prepared
