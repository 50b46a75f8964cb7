"""Tracing one forward pass: which torch calls touch relevance, and in which module.

While the model runs, a :class:`torch.overrides.TorchFunctionMode` scoped to this one call sees
every torch function the model calls — ``F.conv2d`` inside ``nn.Conv2d`` as well as ``F.relu``,
``out += identity`` or ``torch.cat`` written in a ``forward`` — and forward hooks registered on
this model instance name the module that called it. Tensors that depend on the input
("relevance-carrying") are tracked by identity.

The :class:`Tracer` has two modes. Recording (``"plan"``) classifies each call into its
:class:`~relprop.kinds.Kind`, runs the kind's checks and appends an
:class:`~relprop.engine.plan.OpRecord`. Replaying (``"explain"``) checks that the model calls
what the plan recorded and hands each call to the handler the plan assigned
(``record.handler.forward(call)``), which returns the output with the rule's backward attached.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .. import aten as _aten
from .._decompose import DECOMPOSITIONS
from ..errors import ConfigurationError, GraphChangedError, RelpropError, UnsupportedOperationError
from ..kinds import KINDS, NATIVE_INPLACE, Kind, Operands, is_inplace
from ..ledger import DotMemo, LedgerEntry
from ..ops import describe_function, is_elementwise_module
from ..rules.base import Rule
from .call import Call, DirectRelevance, carries, run_native
from .model import display_path
from .plan import OpRecord, Plan
from .taps import LayerRequest, Tap, TapSink, condition_mask

if TYPE_CHECKING:
    from ..composites import Composite
    from .weights import WeightCache

__all__ = ["CallState", "Tracer", "run_traced"]


@dataclass(slots=True)
class Track:
    """A relevance-carrying tensor: the operation that produced it (``-1``: the input) and its function."""

    ref: weakref.ReferenceType[Tensor]
    producer: int
    func: Callable[..., Any] | None


@dataclass
class View:
    """A view of a relevance-carrying tensor: ``func(base, *args[1:], **kwargs)[index]``."""

    ref: weakref.ReferenceType[Tensor]
    base: Tensor
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    index: int | None

    def derive(self, tracer: Tracer, base: Tensor) -> Tensor:
        """The same view of another version of the base, computed through the tracer."""
        out = tracer.handle(self.func, (base, *self.args[1:]), dict(self.kwargs))
        return out if self.index is None else out[self.index]  # type: ignore[no-any-return]


@dataclass
class CallState:
    """Per-call state: carrying tensors, the module stack, the plan being recorded or replayed."""

    mode: str
    model: nn.Module
    composite: Composite
    weights: WeightCache
    plan: Plan | None = None
    with_ledger: bool = False
    taps: LayerRequest = field(default_factory=LayerRequest)
    #: Run the rules' fused kernels compiled (``Explainer(..., compile=True)``).
    compiled: bool = False
    carrying: dict[int, Track] = field(default_factory=dict)
    keepalive: list[Tensor] = field(default_factory=list)
    stack: list[tuple[str, nn.Module]] = field(default_factory=list)
    index: int = 0
    records: list[OpRecord] = field(default_factory=list)
    entries: list[LedgerEntry] = field(default_factory=list)
    direct: DirectRelevance = field(default_factory=DirectRelevance)
    # The last ledger dot product a layer's backward computed (the layer below may need the same one).
    dots: DotMemo = field(default_factory=DotMemo)
    pending: dict[int, Any] = field(default_factory=dict)
    # In-place aliasing, run functionally: the newest version of each tensor changed in place, and
    # how every view of a relevance-carrying tensor was derived (to re-derive it from a newer base).
    versions: dict[int, tuple[weakref.ReferenceType[Tensor], Tensor]] = field(default_factory=dict)
    views: dict[int, View] = field(default_factory=dict)
    model_input: Tensor | None = None
    samples: int | None = None
    # Element-wise modules explained as one operation (see Tracer.enter_module): while one runs,
    # the torch calls inside it run natively without a graph.
    opaque_depth: int = 0
    opaque: list[tuple[nn.Module, Tensor, OpRecord, Rule]] = field(default_factory=list)
    # Taps: the operation that produced each tapped module's output, and how often the module ran.
    tapped: dict[str, int] = field(default_factory=dict)
    tap_calls: dict[str, int] = field(default_factory=dict)
    deferred_taps: dict[int, list[str]] = field(default_factory=dict)
    sink: TapSink | None = None
    tap_paths: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.stack.append(("", self.model))
        # Read at every module exit: computed once (the request's property builds new sets each time).
        self.tap_paths = self.taps.paths

    def track(self, t: Tensor, producer: int, func: Callable[..., Any] | None) -> None:
        self.carrying[id(t)] = Track(weakref.ref(t), producer, func)
        if self.mode == "plan":
            self.keepalive.append(t)

    def carrying_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[tuple[int, Tensor, Track]]:
        """The relevance-carrying tensors among a call's arguments: (position among its tensors, tensor, track).

        Called for every torch call of the forward pass, so written as one loop without helper calls.
        """
        found: list[tuple[int, Tensor, Track]] = []
        known = self.carrying
        if not known:
            return found
        position = 0
        for a in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(a, Tensor):
                tr = known.get(id(a))
                if tr is not None and tr.ref() is a:
                    found.append((position, a, tr))
                position += 1
            elif isinstance(a, (list, tuple)):
                for b in a:
                    if isinstance(b, Tensor):
                        tr = known.get(id(b))
                        if tr is not None and tr.ref() is b:
                            found.append((position, b, tr))
                        position += 1
        return found

    def lookup(self, t: Tensor) -> Track | None:
        tr = self.carrying.get(id(t))
        if tr is not None and tr.ref() is t:
            return tr
        return None

    def newest(self, t: Tensor) -> Tensor | None:
        """The newer version of ``t`` if the model changed ``t`` in place (``None`` if it did not)."""
        entry = self.versions.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def view_of(self, t: Tensor) -> View | None:
        """How ``t`` was derived as a view of a relevance-carrying tensor, if it was."""
        view = self.views.get(id(t))
        return view if view is not None and view.ref() is t else None


#: Per torch function, what the tracer must know before its common path (see :func:`_traits`).
_SPECIAL = 1  # needs handle()'s full path: native in-place write, ATen overload, iteration, decomposition
_KINDLESS = 2  # belongs to no kind: a query such as ``x.size()``, never a planned operation
_TRAITS: dict[Any, int] = {}
_TRAITS_VERSION = [-1]


def _traits(func: Callable[..., Any]) -> int:
    """The flags of ``func`` (cached per function; the cache follows the kind registry's version)."""
    if _TRAITS_VERSION[0] != KINDS.version or len(_TRAITS) > 4096:
        _TRAITS.clear()
        _TRAITS_VERSION[0] = KINDS.version
    try:
        return _TRAITS[func]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable: the full path decides
        return _SPECIAL
    traits = _TRAITS[func] = _compute_traits(func)
    return traits


def _compute_traits(func: Callable[..., Any]) -> int:
    kind = KINDS.of_function(func)
    special = (
        func in NATIVE_INPLACE
        or isinstance(func, torch._ops.OpOverload)
        or func is torch.Tensor.__iter__
        or func in DECOMPOSITIONS
        or (kind is not None and kind.decomposable)
    )
    return (_SPECIAL if special else 0) | (_KINDLESS if kind is None else 0)


def _is_special(func: Callable[..., Any]) -> bool:
    return bool(_traits(func) & _SPECIAL)


def _output_tensors(result: Any) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [r for r in result if isinstance(r, Tensor)]
    return []


class RelevanceMode(TorchFunctionMode):
    """The per-call torch function mode that routes operations to the tracer."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        try:
            return self.tracer.handle(func, args, kwargs or {})
        except RelpropError as error:
            if isinstance(error, TypeError):
                # Python's operator wrappers (x ** 2, h / h.sum()) turn a TypeError into
                # NotImplemented and then a bare "unsupported operand" error: carry ours past them.
                raise _OperatorError(error) from None
            raise


class _OperatorError(RuntimeError):
    """Carries relprop's error for an operator (``x ** 2``) past Python's operator wrapper."""

    def __init__(self, error: RelpropError) -> None:
        super().__init__(str(error))
        self.error = error


class Tracer:
    """Classifies each torch call and records it (plan) or hands it to its handler (explain)."""

    def __init__(self, state: CallState) -> None:
        self.state = state
        # Tensors the tracer made to be written into (copies for functional writes): written natively.
        self._scratch: dict[int, weakref.ReferenceType[Tensor]] = {}

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        st = self.state
        if st.opaque_depth:
            with torch.no_grad():
                return func(*args, **kwargs)
        if st.versions:
            args, kwargs = self._resolve(args, kwargs)
        carrying = st.carrying_arguments(args, kwargs)
        if not carrying:
            return func(*args, **kwargs)
        if st.mode == "explain" and not _is_special(func):
            return self._replay(func, args, kwargs, carrying)
        if func in NATIVE_INPLACE and self._writes_carrying(args):
            return self._write_functionally(func, args, kwargs)
        if isinstance(func, torch._ops.OpOverload):
            # Graphs of ATen operators (converted TorchScript): see them as the functional calls.
            func, args, kwargs = _aten.normalize(func, args, kwargs)
        if func is torch.Tensor.__iter__:
            # Iterating yields slices without torch calls we could see: unbind explicitly.
            return iter(self.handle(torch.unbind, (args[0], 0), {}))
        decomposition = DECOMPOSITIONS.get(func)
        if decomposition is not None:
            # A composite function (multi-head attention, addmm): run its parts through this
            # tracer so that each gets its own rule and ledger row.
            with RelevanceMode(self):
                return decomposition(st.stack[-1][0], *args, **kwargs)
        kind = KINDS.of_function(func)
        if kind is not None and kind.decomposable:
            parts = self._decomposition(func, kind, args, kwargs, carrying)
            if parts is not None:
                with RelevanceMode(self):
                    return parts(st.stack[-1][0], *args, **kwargs)
        if st.mode == "plan":
            return self._record(func, self._classify(func, args, kwargs, carrying), args, kwargs, carrying)
        return self._replay(func, args, kwargs, carrying)

    def _decomposition(
        self,
        func: Callable[..., Any],
        kind: Kind,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, Track]],
    ) -> Callable[..., Any] | None:
        """The parts the rule of a decomposable operation explains it through (same answer in both modes)."""
        st = self.state
        path, module = st.stack[-1]
        provisional = OpRecord(-1, func, describe_function(func), kind.name, path, type(module), ())
        if kind.check is not None:
            kind.check(Call(st, provisional, kind, func, args, kwargs, [c[1] for c in carrying]))
        rule = st.composite.rule_for(provisional.layer_info())
        return None if rule is None else rule.decomposition(func)

    @staticmethod
    def _classify(
        func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], carrying: list[tuple[int, Tensor, Track]]
    ) -> Kind:
        operands = Operands(func, args, kwargs, tuple(c[0] for c in carrying), frozenset(id(c[1]) for c in carrying))
        return KINDS.classify(operands)

    # -- in-place aliasing ----------------------------------------------------------------------
    def current(self, t: Tensor) -> Tensor:
        """The version of ``t`` a reader gets now: its newest version, or its view of a newer base."""
        st = self.state
        newer = st.newest(t)
        if newer is not None:
            return self.current(newer)
        view = st.view_of(t)
        if view is not None:
            base = self.current(view.base)
            if base is not view.base:
                derived = view.derive(self, base)
                self._set_version(t, derived, write_through=False)
                return derived
        return t

    def _resolve(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Sequence[Any], dict[str, Any]]:
        """The call's arguments with every tensor replaced by its current version."""
        return tuple(self._resolved(a) for a in args), {k: self._resolved(v) for k, v in kwargs.items()}

    def _resolved(self, a: Any) -> Any:
        # A method, not a recursive closure: a closure that calls itself is a reference cycle that
        # would keep this call's tensors (and the model's weights, through their graphs) alive.
        if isinstance(a, Tensor):
            return self.current(a)
        if isinstance(a, (list, tuple)) and any(isinstance(b, Tensor) for b in a):
            return type(a)(self._resolved(b) for b in a)
        return a

    def _writes_carrying(self, args: Sequence[Any]) -> bool:
        target = args[0] if args else None
        if not isinstance(target, Tensor) or self.state.lookup(target) is None:
            return False
        ref = self._scratch.get(id(target))
        return ref is None or ref() is not target

    def _scratch_copy(self, t: Tensor) -> Tensor:
        """A recorded clone of ``t`` that the tracer may write into natively."""
        copy: Tensor = self.handle(torch.Tensor.clone, (t,), {})
        self._scratch[id(copy)] = weakref.ref(copy)
        return copy

    def _write_functionally(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """``t[i] = v`` or ``t.copy_(v)`` on a relevance-carrying ``t``: written into a copy, the new version of ``t``.

        Written natively, the write would change a tensor that the rules' backward functions may have
        saved (or a view of a custom function's output, which autograd refuses).
        """
        target = args[0]
        copy = self._scratch_copy(target)
        result = self.handle(func, (copy, *args[1:]), kwargs)
        self._set_version(target, copy)
        return result

    def _set_version(self, t: Tensor, new: Tensor, write_through: bool = True) -> None:
        """Make ``new`` the version of ``t`` every later reader gets; a changed view changes its base too."""
        st = self.state
        st.versions[id(t)] = (weakref.ref(t), new)
        if st.mode == "plan":
            st.keepalive.append(t)
        view = st.view_of(t) if write_through else None
        if view is None:
            return
        # Writing through a view: the base's new version is a copy with the view's region replaced.
        base = self.current(view.base)
        copy = self._scratch_copy(base)
        region = view.derive(self, copy)
        self._scratch[id(region)] = weakref.ref(region)
        self.handle(torch.Tensor.copy_, (region, new), {})
        st.track(copy, st.index - 1, torch.Tensor.copy_)  # the write is what the copy holds now
        self._set_version(view.base, copy)

    def _after(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], kind: Kind, result: Any, index: int
    ) -> None:
        """Bookkeeping after an operation ran: new versions, views, tracked outputs."""
        st = self.state
        outputs = [args[0]] if func in NATIVE_INPLACE else [t for t in _output_tensors(result) if carries(t)]
        for t in outputs:
            st.track(t, index, func)
        first = args[0] if args else None
        if not isinstance(first, Tensor) or func in NATIVE_INPLACE:
            return
        if isinstance(result, Tensor) and result is not first and is_inplace(func, args, kwargs):
            self._set_version(first, result)  # an in-place call that ran out of place
        elif not kind.ruled and st.lookup(first) is not None:  # routing: its outputs may be views
            several = not isinstance(result, Tensor)
            for i, out in enumerate(outputs):
                if out is not first and out._is_view():
                    st.views[id(out)] = View(
                        weakref.ref(out), first, func, tuple(args), dict(kwargs), i if several else None
                    )

    # -- plan mode ------------------------------------------------------------------------------
    def _record(
        self,
        func: Callable[..., Any],
        kind: Kind,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, Track]],
    ) -> Any:
        st = self.state
        path, module = st.stack[-1]
        rec = OpRecord(
            index=st.index,
            func=func,
            function=describe_function(func),
            kind=kind.name,
            path=path,
            module_type=type(module),
            producers=tuple(c[2].producer for c in carrying),
        )
        call = Call(st, rec, kind, func, args, kwargs, [c[1] for c in carrying])
        if kind.check is not None:
            kind.check(call)
        rec.recorded = {name: call.bound[name] for name in kind.recorded}
        # Rules of operations that are no layers are known now; a rule that cuts the graph (a
        # constant output or denominator) shapes what the plan follows.
        rule = st.composite.rule_for(rec.layer_info()) if kind.ruled and not kind.positional else None
        result = call.native() if rule is None else rule.trace(call)
        if not kind.counted and not [t for t in _output_tensors(result) if carries(t)] and func not in NATIVE_INPLACE:
            return result  # a query (shape, comparison, detach ...): no relevance passes
        if rule is None and kind.needs_rule:
            self._raise_unsupported(rec, kind)
        st.records.append(rec)
        st.index += 1
        self._after(func, args, kwargs, kind, result, rec.index)
        return result

    @staticmethod
    def _raise_unsupported(rec: OpRecord, kind: Kind) -> None:
        short = rec.function.rsplit(".", 1)[-1]
        hint = f" ({kind.name} {kind.hint})" if kind.hint else ""
        raise UnsupportedOperationError(
            f"relprop has no rule for {rec.function} on relevance-carrying tensors in module '{rec.display_path}' "
            f"({rec.module_type.__name__}){hint}; give one with rules=[(relprop.match.op({short!r}) & "
            f"relprop.match.path({rec.path!r}), relprop.rules.GradientRule())], which uses its plain gradient "
            "and lets the ledger show what it creates or absorbs, or remove the operation from the model."
        )

    # -- explain mode ---------------------------------------------------------------------------
    def _replay(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, Track]],
    ) -> Any:
        st = self.state
        ops = st.plan.ops  # type: ignore[union-attr]
        index = st.index
        rec = ops[index] if index < len(ops) else None
        path = st.stack[-1][0]
        if rec is None or rec.func is not func or rec.path != path:
            return self._unplanned(func, args, kwargs, carrying, path, rec)
        st.index = index + 1
        kind = rec.kind_info
        call = Call(st, rec, kind, func, args, kwargs, [c[1] for c in carrying])
        if kind.check is not None:
            kind.check(call)  # the model's mode may have changed since the plan was recorded
        result = rec.handler.forward(call)  # type: ignore[union-attr]
        if st.deferred_taps:
            for name in st.deferred_taps.pop(rec.index, ()):
                result = self._wrap_tap(name, result, rec.index)
        self._after(func, args, kwargs, kind, result, rec.index)
        return result

    def _unplanned(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, Track]],
        path: str,
        rec: OpRecord | None,
    ) -> Any:
        """A call that is not the next planned operation: fine for queries (``x.size()``, ``x.dim()``) only."""
        if not _traits(func) & _KINDLESS and self._classify(func, args, kwargs, carrying).counted:
            self._raise_changed(func, path, rec)
        result = run_native(func, args, kwargs)
        if func in NATIVE_INPLACE or any(carries(t) for t in _output_tensors(result)):
            self._raise_changed(func, path, rec)
        return result

    @staticmethod
    def _raise_changed(func: Callable[..., Any], path: str, rec: OpRecord | None) -> None:
        expected = "the end of the plan" if rec is None else f"{rec.function} in '{rec.display_path}'"
        raise GraphChangedError(
            f"the model called {describe_function(func)} in '{display_path(path)}' where the recorded plan has "
            f"{expected}; its operations depend on the input values, so explain such inputs one at a time "
            "or use a separate Explainer per input type."
        )

    # -- modules --------------------------------------------------------------------------------
    def enter_module(self, name: str, module: nn.Module, args: Any) -> None:
        """Forward pre-hook: push the module; start an element-wise module explained as one operation."""
        st = self.state
        st.stack.append((name, module))
        if st.opaque_depth:
            st.opaque_depth += 1
            return
        if not is_elementwise_module(module) or not args or not isinstance(args[0], Tensor):
            return
        x = args[0]
        track = st.lookup(x)
        if track is None:
            return
        module_type = type(module)
        if st.mode == "plan":
            rec = OpRecord(
                index=st.index,
                func=module_type,
                function=f"{module_type.__module__}.{module_type.__qualname__}",
                kind="activation",
                path=name,
                module_type=module_type,
                producers=(track.producer,),
            )
            rule = st.composite.rule_for(rec.layer_info())
            if rule is None or not rule.whole_modules:
                return  # another rule: its torch calls are recorded one by one
            st.records.append(rec)
        else:
            plan = st.plan
            assert plan is not None
            planned = plan.ops[st.index] if st.index < len(plan.ops) else None
            if planned is None or planned.func is not module_type or planned.path != name:
                return
            rec, rule = planned, planned.rule
        assert rule is not None
        st.index += 1
        st.opaque.append((module, x, rec, rule))
        st.opaque_depth = 1

    def exit_module(self, name: str, module: nn.Module, output: Any) -> Any:
        """Forward hook: pop the module; finish an element-wise module; tap its output if asked."""
        st = self.state
        if len(st.stack) > 1:
            st.stack.pop()
        if not st.opaque_depth and name not in st.tap_paths:
            return None  # the common case: nothing to finish or tap
        replaced = None
        # Hooks run inside the model's forward, where the relevance mode is active; what the engine
        # computes here itself must not be traced as the model's own operations.
        with torch._C.DisableTorchFunction():
            if st.opaque_depth:
                st.opaque_depth -= 1
                if st.opaque_depth:
                    return None
                replaced = output = self._finish_opaque(module, output)
            if name in st.tap_paths:
                tapped = self._tap(name, output)
                if tapped is not None:
                    replaced = tapped
        return replaced

    def _finish_opaque(self, module: nn.Module, output: Any) -> Tensor:
        st = self.state
        frame_module, x, rec, rule = st.opaque.pop()
        assert frame_module is module
        if not isinstance(output, Tensor):
            raise UnsupportedOperationError(
                f"element-wise module '{rec.path}' ({rec.module_type.__name__}) returned {type(output).__name__}, "
                "not a tensor; give it a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]."
            )
        y = rule.module_output(Call(st, rec, rec.kind_info, rec.func, (x,), {}, [x]), x, output)
        st.track(y, rec.index, rec.func)
        return y

    def _tap(self, name: str, output: Any) -> Any:
        st = self.state
        count = st.tap_calls[name] = st.tap_calls.get(name, 0) + 1
        if count > 1:
            raise ConfigurationError(
                f"module '{name}' runs more than once per forward pass, so its output is not one tensor to tap; "
                "tap a module that runs once (e.g. its parent or a wrapper)."
            )
        track = st.lookup(output) if isinstance(output, Tensor) else None
        if track is None:
            what = "a relevance-carrying tensor" if isinstance(output, Tensor) else f"a {type(output).__name__}"
            raise ConfigurationError(
                f"module '{name}' does not return {what} that depends on the input, so no relevance arrives there; "
                "tap a module whose output is a tensor computed from the input."
            )
        if st.mode == "plan":
            st.tapped[name] = track.producer
            return None
        assert st.plan is not None
        producer = st.plan.ops[track.producer] if track.producer >= 0 else None
        if producer is not None and producer.merge_bn is not None:
            # The batch norm after this layer is folded into it, as in a canonized model: the layer's
            # output is the folded layer's, which the batch norm produces. Tap that one.
            st.deferred_taps.setdefault(producer.merge_bn, []).append(name)
            return None
        tapped = self._wrap_tap(name, output, track.producer)
        st.track(tapped, track.producer, track.func)
        return tapped

    def _wrap_tap(self, name: str, output: Tensor, producer: int) -> Tensor:
        st = self.state
        assert st.sink is not None
        st.sink.shapes[name] = (output.shape, output.dtype, output.device)
        condition = st.taps.conditions.get(name)
        mask = None if condition is None else condition_mask(name, condition, output)
        entry = None
        if mask is not None and st.with_ledger:
            entry = LedgerEntry(producer, name, "condition", "condition", samples=st.samples)
            st.entries.append(entry)
        return Tap.apply(output, name, st.sink, mask, entry)  # type: ignore[no-any-return]


def run_traced(state: CallState, x: Tensor, forward: Callable[[Tensor], Any]) -> Any:
    """Run ``forward(x)`` with the tracer: module hooks on the model instance and the function mode.

    The hooks and the mode are removed in ``finally``, also when the model raises.
    """
    state.model_input = x
    state.samples = int(x.shape[0])
    state.track(x, -1, None)
    tracer = Tracer(state)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in state.model.named_modules():
            if module is state.model:
                continue
            handles.append(module.register_forward_pre_hook(functools.partial(_push_module, tracer, name)))
            handles.append(module.register_forward_hook(functools.partial(_pop_module, tracer, name), always_call=True))
        with torch.enable_grad():
            with RelevanceMode(tracer):
                output = forward(x)
            # The newest version, if the model changed its output in place (outside the mode: the
            # re-derivation records its operations through the tracer itself).
            return tracer.current(output) if isinstance(output, Tensor) and state.versions else output
    except _OperatorError as carried:
        raise carried.error from None
    finally:
        for handle in handles:
            handle.remove()


def _push_module(tracer: Tracer, name: str, module: nn.Module, args: Any) -> None:
    tracer.enter_module(name, module, args)


def _pop_module(tracer: Tracer, name: str, module: nn.Module, args: Any, output: Any) -> Any:
    return tracer.exit_module(name, module, output)
