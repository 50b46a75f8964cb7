"""The explainer's cache of folded and rule-modified layer weights.

A rule's modified parameters (``W + γW⁺``, ``|W|``, a batch norm folded into ``W`` and ``b``) are
computed once per layer and reused on every call, until a weight changes: each entry remembers
the version counters of the tensors it was computed from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..ops import LinearOp
from ..rules.linear import batchnorm_scale_shift

if TYPE_CHECKING:
    from ..rules.linear import LinearRule
    from .plan import OpRecord

__all__ = ["WeightCache"]

_BN_SOURCES = ("running_mean", "running_var", "weight", "bias")


def _versions(sources: list[Tensor | None]) -> tuple[tuple[int, int], ...]:
    return tuple((id(t), t._version) for t in sources if t is not None)


class WeightCache:
    """Folded and modified weights per layer, recomputed only when their source tensors change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[tuple[tuple[int, int], ...], Any]] = {}

    def values(self) -> list[Any]:
        """Everything cached (folded weights, rules' prepared parameters), for measuring its size."""
        return [value for _, value in self._cache.values()]

    def _get(self, key: tuple[Any, ...], versions: tuple[tuple[int, int], ...]) -> Any:
        cached = self._cache.get(key)
        if cached is not None and cached[0] == versions:
            return cached[1]
        return None

    def folded(
        self, record: OpRecord, weight: Tensor, bias: Tensor | None, op: LinearOp, fold: dict[str, Any] | None
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's weight and bias with the batch norm ``fold`` (its recorded arguments) folded in."""
        if fold is None:
            return weight.detach(), None if bias is None else bias.detach()
        key = ("fold", record.index, id(weight), id(fold["running_mean"]))
        versions = _versions([weight, bias, *(fold[n] for n in _BN_SOURCES)])
        cached = self._get(key, versions)
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
        self._cache[key] = (versions, (folded_weight, folded_bias))
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
        versions = _versions(sources)
        cached = self._get(key, versions)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        folded_weight, folded_bias = self.folded(record, weight, bias, op, fold)
        prepared = rule.prepare(folded_weight, folded_bias)
        self._cache[key] = (versions, prepared)
        return prepared
