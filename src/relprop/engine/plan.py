"""The plan: the recorded operations of a model and the passes that prepare them for explaining.

Recording (see :mod:`relprop.engine.tracing`) produces one :class:`OpRecord` per
relevance-carrying operation. :func:`finalize` then runs small named passes over them:

1. :func:`link_consumers` — who consumes whose output;
2. :func:`assign_positions` — each parametric layer's position (``first()``, ``depth()``);
3. :func:`assign_rules` — the composite's rule for each operation, and the *handler* the
   replay calls (the rule itself, or the native computation for kinds without a rule);
4. :func:`fold_batch_norms` — a batch norm right after a layer is folded into its weights;
5. :func:`fuse_rectifiers` — a ReLU that alone consumes a layer's output carries that layer's
   output-side step (the layer then keeps no activation of its own);
6. :func:`infer_signs` — which tensors are known non-negative (γ and αβ skip work there).

Passes 4 and 5 replace handlers with small rule objects (:class:`~relprop.rules.linear.FoldedBatchNorm`,
:class:`~relprop.rules.elementwise.FusedRectify`); the engine itself has no per-kind code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UnsupportedOperationError
from ..kinds import KINDS, Kind
from ..match import LayerInfo
from ..rules.base import Rule
from ..rules.elementwise import FusedRectify, PassRule
from ..rules.function import GradientRule
from ..rules.linear import EpsilonRule, FoldedBatchNorm, LinearRule
from .model import display_path

if TYPE_CHECKING:
    from ..composites import Composite
    from .call import Call

__all__ = ["OpRecord", "Plan", "finalize"]


@dataclass(eq=False)
class OpRecord:
    """One relevance-carrying operation recorded in the plan.

    ``rule`` is what the composite chose (shown in rule tables); ``handler`` is the rule object the
    replay calls — the rule itself unless a plan pass replaced it by a fused form.
    """

    index: int
    func: Callable[..., Any]
    function: str
    kind: str
    path: str
    module_type: type
    producers: tuple[int, ...]
    recorded: dict[str, Any] = field(default_factory=dict)
    info: LayerInfo | None = None
    rule: Rule | None = None
    handler: Rule | None = None
    merge_bn: int | None = None
    merged_into: int | None = None
    relu_proxy: int | None = None
    proxy_for: int | None = None
    consumers: list[int] = field(default_factory=list)
    output_nonnegative: bool = False
    input_nonnegative: bool = False
    tapped: bool = False

    @property
    def kind_info(self) -> Kind:
        """The operation's :class:`~relprop.kinds.Kind`."""
        return KINDS[self.kind]

    @property
    def display_path(self) -> str:
        """The module path for messages (``(model)`` for the model's own forward)."""
        return display_path(self.path)

    @property
    def groups(self) -> int:
        """Convolution groups (1 for other operations)."""
        return int(self.recorded.get("groups", 1))

    def layer_info(self, **positions: Any) -> LayerInfo:
        """What matchers see of this operation."""
        return LayerInfo(
            index=self.index,
            path=self.path,
            module_type=self.module_type,
            function=self.function,
            kind=self.kind,
            **positions,
        )


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
            lines.append(f"{rec.index:>4}  {rec.display_path[:32]:<32} {rec.function[:36]:<36} {rule}")
        return "\n".join(lines)


class NativeStep(Rule):
    """Handler of kinds without a rule (routing, bias-free linear maps): the gradient is exact."""

    label = "exact"

    def forward(self, call: Call) -> Any:
        return call.native()


class IdentityStep(Rule):
    """Handler of an inactive dropout (checked when the plan was recorded): the identity."""

    label = "identity"

    def forward(self, call: Call) -> Any:
        return call.bound["input"]


_NATIVE = NativeStep()
_IDENTITY = IdentityStep()


# --- the passes -----------------------------------------------------------------------------------
def link_consumers(records: list[OpRecord]) -> None:
    """Fill each record's ``consumers`` from the others' ``producers``."""
    for rec in records:
        for p in rec.producers:
            if p >= 0:
                records[p].consumers.append(rec.index)


def assign_positions(records: list[OpRecord]) -> None:
    """Give every operation its :class:`LayerInfo`; parametric layers get their positions."""
    layers = [r for r in records if r.kind_info.positional]
    buckets: dict[str, list[OpRecord]] = {}
    for r in layers:
        buckets.setdefault(_bucket(r.kind_info), []).append(r)
    position = {r.index: i for i, r in enumerate(layers)}
    within = {r.index: (i, len(group)) for group in buckets.values() for i, r in enumerate(group)}
    for rec in records:
        if rec.index in position:
            k_index, k_count = within[rec.index]
            rec.info = rec.layer_info(
                layer_index=position[rec.index], layer_count=len(layers), kind_index=k_index, kind_count=k_count
            )
        else:
            rec.info = rec.layer_info()


def _bucket(kind: Kind) -> str:
    # kind_index counts convolutions (plain and transposed) and dense layers separately.
    for group in ("convolution", "dense"):
        if group in kind.groups:
            return group
    return kind.name


def assign_rules(records: list[OpRecord], composite: Composite) -> None:
    """The composite's rule for every operation that takes one; every operation's handler."""
    for rec in records:
        kind = rec.kind_info
        if not kind.ruled:
            rec.handler = _IDENTITY if kind.identity else _NATIVE
            continue
        assert rec.info is not None
        rec.rule = composite.rule_for(rec.info)
        if rec.rule is None:
            raise UnsupportedOperationError(
                f"no rule of composite {composite.name!r} applies to {rec.function} ({rec.kind}) in module "
                f"'{rec.display_path}' ({rec.module_type.__name__}); add one with rules=[...]."
            )
        rec.rule.check(rec)
        rec.handler = rec.rule


def fold_batch_norms(records: list[OpRecord]) -> None:
    """Fold each batch norm into the layer before it when it alone consumes that layer's output."""
    for rec in records:
        if rec.kind != "batchnorm" or len(rec.producers) != 1 or rec.producers[0] < 0:
            continue
        producer = records[rec.producers[0]]
        if (
            producer.kind_info.positional
            and isinstance(producer.rule, LinearRule)
            and producer.consumers == [rec.index]
            and not (producer.kind == "conv_transpose" and producer.groups != 1)
        ):
            producer.merge_bn = rec.index
            rec.merged_into = producer.index
            rec.handler = FoldedBatchNorm()


def fuse_rectifiers(records: list[OpRecord], output_producer: int) -> None:
    """Let a ReLU that alone consumes a layer's (or sum's) output carry that operation's output step."""
    for rec in records:
        if rec.merged_into is not None:
            continue
        ruled = (rec.kind_info.positional and isinstance(rec.rule, LinearRule)) or (
            "affine" in rec.kind_info.groups and isinstance(rec.rule, EpsilonRule)
        )
        if not ruled:
            continue
        out = records[rec.merge_bn] if rec.merge_bn is not None else rec
        if len(out.consumers) != 1 or out.index == output_producer or out.tapped or rec.tapped:
            continue  # the ReLU rectifies in place: nothing else (no tap either) may read the output
        consumer = records[out.consumers[0]]
        native_relu = consumer.kind == "relu" and isinstance(consumer.rule, (PassRule, GradientRule))
        if native_relu and consumer.producers == (out.index,):
            rec.relu_proxy = consumer.index
            consumer.proxy_for = rec.index
            consumer.handler = FusedRectify()


def infer_signs(records: list[OpRecord]) -> None:
    """Mark outputs known to be non-negative: ReLU outputs, and what sign-preserving operations make of them."""
    for rec in records:
        inputs_nonnegative = bool(rec.producers) and all(
            p >= 0 and records[p].output_nonnegative for p in rec.producers
        )
        rec.input_nonnegative = inputs_nonnegative
        kind = rec.kind_info
        rec.output_nonnegative = kind.nonnegative or (inputs_nonnegative and kind.preserves_sign(rec.function))


def finalize(
    records: list[OpRecord],
    output_producer: int,
    composite: Composite,
    canonize: bool,
    tapped: frozenset[int] = frozenset(),
) -> Plan:
    """Run the passes over freshly recorded operations; ``tapped`` operations' outputs stay visible."""
    for index in tapped:
        if index >= 0:
            records[index].tapped = True
    link_consumers(records)
    assign_positions(records)
    assign_rules(records, composite)
    if canonize:
        fold_batch_norms(records)
    fuse_rectifiers(records, output_producer)
    infer_signs(records)
    return Plan(records, output_producer)
