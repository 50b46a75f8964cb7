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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .. import aten as _aten
from .._decompose import DECOMPOSITIONS
from ..errors import ConfigurationError, GraphChangedError, UnsupportedOperationError
from ..kinds import KINDS, NATIVE_INPLACE, Kind, Operands
from ..ledger import LedgerEntry
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


@dataclass
class Track:
    """A relevance-carrying tensor: the operation that produced it (``-1``: the input) and its function."""

    ref: weakref.ReferenceType[Tensor]
    producer: int
    func: Callable[..., Any] | None


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
    carrying: dict[int, Track] = field(default_factory=dict)
    keepalive: list[Tensor] = field(default_factory=list)
    stack: list[tuple[str, nn.Module]] = field(default_factory=list)
    index: int = 0
    records: list[OpRecord] = field(default_factory=list)
    entries: list[LedgerEntry] = field(default_factory=list)
    direct: DirectRelevance = field(default_factory=DirectRelevance)
    pending: dict[int, Any] = field(default_factory=dict)
    stale: dict[int, weakref.ReferenceType[Tensor]] = field(default_factory=dict)
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

    def __post_init__(self) -> None:
        self.stack.append(("", self.model))

    def track(self, t: Tensor, producer: int, func: Callable[..., Any] | None) -> None:
        self.carrying[id(t)] = Track(weakref.ref(t), producer, func)
        if self.mode == "plan":
            self.keepalive.append(t)

    def lookup(self, t: Tensor) -> Track | None:
        tr = self.carrying.get(id(t))
        if tr is not None and tr.ref() is t:
            return tr
        return None

    def mark_stale(self, t: Tensor) -> None:
        self.stale[id(t)] = weakref.ref(t)
        if self.mode == "plan":
            self.keepalive.append(t)

    def is_stale(self, t: Tensor) -> bool:
        ref = self.stale.get(id(t))
        return ref is not None and ref() is t


def _iter_tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterable[Tensor]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Tensor):
                    yield b


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
        return self.tracer.handle(func, args, kwargs or {})


class Tracer:
    """Classifies each torch call and records it (plan) or hands it to its handler (explain)."""

    def __init__(self, state: CallState) -> None:
        self.state = state

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        st = self.state
        if st.opaque_depth:
            with torch.no_grad():
                return func(*args, **kwargs)
        carrying: list[tuple[int, Tensor, Track]] = []
        for position, t in enumerate(_iter_tensors(args, kwargs)):
            if st.stale and st.is_stale(t):
                self._raise_stale(func, t)
            tr = st.lookup(t)
            if tr is not None:
                carrying.append((position, t, tr))
        if not carrying:
            return func(*args, **kwargs)
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
        if st.mode == "plan":
            return self._record(func, self._classify(func, args, kwargs, carrying), args, kwargs, carrying)
        return self._replay(func, args, kwargs, carrying)

    @staticmethod
    def _classify(
        func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], carrying: list[tuple[int, Tensor, Track]]
    ) -> Kind:
        operands = Operands(func, args, kwargs, tuple(c[0] for c in carrying), frozenset(id(c[1]) for c in carrying))
        return KINDS.classify(operands)

    def _raise_stale(self, func: Callable[..., Any], t: Tensor) -> None:
        path = display_path(self.state.stack[-1][0])
        if t is self.state.model_input:
            raise UnsupportedOperationError(
                f"the model changes its input in place and then reads it ({describe_function(func)} in module "
                f"'{path}'); relprop runs in-place operations out of place (it never changes your inputs), so use "
                "the operation's result instead (x = x.mul_(2) or x = x * 2, not a bare x.mul_(2))."
            )
        raise UnsupportedOperationError(
            f"module '{path}' uses a tensor after an in-place operation on it ({describe_function(func)} "
            "reads it); relprop runs in-place operations out of place so that rules can attach, so the "
            "model must use the operation's result (x = x.relu_() or x += y, not a bare x.relu_())."
        )

    def _track_outputs(self, func: Callable[..., Any], args: Sequence[Any], result: Any, index: int) -> list[Tensor]:
        outputs = [args[0]] if func in NATIVE_INPLACE else [t for t in _output_tensors(result) if carries(t)]
        for t in outputs:
            self.state.track(t, index, func)
        return outputs

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
        self._track_outputs(func, args, result, rec.index)
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
        plan = st.plan
        assert plan is not None
        rec = plan.ops[st.index] if st.index < len(plan.ops) else None
        path = st.stack[-1][0]
        if rec is None or rec.func is not func or rec.path != path:
            # Not the next planned operation: fine for queries (x.size(), x.dim()) only.
            if self._classify(func, args, kwargs, carrying).counted:
                self._raise_changed(func, path, rec)
            result = run_native(st, func, args, kwargs)
            if func in NATIVE_INPLACE or any(carries(t) for t in _output_tensors(result)):
                self._raise_changed(func, path, rec)
            return result
        st.index += 1
        assert rec.handler is not None
        call = Call(st, rec, rec.kind_info, func, args, kwargs, [c[1] for c in carrying])
        if rec.kind_info.check is not None:
            rec.kind_info.check(call)  # the model's mode may have changed since the plan was recorded
        result = rec.handler.forward(call)
        for name in st.deferred_taps.pop(rec.index, ()):
            result = self._wrap_tap(name, result, rec.index)
        self._track_outputs(func, args, result, rec.index)
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
        replaced = None
        # Hooks run inside the model's forward, where the relevance mode is active; what the engine
        # computes here itself must not be traced as the model's own operations.
        with torch._C.DisableTorchFunction():
            if st.opaque_depth:
                st.opaque_depth -= 1
                if st.opaque_depth:
                    return None
                replaced = output = self._finish_opaque(module, output)
            if name in st.taps.paths:
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
        with torch.enable_grad(), RelevanceMode(tracer):
            return forward(x)
    finally:
        for handle in handles:
            handle.remove()


def _push_module(tracer: Tracer, name: str, module: nn.Module, args: Any) -> None:
    tracer.enter_module(name, module, args)


def _pop_module(tracer: Tracer, name: str, module: nn.Module, args: Any, output: Any) -> Any:
    return tracer.exit_module(name, module, output)
