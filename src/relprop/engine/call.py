"""What a rule receives: one operation call of the explaining forward pass.

A :class:`Call` carries the torch function and its arguments as the model called it, the
operation's :class:`~relprop.engine.plan.OpRecord` (its kind, module path, the rule the composite
chose, the facts the plan passes found), and the services a rule needs: the arguments bound by
name, the native computation (in-place operations run out of place), the ledger entry (created
on first use), the weight cache, and hand-overs between operations that a plan pass fused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..kinds import NATIVE_INPLACE, Kind, is_inplace, out_of_place
from ..ledger import DotMemo, LedgerEntry
from ..rules.base import Probe, Rule
from .model import display_path

if TYPE_CHECKING:
    from .plan import OpRecord, Plan
    from .tracing import CallState
    from .weights import WeightCache

__all__ = ["Call", "DirectRelevance", "carries"]


def carries(t: Any) -> bool:
    """Whether ``t`` is a tensor that can carry relevance (floating point, part of the graph)."""
    return isinstance(t, Tensor) and t.requires_grad and (t.is_floating_point() or t.is_complex())


class DirectRelevance:
    """Relevance that rules hand directly to the model input (z^B, flat, w² on the input layer)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total: Tensor | None = None

    def add(self, relevance: Tensor) -> None:
        r = relevance.detach()
        self.total = r if self.total is None else self.total + r


def run_native(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Run ``func`` itself; an in-place call runs out of place (its result becomes the tensor's new version)."""
    if func in NATIVE_INPLACE or not is_inplace(func, args, kwargs):
        return func(*args, **kwargs)
    target, rest, keywords = out_of_place(func, args, kwargs)
    return target(*rest, **keywords)


class Call:
    """One operation call as a rule sees it.

    Attributes
    ----------
    func, args, kwargs
        The torch function and its arguments, as the model called it.
    record
        The operation's plan record: index, kind, module path, the composite's rule, plan facts
        (``input_nonnegative``, ``merge_bn``, ``relu_proxy`` ...).
    kind
        The operation's :class:`~relprop.kinds.Kind`.
    carrying
        The arguments that carry relevance, in argument order.
    """

    def __init__(
        self,
        state: CallState,
        record: OpRecord,
        kind: Kind,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        carrying: Sequence[Tensor],
    ) -> None:
        self.state = state
        self.record = record
        self.kind = kind
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.carrying = list(carrying)

    # -- arguments ---------------------------------------------------------------------------------
    @functools.cached_property
    def bound(self) -> dict[str, Any]:
        """The arguments by name, defaults filled in (from the kind's signature)."""
        return self.kind.bind(self.func, self.args, self.kwargs)

    def replaced(self, name: str, value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's ``(args, kwargs)`` with argument ``name`` replaced, wherever it was given."""
        names = self.kind.signature_of(self.func).names
        position = names.index(name)
        if position < len(self.args):
            args = list(self.args)
            args[position] = value
            return tuple(args), dict(self.kwargs)
        return self.args, {**self.kwargs, name: value}

    def is_carried(self, t: Any) -> bool:
        """Whether ``t`` is a relevance-carrying tensor of this forward pass."""
        return isinstance(t, Tensor) and self.state.lookup(t) is not None

    def producer_function(self, t: Tensor) -> Callable[..., Any] | None:
        """The torch function that produced the relevance-carrying tensor ``t`` (``None`` for the input)."""
        track = self.state.lookup(t)
        return None if track is None else track.func

    def is_model_input(self, t: Tensor) -> bool:
        """Whether ``t`` is the model input itself."""
        return t is self.state.model_input

    @staticmethod
    def carries(t: Any) -> bool:
        """Whether ``t`` is a tensor that can carry relevance."""
        return carries(t)

    # -- computing ---------------------------------------------------------------------------------
    def native(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None) -> Any:
        """The operation itself (on ``args``/``kwargs`` if given); in-place calls run out of place.

        Rules never write into the model's tensors: the engine makes the result of an in-place call
        the new version of the tensor it would have changed, and every later reader of that tensor
        (or of a view of it) gets the new version.
        """
        return run_native(self.func, self.args if args is None else args, self.kwargs if kwargs is None else kwargs)

    def constant_part(self) -> Tensor | None:
        """The operation evaluated with its relevance-carrying inputs at 0 (the constant of an affine map)."""
        carried = {id(t) for t in self.carrying}

        def zeroed(a: Any) -> Any:
            return torch.zeros_like(a) if isinstance(a, Tensor) and id(a) in carried else a

        func, args, kwargs = out_of_place(self.func, self.args, self.kwargs)
        with torch.no_grad():
            result = func(*[zeroed(a) for a in args], **{k: zeroed(v) for k, v in kwargs.items()})
        return result if isinstance(result, Tensor) else None

    def with_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Call:
        """This call with other arguments (same operation, same record)."""
        return Call(self.state, self.record, self.kind, self.func, args, kwargs, self.carrying)

    def batch_first(self, t: Tensor) -> bool:
        """Whether ``t``'s first dimension is the batch (so a ledger row can hold one value per sample)."""
        return t.dim() > 0 and t.shape[0] == self.state.samples

    def probed(self, compute: Callable[[Call], Any], entry: LedgerEntry | None = None) -> Any:
        """``compute(call)`` between ledger probes: the row records ``Σ x ⊙ g`` at the inputs and the outputs.

        ``entry`` defaults to this operation's row; without a ledger this is ``compute(self)``.
        Every relevance-carrying output is probed, also when the operation returns several.
        """
        entry = entry or self.entry
        if entry is None:
            return compute(self)
        finite_only = self.kind.masks
        probes = {id(t): Probe.apply(t, entry, "in", finite_only) for t in self.carrying}

        def swap(a: Any) -> Any:
            if isinstance(a, Tensor):
                return probes.get(id(a), a)
            if isinstance(a, (list, tuple)):
                return type(a)(swap(b) for b in a)
            return a

        result = compute(
            self.with_arguments([swap(a) for a in self.args], {k: swap(v) for k, v in self.kwargs.items()})
        )
        if carries(result):
            return Probe.apply(result, entry, "out", finite_only)
        if isinstance(result, (list, tuple)) and any(carries(r) for r in result):
            probed = [Probe.apply(r, entry, "out", finite_only) if carries(r) else r for r in result]
            return type(result)(*probed) if hasattr(result, "_fields") else type(result)(probed)
        return result

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def ledger(self) -> bool:
        """Whether this call keeps a ledger."""
        return self.state.with_ledger

    @property
    def compiled(self) -> bool:
        """Whether the rules run their fused kernels compiled (see :mod:`relprop.rules.kernels`)."""
        return self.state.compiled

    @functools.cached_property
    def entry(self) -> LedgerEntry | None:
        """This operation's ledger row (created on first use); ``None`` without a ledger."""
        rule = self.record.rule
        return None if rule is None else self.entry_for(self.record, rule)

    def entry_for(self, record: OpRecord, rule: Rule) -> LedgerEntry | None:
        """A new ledger row for ``record`` under ``rule`` (used by operations that finish another's work)."""
        if not self.state.with_ledger:
            return None
        entry = LedgerEntry(
            record.index, display_path(record.path), record.function, rule.describe(), samples=self.state.samples
        )
        self.state.entries.append(entry)
        return entry

    @property
    def direct(self) -> DirectRelevance:
        """Where rules put relevance they hand straight to the model input."""
        return self.state.direct

    @property
    def dots(self) -> DotMemo:
        """The last ledger dot product of this call's backward (see :class:`relprop.ledger.DotMemo`)."""
        return self.state.dots

    @property
    def weights(self) -> WeightCache:
        """The explainer's cache of folded and modified weights."""
        return self.state.weights

    @property
    def plan(self) -> Plan | None:
        """The plan being replayed (``None`` while recording)."""
        return self.state.plan

    @property
    def folded_batch_norm(self) -> dict[str, Any] | None:
        """The recorded arguments of the batch norm a plan pass folded into this layer, if any."""
        if self.record.merge_bn is None or self.state.plan is None:
            return None
        return self.state.plan.ops[self.record.merge_bn].recorded

    def hand_over(self, index: int, value: Any) -> None:
        """Leave ``value`` for the later operation ``index`` that a plan pass fused with this one."""
        self.state.pending[index] = value

    def take_handed(self) -> Any:
        """What an earlier fused operation left for this one (``None`` if nothing)."""
        return self.state.pending.pop(self.record.index, None)

    @property
    def display_path(self) -> str:
        """The module path for messages (``(model)`` for the model's own forward)."""
        return display_path(self.record.path)
