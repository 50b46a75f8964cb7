"""The LRP engine: one forward and one backward pass for any PyTorch model.

How it works
------------
While the model runs, a :class:`torch.overrides.TorchFunctionMode` scoped to this one call
sees every torch function the model calls — ``F.conv2d`` inside ``nn.Conv2d`` as well as
``F.relu``, ``out += identity`` or ``torch.cat`` written in a ``forward`` — and forward
hooks registered on this model instance name the module that called it. Tensors that
depend on the input ("relevance-carrying") are tracked by identity.

The first call for an input shape records a *plan* (on one sample): the sequence of
operations, who consumes whose output, the positions of the parametric layers, the rule
each operation gets from the composite, which batch norms fold into the layer before them,
and which layer outputs feed a ReLU alone. Later calls replay the plan and apply the rules
through small autograd functions (:mod:`relprop._autograd`): relevance is
``input ⊙ modified gradient``, so linear operations (reshapes, concatenations, sums)
conserve it without any rule.

Nothing of the model is changed: no parameter, buffer, attribute or class is written;
the hooks and the mode are removed in ``finally``, also when the call raises.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from . import aten as _aten
from . import composites as _composites
from ._autograd import (
    AffineWithFactor,
    DirectRelevance,
    FactorSpec,
    GradScale,
    LayerNormIdentity,
    LinearBundle,
    ModifiedLinear,
    OutputFactor,
    PassActivation,
    PassComputed,
    Probe,
    ProportionalPool,
    ProxyHolder,
    RectifyWithFactor,
)
from ._decompose import DECOMPOSITIONS
from .errors import (
    ConfigurationError,
    GraphChangedError,
    ModelStateError,
    UnsupportedOperationError,
)
from .explanation import Explanation
from .ledger import Ledger, LedgerEntry
from .match import LayerInfo
from .ops import (
    ACTIVATION_FUNCS,
    GATE_FUNCS,
    INPLACE_TO_OUT_OF_PLACE,
    MERGE_FUNCS,
    SCALAR_VALUE_FUNCS,
    LinearOp,
    bind_arguments,
    classify,
    describe_function,
    is_elementwise_module,
)
from .rules import (
    AttentionRule,
    EpsilonRule,
    FunctionRule,
    GradientRule,
    LinearRule,
    NormalizationRule,
    PassRule,
    ProductRule,
    ProportionalMaxPoolRule,
    Rule,
    StopRule,
)
from .targets import initial_relevance

__all__ = ["Explainer", "explain"]

LINEAR_KINDS = ("conv", "conv_transpose", "linear")
# Kinds that are always part of the plan when they touch a relevance-carrying tensor.
_COUNTED_KINDS = frozenset(
    {
        "conv",
        "conv_transpose",
        "linear",
        "batchnorm",
        "relu",
        "activation",
        "maxpool",
        "avgpool",
        "add",
        "mul",
        "matmul",
        "dropout",
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
# Kinds that need a rule from the composite (the structural defaults do not cover them all).
_RULE_REQUIRED = frozenset(
    {"unknown", "softmax", "attention", "layer_norm", "rms_norm", "normalize", "statistic", "div"}
)
# Kinds whose rule may cut the graph (constant outputs, constant denominators); their rule is
# looked up while recording so that the plan follows the same tensors as the explaining pass.
_STRUCTURAL_KINDS = frozenset({"unknown", "softmax", "statistic", "div"})
_TRANSFORMER_KINDS = frozenset({"softmax", "attention", "layer_norm", "rms_norm", "normalize", "statistic", "div"})
_NATIVE_INPLACE = frozenset({torch.Tensor.__setitem__, torch.Tensor.copy_})
_CHANNEL_OP = LinearOp(kind="conv")
_ENGINE_OPTIONS = ("rules", "canonize", "ledger", "top", "contrast")
# Routing operations that keep a non-negative tensor non-negative.
_SIGN_PRESERVING = frozenset(
    [
        "flatten",
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "cat",
        "concat",
        "stack",
        "contiguous",
        "__getitem__",
        "permute",
        "transpose",
        "squeeze",
        "unsqueeze",
        "clone",
        "to",
        "float",
        "double",
        "narrow",
        "select",
        "split",
        "chunk",
        "expand",
        "repeat",
    ]
)


@dataclass
class _Track:
    ref: weakref.ReferenceType[Tensor]
    producer: int
    func: Callable[..., Any] | None


@dataclass
class OpRecord:
    """One relevance-carrying operation recorded in the plan."""

    index: int
    func: Callable[..., Any]
    function: str
    kind: str
    path: str
    module_type: type
    producers: tuple[int, ...]
    groups: int = 1
    bn_params: tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, float] | None = None
    info: LayerInfo | None = None
    rule: Rule | None = None
    merge_bn: int | None = None
    merged_into: int | None = None
    relu_proxy: int | None = None
    proxy_for: int | None = None
    consumers: list[int] = field(default_factory=list)
    output_nonnegative: bool = False
    input_nonnegative: bool = False


@dataclass
class Plan:
    """The recorded operations of a model for one input signature, with rules assigned."""

    ops: list[OpRecord]
    output_producer: int

    def rule_table(self) -> str:
        """A table of the operations that carry a rule: index, module path, function, rule."""
        lines = [f"{'#':>4}  {'module path':<32} {'operation':<36} rule"]
        for rec in self.ops:
            if rec.rule is None and rec.merged_into is None:
                continue
            if rec.merged_into is not None:
                rule = f"(folded into #{rec.merged_into})"
            else:
                assert rec.rule is not None
                rule = rec.rule.describe()
            path = rec.path or "(model)"
            lines.append(f"{rec.index:>4}  {path[:32]:<32} {rec.function[:36]:<36} {rule}")
        return "\n".join(lines)


class _CallState:
    """Per-call state: carrying tensors, the module stack, the plan being recorded or replayed."""

    def __init__(self, mode: str, model: nn.Module, plan: Plan | None, with_ledger: bool) -> None:
        self.mode = mode
        self.carrying: dict[int, _Track] = {}
        self.keepalive: list[Tensor] = []
        self.stack: list[tuple[str, nn.Module]] = [("", model)]
        self.index = 0
        self.records: list[OpRecord] = []
        self.plan = plan
        self.with_ledger = with_ledger
        self.entries: list[LedgerEntry] = []
        self.direct = DirectRelevance()
        self.pending: dict[int, Any] = {}
        self.stale: dict[int, weakref.ReferenceType[Tensor]] = {}
        self.model_input: Tensor | None = None
        self.samples: int | None = None
        # Element-wise modules explained as one operation (see _Dispatcher.enter_module): while
        # one runs, the torch calls inside it run natively without a graph.
        self.opaque_depth = 0
        self.opaque: list[tuple[nn.Module, Tensor, OpRecord]] = []

    def track(self, t: Tensor, producer: int, func: Callable[..., Any] | None) -> None:
        self.carrying[id(t)] = _Track(weakref.ref(t), producer, func)
        if self.mode == "plan":
            self.keepalive.append(t)

    def lookup(self, t: Tensor) -> _Track | None:
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


def _carries(t: Tensor) -> bool:
    return t.requires_grad and (t.is_floating_point() or t.is_complex())


class _RelevanceMode(TorchFunctionMode):
    """The per-call torch function mode that routes operations to the dispatcher."""

    def __init__(self, dispatcher: _Dispatcher) -> None:
        super().__init__()
        self.dispatcher = dispatcher

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return self.dispatcher.handle(func, args, kwargs or {})


class _Dispatcher:
    """Classifies each torch call and records (plan) or applies (explain) its rule."""

    def __init__(self, explainer: Explainer, state: _CallState) -> None:
        self.explainer = explainer
        self.state = state

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        st = self.state
        if st.opaque_depth:
            with torch.no_grad():
                return func(*args, **kwargs)
        carrying: list[tuple[int, Tensor, _Track]] = []
        n_tensors = 0
        for t in _iter_tensors(args, kwargs):
            if st.stale and st.is_stale(t):
                self._raise_stale(func)
            tr = st.lookup(t)
            if tr is not None:
                carrying.append((n_tensors, t, tr))
            n_tensors += 1
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
            # dispatcher so that each gets its own rule and ledger row.
            with _RelevanceMode(self):
                return decomposition(st.stack[-1][0], *args, **kwargs)
        if st.mode == "plan":
            return self._record(func, self._classify(func, args, kwargs, carrying, n_tensors), args, kwargs, carrying)
        return self._replay(func, args, kwargs, carrying, n_tensors)

    def _classify(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
        n_tensors: int,
    ) -> str:
        kind = classify(func, [c[0] for c in carrying], n_tensors)
        if kind == "unknown" and _aten.is_exact(func):
            kind = "exact"
        if kind == "statistic" and (not args or self.state.lookup(args[0]) is None):
            return "unknown"  # c ** x is not a power of the signal
        if kind == "exact" and func in MERGE_FUNCS and _has_constant_part(func, args, kwargs, carrying):
            return "merge"
        return kind

    def _raise_stale(self, func: Callable[..., Any]) -> None:
        path = self.state.stack[-1][0] or "(model)"
        raise UnsupportedOperationError(
            f"module '{path}' uses a tensor after an in-place operation on it ({describe_function(func)} "
            "reads it); relprop runs in-place operations out of place so that rules can attach, so the "
            "model must use the operation's result (x = x.relu_() or x += y, not a bare x.relu_())."
        )

    # -- plan mode ------------------------------------------------------------------------------
    def _record(
        self,
        func: Callable[..., Any],
        kind: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
    ) -> Any:
        st = self.state
        path, module = st.stack[-1]
        index = st.index
        rec = OpRecord(
            index=index,
            func=func,
            function=describe_function(func),
            kind=kind,
            path=path,
            module_type=type(module),
            producers=tuple(c[2].producer for c in carrying),
        )
        if kind in LINEAR_KINDS:
            bound = bind_arguments(kind, args, kwargs)
            self._check_linear_arguments(rec, bound)
            rec.groups = int(bound.get("groups", 1))
        elif kind == "batchnorm":
            bound = bind_arguments(kind, args, kwargs)
            self._check_batchnorm(rec, bound)
            rec.bn_params = (
                bound["running_mean"],
                bound["running_var"],
                bound["weight"],
                bound["bias"],
                float(bound["eps"]),
            )
        elif kind == "dropout":
            self._check_dropout(rec, func, args, kwargs)
        early = self.explainer.composite.rule_for(self._info(rec)) if kind in _STRUCTURAL_KINDS else None
        if isinstance(early, StopRule) or (isinstance(early, NormalizationRule) and kind == "div"):
            result = self._structural(early, func, args, kwargs)
        else:
            result = self._native(func, args, kwargs)
        outputs = [t for t in _output_tensors(result) if _carries(t)]
        if func in _NATIVE_INPLACE:
            outputs = [args[0]]
        if kind not in _COUNTED_KINDS and not outputs:
            return result  # a query (shape, comparison, detach ...): no relevance passes
        if kind in _RULE_REQUIRED:
            info = self._info(rec)
            if self.explainer.composite.rule_for(info) is None:
                self._raise_unsupported(rec)
        st.records.append(rec)
        st.index += 1
        for t in outputs:
            st.track(t, index, func)
        return result

    def _check_linear_arguments(self, rec: OpRecord, bound: dict[str, Any]) -> None:
        for name in ("weight", "bias"):
            t = bound.get(name)
            if isinstance(t, Tensor) and self.state.lookup(t) is not None:
                raise UnsupportedOperationError(
                    f"module '{rec.path or '(model)'}' ({rec.module_type.__name__}) calls {rec.function} with a "
                    f"{name} computed from the input; relprop's layer rules need input-independent weights, so "
                    "give this operation a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]"
                    " or restructure the layer."
                )

    def _check_batchnorm(self, rec: OpRecord, bound: dict[str, Any]) -> None:
        if bound["training"] or bound["running_mean"] is None:
            raise ModelStateError(
                f"batch norm at '{rec.path or '(model)'}' ({rec.module_type.__name__}) normalises with batch "
                "statistics (training mode or no running statistics); call model.eval() before explaining."
            )

    def _check_dropout(
        self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> None:
        names = ("input", "p", "training", "inplace")
        bound: dict[str, Any] = {"p": 0.5, "training": True}
        bound.update(dict(zip(names, args, strict=False)))
        bound.update(kwargs)
        if bound["training"] and float(bound["p"]) > 0:
            raise ModelStateError(
                f"dropout at '{rec.path or '(model)'}' ({rec.module_type.__name__}) is active (training mode); "
                "call model.eval() before explaining."
            )

    def _info(self, rec: OpRecord, **positions: Any) -> LayerInfo:
        return LayerInfo(
            index=rec.index,
            path=rec.path,
            module_type=rec.module_type,
            function=rec.function,
            kind=rec.kind,
            **positions,
        )

    def _raise_unsupported(self, rec: OpRecord) -> None:
        short = rec.function.rsplit(".", 1)[-1]
        path = rec.path or "(model)"
        hint = ""
        if rec.kind in _TRANSFORMER_KINDS:
            hint = (
                f" ({rec.kind} is a transformer operation: explain with composite='attnlrp' or 'cp-lrp', which "
                "have rules for it)"
            )
        raise UnsupportedOperationError(
            f"relprop has no rule for {rec.function} on relevance-carrying tensors in module '{path}' "
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
        carrying: list[tuple[int, Tensor, _Track]],
        n_tensors: int,
    ) -> Any:
        st = self.state
        plan = st.plan
        assert plan is not None
        rec = plan.ops[st.index] if st.index < len(plan.ops) else None
        path = st.stack[-1][0]
        if rec is None or rec.func is not func or rec.path != path:
            # Not the next planned operation: fine for queries (x.size(), x.dim()) only.
            if self._classify(func, args, kwargs, carrying, n_tensors) in _COUNTED_KINDS:
                self._raise_changed(func, path, rec)
            result = self._native(func, args, kwargs)
            if func in _NATIVE_INPLACE or any(_carries(t) for t in _output_tensors(result)):
                self._raise_changed(func, path, rec)
            return result
        st.index += 1
        result = self._apply(rec, func, args, kwargs, carrying)
        outputs = [args[0]] if func in _NATIVE_INPLACE else _output_tensors(result)
        for t in outputs:
            if _carries(t):
                st.track(t, rec.index, func)
        return result

    def _raise_changed(self, func: Callable[..., Any], path: str, rec: OpRecord | None) -> None:
        expected = "the end of the plan" if rec is None else f"{rec.function} in '{rec.path or '(model)'}'"
        raise GraphChangedError(
            f"the model called {describe_function(func)} in '{path or '(model)'}' where the recorded plan has "
            f"{expected}; its operations depend on the input values, so explain such inputs one at a time "
            "or use a separate Explainer per input type."
        )

    def _entry(self, rec: OpRecord, rule: Rule) -> LedgerEntry | None:
        if not self.state.with_ledger:
            return None
        entry = LedgerEntry(rec.index, rec.path or "(model)", rec.function, rule.describe(), samples=self.state.samples)
        self.state.entries.append(entry)
        return entry

    def _native(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run the function itself; in-place operations run out of place (the original goes stale)."""
        out_of_place = INPLACE_TO_OUT_OF_PLACE.get(func)
        if out_of_place is not None:
            self.state.mark_stale(args[0])
            return out_of_place(*args, **kwargs)
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
            result = func(*args, **kwargs)
            if result is not args[0]:
                self.state.mark_stale(args[0])
            return result
        return func(*args, **kwargs)

    def _apply(
        self,
        rec: OpRecord,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
    ) -> Any:
        kind = rec.kind
        if kind == "exact":
            return self._native(func, args, kwargs)  # reshapes, routing, linear maps: the gradient is exact
        rule = rec.rule
        if isinstance(rule, FunctionRule):
            return rule.apply(func, tuple(args), dict(kwargs))
        if kind in LINEAR_KINDS:
            return self._linear(rec, func, args, kwargs)
        if kind == "batchnorm":
            return self._batchnorm(rec, func, args, kwargs)
        if kind == "relu":
            return self._relu(rec, func, args, kwargs)
        if isinstance(rule, GradientRule):
            return self._probed(rec, rule, func, args, kwargs, carrying)
        if isinstance(rule, StopRule):
            return self._structural(rule, func, args, kwargs)
        if isinstance(rule, AttentionRule):
            return self._attention(rec, rule, func, args, kwargs)
        if isinstance(rule, NormalizationRule):
            if kind == "div":
                return self._structural(rule, func, args, kwargs)
            return self._normalization(rec, rule, func, args, kwargs)
        if kind == "activation":
            return self._activation(rec, func, args, kwargs)
        if kind == "maxpool":
            return self._maxpool(rec, func, args, kwargs)
        if kind in ("avgpool", "add"):
            return self._sum_like(rec, func, args, kwargs, carrying)
        if kind in ("mul", "matmul"):
            return self._product(rec, func, args, kwargs, carrying)
        if kind == "dropout":
            return args[0] if args else kwargs["input"]  # inactive (checked when planning): the identity
        return self._native(func, args, kwargs)  # exact

    # -- parametric layers ----------------------------------------------------------------------
    def _linear(self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Tensor:
        rule = rec.rule
        assert isinstance(rule, LinearRule)
        bound = bind_arguments(rec.kind, args, kwargs)
        op = LinearOp.from_call(rec.kind, func, bound)
        x, weight, bias = bound["input"], bound["weight"], bound["bias"]
        if rule.output_factor_only:
            assert isinstance(rule, EpsilonRule)
            y = func(*args, **kwargs)
            if rec.merge_bn is not None:
                self.state.pending[rec.merge_bn] = (y, rec, rule, op, weight, bias)
                return y
            constant = None if bias is None else bias.detach()
            return self._attach_factor(rec, y, rule, self._entry(rec, rule), constant, op)
        assert self.state.plan is not None
        prepared = self.explainer._prepared(self.state.plan.ops, rec, rule, weight, bias, op)
        proxy = None
        if rec.relu_proxy is not None:
            proxy = ProxyHolder()
            self.state.pending[rec.relu_proxy] = proxy
        bundle = LinearBundle(
            op=op,
            rule=rule,
            prepared=prepared,
            entry=self._entry(rec, rule),
            proxy=proxy,
            input_is_model_input=x is self.state.model_input,
            direct=self.state.direct,
            input_nonnegative=True if rec.input_nonnegative else None,
        )
        y = ModifiedLinear.apply(x, bundle)
        if rec.merge_bn is not None:
            self.state.pending[rec.merge_bn] = (y, rec, rule, op, weight, bias)
        return y

    def _attach_factor(
        self,
        owner: OpRecord,
        y: Tensor,
        rule: EpsilonRule,
        entry: LedgerEntry | None,
        channel_constant: Tensor | None,
        channel_op: LinearOp | None,
        full_constant: Tensor | None = None,
    ) -> Tensor:
        if entry is None and rule.epsilon == 0.0:
            return y  # LRP-0 without bookkeeping is the plain gradient
        spec = FactorSpec(rule, entry, channel_constant, channel_op, full_constant)
        if owner.relu_proxy is not None:
            spec.after_relu = True
            self.state.pending[owner.relu_proxy] = spec
            return y
        return OutputFactor.apply(y, spec)

    def _batchnorm(
        self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Tensor:
        bound = bind_arguments("batchnorm", args, kwargs)
        x = bound["input"]
        if rec.merged_into is not None:
            pending = self.state.pending.pop(rec.index, None)
            if pending is None or pending[0] is not x or not self._same_bn_params(rec, bound):
                raise GraphChangedError(
                    f"batch norm at '{rec.path or '(model)'}' no longer directly follows the layer it was folded "
                    "into when the plan was recorded; create a new Explainer for this model."
                )
            _, owner, owner_rule, op, _, bias = pending
            if not owner_rule.output_factor_only:
                return x  # the layer already computed with the folded weights
            folded_bias = self.explainer._folded_bias(self.state.plan.ops, owner, bias)
            if owner.relu_proxy is None and (self.state.with_ledger or owner_rule.epsilon != 0.0):
                scale, shift = self._bn_affine(bound)
                spec = FactorSpec(owner_rule, self._entry(owner, owner_rule), folded_bias, op)
                return AffineWithFactor.apply(x, scale, shift, spec)
            y = func(*args, **kwargs)
            return self._attach_factor(owner, y, owner_rule, self._entry(owner, owner_rule), folded_bias, op)
        rule = rec.rule
        if not isinstance(rule, EpsilonRule):
            return func(*args, **kwargs)
        scale, shift = self._bn_affine(bound)
        if rec.relu_proxy is None and (self.state.with_ledger or rule.epsilon != 0.0):
            spec = FactorSpec(rule, self._entry(rec, rule), shift.reshape(-1), _CHANNEL_OP)
            return AffineWithFactor.apply(x, scale, shift, spec)
        y = func(*args, **kwargs)
        return self._attach_factor(rec, y, rule, self._entry(rec, rule), shift.reshape(-1), _CHANNEL_OP)

    def _same_bn_params(self, rec: OpRecord, bound: dict[str, Any]) -> bool:
        assert rec.bn_params is not None
        names = ("running_mean", "running_var", "weight", "bias")
        return all(bound[n] is p for n, p in zip(names, rec.bn_params[:4], strict=True))

    @staticmethod
    def _bn_affine(bound: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Eval-mode batch norm as ``x ⊙ scale + shift``, both shaped to broadcast over channels."""
        x = bound["input"]
        scale, shift = batchnorm_scale_shift(
            bound["running_mean"], bound["running_var"], bound["weight"], bound["bias"], bound["eps"]
        )
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return scale.to(x.dtype).view(shape), shift.to(x.dtype).view(shape)

    # -- element-wise, pooling, sums, products --------------------------------------------------
    def _relu(self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Tensor:
        x = args[0] if args else kwargs["input"]
        if rec.proxy_for is None:
            if func in INPLACE_TO_OUT_OF_PLACE or kwargs.get("inplace") or (len(args) > 1 and args[1] is True):
                self.state.mark_stale(x)
            return torch.relu(x)
        # The ReLU alone consumes a layer output that no backward keeps: rectify it in place and
        # let it carry that layer's output-side rule (see RectifyWithFactor).
        pending = self.state.pending.pop(rec.index, None)
        if isinstance(pending, FactorSpec):
            return RectifyWithFactor.apply(x, pending)
        if isinstance(pending, ProxyHolder):
            y = RectifyWithFactor.apply(x, None)
            pending.tensor = y
            return y
        return torch.relu_(x)  # LRP-0 without bookkeeping: the ordinary (masking) ReLU gradient

    def _activation(
        self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Tensor:
        rule = rec.rule
        fn, piecewise_linear = ACTIVATION_FUNCS[func]
        if piecewise_linear or not isinstance(rule, PassRule):
            return self._native(func, args, kwargs)
        x = args[0] if args else kwargs.pop("input")
        rest = tuple(args[1:])
        kw = {k: v for k, v in kwargs.items() if k != "inplace"}
        if func is not fn or kwargs.get("inplace"):
            self.state.mark_stale(x)
        if fn in (torch.nn.functional.hardtanh, torch.nn.functional.elu, torch.nn.functional.leaky_relu):
            # Their positional "inplace" flag is dropped too.
            arity = {torch.nn.functional.hardtanh: 2, torch.nn.functional.elu: 1, torch.nn.functional.leaky_relu: 1}[fn]
            rest = rest[:arity]
        closure = functools.partial(_call_with, fn, rest, kw)
        return PassActivation.apply(x, closure, rule.stabilizer, self._entry(rec, rule))

    def _maxpool(self, rec: OpRecord, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        rule = rec.rule
        if not isinstance(rule, ProportionalMaxPoolRule):
            return self._native(func, args, kwargs)
        x = args[0] if args else kwargs["input"]
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        bound: dict[str, Any] = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
        bound.update(dict(zip(names, args, strict=False)))
        bound.update(kwargs)
        dim = x.dim() - 2
        avg = (torch.nn.functional.avg_pool1d, torch.nn.functional.avg_pool2d, torch.nn.functional.avg_pool3d)[dim - 1]
        kernel = bound["kernel_size"]
        volume = math.prod(kernel) if isinstance(kernel, (tuple, list)) else kernel**dim
        window_sum = functools.partial(
            _window_sum, avg, kernel, bound["stride"], bound["padding"], bool(bound["ceil_mode"]), volume
        )
        pool = functools.partial(_call_with, func, tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "input"})
        return ProportionalPool.apply(x, pool, window_sum, rule.stabilizer, self._entry(rec, rule))

    def _sum_like(
        self,
        rec: OpRecord,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
    ) -> Tensor:
        rule = rec.rule
        y = self._native(func, args, kwargs)
        if not isinstance(rule, EpsilonRule):
            return y
        constant = None
        if rec.kind == "add" and len(carrying) < 2:
            # The constant part of an affine sum (x + c): evaluate with the carrying operand at 0.
            carried = {id(c[1]) for c in carrying}
            zeroed = [torch.zeros_like(a) if isinstance(a, Tensor) and id(a) in carried else a for a in args]
            out_of_place = INPLACE_TO_OUT_OF_PLACE.get(func, func)
            with torch.no_grad():
                constant = out_of_place(*zeroed, **kwargs)
            if not bool(torch.isfinite(constant).all()):
                # An additive attention mask with -inf: no gradient reaches those entries; keep the
                # factor and the ledger free of inf / inf and -inf · 0.
                entry = self._entry(rec, rule)
                if entry is None and rule.epsilon == 0.0:
                    return y
                zero = torch.zeros((), dtype=constant.dtype, device=constant.device)
                finite = torch.where(torch.isfinite(constant), constant, zero)
                spec = FactorSpec(rule, entry, None, None, finite, finite_only=True)
                return OutputFactor.apply(y, spec)  # type: ignore[no-any-return]
        return self._attach_factor(rec, y, rule, self._entry(rec, rule), None, None, constant)

    def _product(
        self,
        rec: OpRecord,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
    ) -> Tensor:
        rule = rec.rule
        assert isinstance(rule, ProductRule)
        gates = [c for c in carrying if c[2].func in GATE_FUNCS]
        gate_mode = rule.mode == "gate" or (rule.mode == "auto" and len(gates) == 1 and len(carrying) == 2)
        if gate_mode and len(gates) == 1:
            gate = gates[0][1]
            new_args = [a.detach() if a is gate else a for a in args]
            return self._native(func, new_args, kwargs)
        y = self._native(func, args, kwargs)
        return GradScale.apply(y, 1.0 / len(carrying))

    def _probed(
        self,
        rec: OpRecord,
        rule: Rule,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        carrying: list[tuple[int, Tensor, _Track]],
    ) -> Any:
        entry = self._entry(rec, rule)
        if entry is None:
            return self._native(func, args, kwargs)
        finite_only = rec.kind in ("softmax", "merge")
        probes = {id(c[1]): Probe.apply(c[1], entry, "in", finite_only) for c in carrying}

        def swap(a: Any) -> Any:
            if isinstance(a, Tensor):
                return probes.get(id(a), a)
            if isinstance(a, (list, tuple)):
                return type(a)(swap(b) for b in a)
            return a

        result = self._native(func, [swap(a) for a in args], {k: swap(v) for k, v in kwargs.items()})
        if isinstance(result, Tensor) and _carries(result):
            return Probe.apply(result, entry, "out", finite_only)
        return result

    # -- transformer operations -----------------------------------------------------------------
    def _structural(self, rule: Rule, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Constant outputs (StopRule) or constant denominators (NormalizationRule on a division)."""
        if isinstance(rule, StopRule):
            result = self._native(func, args, kwargs)
            if isinstance(result, Tensor):
                return result.detach()
            if isinstance(result, (list, tuple)):
                return type(result)(r.detach() if isinstance(r, Tensor) else r for r in result)
            return result
        # x / d with d treated as a constant: the identity rule of a normalisation.
        names = ("input", "other")
        if func is torch.Tensor.__rtruediv__:
            names = ("other", "input")
        new_args = list(args)
        denominator_at = 0 if names[0] == "other" else 1
        if len(new_args) > denominator_at:
            if isinstance(new_args[denominator_at], Tensor):
                new_args[denominator_at] = new_args[denominator_at].detach()
            new_kwargs = kwargs
        else:
            new_kwargs = {k: (v.detach() if k == "other" and isinstance(v, Tensor) else v) for k, v in kwargs.items()}
        return self._native(func, new_args, new_kwargs)

    def _attention(
        self, rec: OpRecord, rule: AttentionRule, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Tensor:
        """Fused attention with AttnLRP's gradient scaling (uniform) or constant weights (cp)."""
        names = ("query", "key", "value")
        args = list(args)
        kwargs = dict(kwargs)
        tensors = [args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names)]
        carries = [self.state.lookup(t) is not None for t in tensors]
        if rule.mode == "cp":
            factors = [0.0, 0.0, 1.0]
        else:
            # q kᵀ splits its relevance equally (if both carry), the weights · v product too.
            score_split = 0.5 if carries[0] and carries[1] else 1.0
            value_split = 0.5 if (carries[0] or carries[1]) and carries[2] else 1.0
            factors = [score_split * value_split, score_split * value_split, value_split]
        entry = self._entry(rec, rule)
        for i, (name, t, carried, factor) in enumerate(zip(names, tensors, carries, factors, strict=True)):
            if not carried:
                continue
            if factor == 0.0:
                new = t.detach()
            else:
                new = t if entry is None else Probe.apply(t, entry, "in", False)
                if factor != 1.0:
                    new = GradScale.apply(new, factor)
            if i < len(args):
                args[i] = new
            else:
                kwargs[name] = new
        result = self._native(func, args, kwargs)
        if entry is not None and _carries(result):
            return Probe.apply(result, entry, "out", False)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def _normalization(
        self,
        rec: OpRecord,
        rule: NormalizationRule,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> Tensor:
        """LayerNorm, RMSNorm and F.normalize with their statistic held constant (identity rule)."""
        kind = rec.kind
        if kind == "layer_norm":
            bound = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"), {"eps": 1e-5})
            self._check_constant_parameters(rec, bound)
            weight, bias = bound.get("weight"), bound.get("bias")
            return LayerNormIdentity.apply(  # type: ignore[no-any-return]
                bound["input"],
                tuple(bound["normalized_shape"]),
                None if weight is None else weight.detach(),
                None if bias is None else bias.detach(),
                float(bound["eps"]),
                self._entry(rec, rule),
            )
        if kind == "rms_norm":
            bound = _bind(args, kwargs, ("input", "normalized_shape", "weight", "eps"), {"eps": None})
            self._check_constant_parameters(rec, bound)
            x, weight = bound["input"], bound.get("weight")
            dims = tuple(range(x.dim() - len(tuple(bound["normalized_shape"])), x.dim()))
            eps = bound["eps"] if bound["eps"] is not None else torch.finfo(x.dtype).eps
            scale = torch.rsqrt(x.detach().square().mean(dims, keepdim=True) + eps)
            y = x * scale
            return y if weight is None else y * weight.detach()
        # F.normalize(x, p, dim, eps): x divided by its (constant) norm.
        bound = _bind(args, kwargs, ("input", "p", "dim", "eps"), {"p": 2.0, "dim": 1, "eps": 1e-12})
        x = bound["input"]
        norm = torch.linalg.vector_norm(x.detach(), bound["p"], dim=bound["dim"], keepdim=True)
        return x / norm.clamp_min(bound["eps"])

    def _check_constant_parameters(self, rec: OpRecord, bound: dict[str, Any]) -> None:
        for name in ("weight", "bias"):
            t = bound.get(name)
            if isinstance(t, Tensor) and self.state.lookup(t) is not None:
                raise UnsupportedOperationError(
                    f"module '{rec.path or '(model)'}' ({rec.module_type.__name__}) calls {rec.function} with a "
                    f"{name} computed from the input; the normalisation rule needs a constant {name}, so give this "
                    "operation a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]."
                )

    # -- element-wise modules -------------------------------------------------------------------
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
            if not isinstance(self.explainer.composite.rule_for(self._info(rec)), PassRule):
                return  # another rule: its torch calls are recorded one by one
            st.records.append(rec)
        else:
            plan = st.plan
            assert plan is not None
            planned = plan.ops[st.index] if st.index < len(plan.ops) else None
            if planned is None or planned.func is not module_type or planned.path != name:
                return
            rec = planned
        st.index += 1
        st.opaque.append((module, x, rec))
        st.opaque_depth = 1

    def exit_module(self, module: nn.Module, output: Any) -> Any:
        """Forward hook: pop the module; finish an element-wise module with the pass-through rule."""
        st = self.state
        if len(st.stack) > 1:
            st.stack.pop()
        if not st.opaque_depth:
            return None
        st.opaque_depth -= 1
        if st.opaque_depth:
            return None
        frame_module, x, rec = st.opaque.pop()
        assert frame_module is module
        if not isinstance(output, Tensor):
            raise UnsupportedOperationError(
                f"element-wise module '{rec.path}' ({rec.module_type.__name__}) returned {type(output).__name__}, "
                "not a tensor; give it a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]."
            )
        rule = rec.rule if isinstance(rec.rule, PassRule) else PassRule()
        entry = self._entry(rec, rule) if st.mode == "explain" else None
        y = PassComputed.apply(x, output, rule.stabilizer, entry)
        st.track(y, rec.index, rec.func)
        return y


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


def _call_with(fn: Callable[..., Any], rest: tuple[Any, ...], kw: dict[str, Any], x: Tensor) -> Tensor:
    return fn(x, *rest, **kw)


def _window_sum(
    avg: Callable[..., Tensor],
    kernel: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    volume: int,
    x: Tensor,
) -> Tensor:
    return avg(x, kernel, stride if stride else kernel, padding, ceil_mode, True) * volume


# -- plan finalisation ------------------------------------------------------------------------------
def _finalize_plan(
    records: list[OpRecord], output_producer: int, composite: _composites.Composite, canonize: bool
) -> Plan:
    for rec in records:
        for p in rec.producers:
            if p >= 0:
                records[p].consumers.append(rec.index)
    layers = [r for r in records if r.kind in LINEAR_KINDS]
    by_kind: dict[str, list[OpRecord]] = {}
    for r in layers:
        by_kind.setdefault("dense" if r.kind == "linear" else "conv", []).append(r)
    position = {r.index: i for i, r in enumerate(layers)}
    kind_position = {r.index: (i, len(group)) for group in by_kind.values() for i, r in enumerate(group)}
    for rec in records:
        positions: dict[str, Any] = {}
        if rec.index in position:
            k_index, k_count = kind_position[rec.index]
            positions = {
                "layer_index": position[rec.index],
                "layer_count": len(layers),
                "kind_index": k_index,
                "kind_count": k_count,
            }
        rec.info = LayerInfo(
            index=rec.index,
            path=rec.path,
            module_type=rec.module_type,
            function=rec.function,
            kind=rec.kind,
            **positions,
        )
        if rec.kind in ("exact", "dropout"):
            continue
        rec.rule = composite.rule_for(rec.info)
        if rec.rule is None:
            raise UnsupportedOperationError(
                f"no rule of composite {composite.name!r} applies to {rec.function} ({rec.kind}) in module "
                f"'{rec.path or '(model)'}' ({rec.module_type.__name__}); add one with rules=[...]."
            )
        if isinstance(rec.rule, ProportionalMaxPoolRule) and "adaptive" in rec.function:
            raise ConfigurationError(
                f"ProportionalMaxPoolRule does not support {rec.function} at '{rec.path or '(model)'}'; use "
                "WinnerTakesAllRule for adaptive max pooling."
            )
    if canonize:
        for rec in records:
            if rec.kind != "batchnorm" or len(rec.producers) != 1 or rec.producers[0] < 0:
                continue
            producer = records[rec.producers[0]]
            if (
                producer.kind in LINEAR_KINDS
                and isinstance(producer.rule, LinearRule)
                and producer.consumers == [rec.index]
                and not (producer.kind == "conv_transpose" and producer.groups != 1)
            ):
                producer.merge_bn = rec.index
                rec.merged_into = producer.index
    for rec in records:
        if rec.merged_into is not None:
            continue
        ruled = (rec.kind in LINEAR_KINDS and isinstance(rec.rule, LinearRule)) or (
            rec.kind in ("add", "avgpool", "batchnorm") and isinstance(rec.rule, EpsilonRule)
        )
        if not ruled:
            continue
        out = records[rec.merge_bn] if rec.merge_bn is not None else rec
        if len(out.consumers) != 1 or out.index == output_producer:
            continue
        consumer = records[out.consumers[0]]
        native_relu = isinstance(consumer.rule, (PassRule, GradientRule))
        if consumer.kind == "relu" and native_relu and consumer.producers == (out.index,):
            rec.relu_proxy = consumer.index
            consumer.proxy_for = rec.index
    for rec in records:
        # Known non-negative tensors let γ and αβ skip the sign-general computation.
        inputs_nonnegative = bool(rec.producers) and all(
            p >= 0 and records[p].output_nonnegative for p in rec.producers
        )
        rec.input_nonnegative = inputs_nonnegative
        short = rec.function.rsplit(".", 1)[-1]
        rec.output_nonnegative = rec.kind == "relu" or (
            inputs_nonnegative and (rec.kind in ("maxpool", "avgpool", "dropout") or short in _SIGN_PRESERVING)
        )
    return Plan(records, output_producer)


def _model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _select_output(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise ConfigurationError(
        f"the model returned {type(output).__name__}; relprop explains models that return a tensor of scores "
        "(or an object with .logits), so wrap the model to return the scores to explain."
    )


class Explainer:
    """Explain a model's predictions with LRP: prepared once, then called on any number of batches.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` in eval mode; it is never modified.
    composite
        A composite name (see :func:`relprop.composites.names`), a
        :class:`~relprop.composites.Composite`, a :class:`relprop.tuning.TunedComposite` or the
        path of its ``.json`` file (refused for a model other than the one it was tuned on), or
        ``"auto"`` with ``tuned=`` such a file.
    rules
        Your own ``(matcher, rule)`` entries, tried before the composite's (first match wins).
        A matcher is a module path glob (str), a module type, or a :mod:`relprop.match` matcher.
    canonize
        Fold batch norms into the convolution or dense layer they follow (default ``True``).
    ledger
        Keep the per-layer conservation ledger (default ``True``; ``False`` is slightly faster).
    top, contrast
        Defaults for :meth:`__call__`: the top layer (``"logit"`` or ``"log-odds"``) and the
        contrast class (an index or ``"rest"``).
    **params
        Parameters of a named composite: ``epsilon``, ``gamma``, ``alpha``, ``beta``, ``low``,
        ``high``, ``stabilizer`` ...

    Examples
    --------
    >>> explainer = relprop.Explainer(model, composite="epsilon-gamma-box", low=-3.0, high=3.0)
    >>> result = explainer(images)            # predicted classes
    >>> result.relevance.shape == images.shape
    True
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str | _composites.Composite = "epsilon-gamma-box",
        *,
        rules: Iterable[tuple[Any, Rule]] | None = None,
        canonize: bool = True,
        ledger: bool = True,
        top: str = "logit",
        contrast: Any = None,
        **params: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        # relprop.tuning: a TunedComposite, a tuned .json file or "auto" with tuned= becomes a plain Composite.
        from .tuning.resolve import as_composite

        composite, params = as_composite(composite, model, params)
        if isinstance(composite, str):
            base = _composites.get(composite, **params)
        elif isinstance(composite, _composites.Composite):
            if params:
                raise ConfigurationError(
                    f"parameters {', '.join(sorted(params))} only apply to named composites; set them on the rules "
                    "of your Composite instead."
                )
            base = composite
        else:
            raise ConfigurationError(
                f"composite must be a name or a relprop.composites.Composite, got {type(composite).__name__}."
            )
        self.model = model
        self.composite = base.prepend(rules) if rules else base
        self.canonize = bool(canonize)
        self.ledger = bool(ledger)
        self.top = top
        self.contrast = contrast
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._cache: dict[tuple[int, int], tuple[tuple[Any, ...], Any]] = {}

    # -- weights --------------------------------------------------------------------------------
    def _folded(
        self, ops: list[OpRecord], rec: OpRecord, weight: Tensor, bias: Tensor | None, op: LinearOp
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's weight and bias with the following batch norm folded in (if planned)."""
        if rec.merge_bn is None:
            return weight.detach(), None if bias is None else bias.detach()
        bn = ops[rec.merge_bn].bn_params
        assert bn is not None
        mean, var, bn_weight, bn_bias, eps = bn
        assert mean is not None and var is not None
        key = ("fold", rec.index, id(weight))
        sources = (weight, bias, mean, var, bn_weight, bn_bias)
        weight = weight.detach()
        bias = None if bias is None else bias.detach()
        versions = tuple((id(t), t._version) for t in sources if t is not None)
        cached = self._cache.get(key)  # type: ignore[arg-type]
        if cached is not None and cached[0] == versions:
            return cached[1]  # type: ignore[no-any-return]
        scale, shift = batchnorm_scale_shift(mean, var, bn_weight, bn_bias, eps)
        shape = [1] * weight.dim()
        if op.kind == "conv_transpose":
            shape[1] = -1
        else:
            shape[0] = -1
        folded_weight = weight * scale.view(shape).to(weight)
        folded_bias = shift.to(weight) if bias is None else bias * scale.to(weight) + shift.to(weight)
        self._cache[key] = (versions, (folded_weight, folded_bias))  # type: ignore[index]
        return folded_weight, folded_bias

    def _folded_bias(self, ops: list[OpRecord], rec: OpRecord, bias: Tensor | None) -> Tensor:
        """The bias of a layer with its batch norm folded in (all that LRP-0/ε need of the folding)."""
        assert rec.merge_bn is not None
        mean, var, bn_weight, bn_bias, eps = ops[rec.merge_bn].bn_params  # type: ignore[misc]
        assert mean is not None and var is not None
        scale, shift = batchnorm_scale_shift(mean, var, bn_weight, bn_bias, eps)
        return shift if bias is None else bias.detach() * scale + shift

    def _prepared(
        self,
        ops: list[OpRecord],
        rec: OpRecord,
        rule: LinearRule,
        weight: Tensor,
        bias: Tensor | None,
        op: LinearOp,
    ) -> dict[str, Tensor | None]:
        """The rule's modified parameters for this layer, recomputed only when the weights change."""
        key = (rec.index, id(rule), id(weight))
        sources: list[Tensor | None] = [weight, bias]
        if rec.merge_bn is not None:
            bn = ops[rec.merge_bn].bn_params
            assert bn is not None
            sources.extend(bn[:4])
        versions = tuple((id(t), t._version) for t in sources if t is not None)
        cached = self._cache.get(key)  # type: ignore[arg-type]
        if cached is not None and cached[0] == versions:
            return cached[1]  # type: ignore[no-any-return]
        folded_weight, folded_bias = self._folded(ops, rec, weight, bias, op)
        prepared = rule.prepare(folded_weight, folded_bias)
        self._cache[key] = (versions, prepared)  # type: ignore[index]
        return prepared

    # -- running the model ----------------------------------------------------------------------
    def _run(self, state: _CallState, x: Tensor) -> Tensor:
        state.model_input = x
        state.samples = int(x.shape[0])
        state.track(x, -1, None)
        dispatcher = _Dispatcher(self, state)
        handles: list[torch.utils.hooks.RemovableHandle] = []
        try:
            for name, module in self.model.named_modules():
                if module is self.model:
                    continue
                handles.append(module.register_forward_pre_hook(functools.partial(_push_module, dispatcher, name)))
                handles.append(
                    module.register_forward_hook(functools.partial(_pop_module, dispatcher), always_call=True)
                )
            with torch.enable_grad(), _RelevanceMode(dispatcher):
                output = _select_output(self.model(x))
        finally:
            for handle in handles:
                handle.remove()
        if state.is_stale(output):
            raise UnsupportedOperationError(
                "the model returns a tensor after modifying it in place; return the result of the operation instead."
            )
        if state.lookup(output) is None:
            raise UnsupportedOperationError(
                "the model output does not depend on the input through operations relprop could follow (the input "
                "may be detached, converted to NumPy, or used by a C++ extension); relprop cannot explain it."
            )
        return output

    def plan(self, inputs: Tensor) -> Plan:
        """Return (recording it if needed) the plan for inputs shaped like ``inputs``."""
        x = self._to_device(inputs)
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._record_plan(x[:1])
            self._plans[key] = plan
        return plan

    def _record_plan(self, x: Tensor) -> Plan:
        state = _CallState("plan", self.model, None, with_ledger=False)
        leaf = x.detach().requires_grad_(True)
        output = self._run(state, leaf)
        track = state.lookup(output)
        assert track is not None
        return _finalize_plan(state.records, track.producer, self.composite, self.canonize)

    def rule_table(self, inputs: Tensor) -> str:
        """Which rule each operation gets for inputs shaped like ``inputs`` (a readable table)."""
        return self.plan(inputs).rule_table()

    def _to_device(self, inputs: Tensor) -> Tensor:
        if not isinstance(inputs, Tensor):
            raise ConfigurationError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}.")
        if not inputs.is_floating_point():
            raise ConfigurationError(
                f"inputs must be a floating-point tensor, got dtype {inputs.dtype}; convert images with .float()."
            )
        device = _model_device(self.model)
        return inputs if device is None else inputs.to(device)

    def __call__(
        self, inputs: Tensor, target: Any = None, *, top: str | None = None, contrast: Any = None
    ) -> Explanation:
        """Explain ``inputs`` (batch first) for ``target``; see :func:`relprop.explain`."""
        x = self._to_device(inputs)
        if x.dim() == 0 or x.shape[0] == 0:
            raise ConfigurationError(f"inputs must have a non-empty batch dimension, got shape {tuple(x.shape)}.")
        plan = self.plan(x)
        try:
            return self._explain(x, plan, target, top or self.top, contrast if contrast is not None else self.contrast)
        except GraphChangedError:
            if x.shape[0] == 1:
                raise
            # The plan was recorded on one sample; the model may branch on the batch. Re-plan on it.
            key = (tuple(x.shape[1:]), x.dtype, x.device)
            self._plans[key] = plan = self._record_plan(x)
            return self._explain(x, plan, target, top or self.top, contrast if contrast is not None else self.contrast)

    def _explain(self, x: Tensor, plan: Plan, target: Any, top: str, contrast: Any) -> Explanation:
        state = _CallState("explain", self.model, plan, with_ledger=self.ledger)
        leaf = x.detach().requires_grad_(True)
        output = self._run(state, leaf)
        if state.index != len(plan.ops):
            raise GraphChangedError(
                f"the model ran {state.index} of the {len(plan.ops)} recorded operations; its operations depend on the "
                "input values, so explain such inputs one at a time."
            )
        head = initial_relevance(output, target, top=top, contrast=contrast)
        (grad,) = torch.autograd.grad(output, leaf, head.grad.to(output.dtype), allow_unused=True)
        relevance = torch.zeros_like(leaf) if grad is None else leaf.detach() * grad
        if state.direct.total is not None:
            relevance = relevance + state.direct.total
        score = head.score
        ledger = Ledger(
            score=score,
            input_relevance=relevance.reshape(relevance.shape[0], -1).sum(1),
            entries=[e for e in state.entries if e.relevance_out is not None],
            top_absorbed=head.absorbed if bool((head.absorbed != 0).any()) else None,
        )
        return Explanation(
            relevance=relevance.detach(),
            output=output.detach(),
            target=head.target,
            ledger=ledger,
            # The modified gradient at the input (relevance = input ⊙ it, plus any relevance that
            # input-layer rules such as z^B hand over directly).
            info={"input_gradient": torch.zeros_like(leaf) if grad is None else grad.detach()},
        )


def _push_module(dispatcher: _Dispatcher, name: str, module: nn.Module, args: Any) -> None:
    dispatcher.enter_module(name, module, args)


def _pop_module(dispatcher: _Dispatcher, module: nn.Module, args: Any, output: Any) -> Any:
    return dispatcher.exit_module(module, output)


def _bind(
    args: Sequence[Any], kwargs: dict[str, Any], names: tuple[str, ...], defaults: dict[str, Any]
) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(dict(zip(names, args, strict=False)))
    bound.update(kwargs)
    return bound


def _has_constant_part(
    func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], carrying: list[tuple[int, Tensor, _Track]]
) -> bool:
    """Whether a routing operation mixes relevance-carrying tensors with floating-point constants."""
    carried = {id(c[1]) for c in carrying}
    for t in _iter_tensors(args, kwargs):
        if id(t) not in carried and t.is_floating_point() and t.numel():
            return True
    if func in SCALAR_VALUE_FUNCS:
        values = [*args[1:], *kwargs.values()]
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0 for v in values)
    return False


def explain(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    composite: str | _composites.Composite | None = None,
    method: str = "lrp",
    **params: Any,
) -> Explanation:
    """Explain a model's prediction on ``inputs``.

    With ``method="lrp"`` (default) this is Layer-wise Relevance Propagation in one forward and
    one backward pass; other methods (``relprop.methods.names()``) take their own parameters.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` in eval mode (never modified).
    inputs
        A batch of inputs, batch first.
    target
        ``None`` for the predicted class, a class index, one index per sample, or a tensor shaped
        like the output giving the initial relevance.
    composite
        Name of a composite or a :class:`~relprop.composites.Composite` (default
        ``"epsilon-gamma-box"``); LRP only. Also a :class:`relprop.tuning.TunedComposite`, the
        path of a tuned ``.json`` file, or ``"auto"``: the file given as ``tuned=``, else a quick
        search on ``inputs`` (:func:`relprop.tuning.auto_composite`, with a warning).
    method
        ``"lrp"`` or the name of another attribution method.
    **params
        Composite parameters (``epsilon``, ``gamma``, ``low``, ``high`` ...) and the options of
        :class:`Explainer` (``rules``, ``canonize``, ``ledger``, ``top``, ``contrast``), or the
        parameters of the chosen method.

    Returns
    -------
    Explanation
        ``relevance`` shaped like ``inputs``, the model ``output``, the explained ``target`` and
        the conservation ``ledger``.
    """
    if method != "lrp":
        from . import methods

        fn = methods.get(method)
        if composite is not None:
            raise ConfigurationError(f"composite applies to method 'lrp' only, not to {method!r}; drop it.")
        return fn(model, inputs, target, **params)  # type: ignore[no-any-return]
    options = {k: params.pop(k) for k in _ENGINE_OPTIONS if k in params}
    if isinstance(composite, str) and composite == "auto":  # relprop.tuning: a quick search on these inputs
        from .tuning.resolve import auto_composite

        composite = auto_composite(model, inputs, target, params.pop("tuned", None))
    return Explainer(model, composite if composite is not None else "epsilon-gamma-box", **options, **params)(
        inputs, target
    )
