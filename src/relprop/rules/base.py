r"""The rule protocol, the rule registry and the arithmetic every rule shares.

relprop propagates relevance in the *Input×Gradient* form: every tensor ``t`` of the forward
pass carries a modified gradient ``g_t`` and its relevance is ``R_t = t ⊙ g_t``. A rule changes
the backward step of one operation: during the explaining forward pass the engine hands each
operation to its rule as a :class:`~relprop.engine.call.Call`, and the rule returns the
operation's output with its own backward attached (usually a small
:class:`torch.autograd.Function` defined beside the rule).

A rule declares the operation kinds it applies to with ``applies_to`` — kind names or group
names of :mod:`relprop.kinds` (``"layer"``, ``"elementwise"``, ``"affine"`` ...); ``kinds``
is derived from it, so a new kind in a group is picked up by every rule of that group.

Writing your own rule::

    class HalfRule(relprop.rules.Rule):
        applies_to = ("activation",)
        label = "half"

        def compute(self, call):                     # the output, with your backward
            return Halve.apply(call.native())

The default :meth:`Rule.forward` wraps :meth:`Rule.compute` in ledger probes, so the rule gets
its ledger row (relevance in and out) without extra work.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .. import params as _params
from ..errors import ConfigurationError
from ..kinds import KINDS
from ..ledger import LedgerEntry

if TYPE_CHECKING:
    from ..engine.call import Call
    from ..engine.plan import OpRecord

__all__ = [
    "Probe",
    "Rule",
    "call_with",
    "create",
    "get",
    "names",
    "per_sample_dot",
    "per_sample_sum",
    "register",
    "safe_divide",
    "stabilize",
]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """Return ``z + ε·sign(z)`` with ``sign(+0) = +1``: the sign-aware stabilised denominator.

    Computed as ``copysign(|z| + ε, z)`` in one fresh buffer (large fresh allocations are what
    element-wise work costs on CPU). A negative zero counts as negative; the rules only divide
    by a zero denominator where the numerator is zero too, so the sign of that zero never shows.
    """
    if epsilon == 0.0:
        return z
    return z.abs().add_(epsilon).copysign_(z)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Divide element-wise, returning 0 where the denominator is 0 (instead of NaN or ±inf)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1, denominator))


def per_sample_sum(t: Tensor) -> Tensor:
    """Sum all but the first (batch) dimension."""
    return t.reshape(t.shape[0], -1).sum(1)


def per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    """Return ``Σ a ⊙ b`` per sample without materialising the product.

    On CPU one ``torch.dot`` per sample is several times faster than a batched matrix
    product or ``(a * b).sum()`` for activation-sized tensors, also at 2 threads on a quiet
    machine (4 × 802816 values: 0.49 ms of CPU time for four dots, 2.5 ms for the diagonal of
    ``a bᵀ``, 1.3 ms for ``vecdot``). Under heavy load each dot's parallel region can wait for a
    descheduled thread, but that is the machine's cost, not the work's.
    For small tensors (transformer token activations) the per-call cost dominates and one
    batched ``vecdot`` is cheaper (2 × 3072 values: 4 µs instead of 9 µs).
    """
    n = a.shape[0]
    if a.shape != b.shape or not (a.is_contiguous() and b.is_contiguous()):
        return per_sample_sum(a * b)
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    if a.device.type == "cpu" and a2.shape[1] > _SMALL_DOT:
        if n == 1:  # one sample: no selection and no stacking of the single product
            return torch.dot(a2.view(-1), b2.view(-1)).view(1)
        return torch.stack([torch.dot(a2[i], b2[i]) for i in range(n)])
    return torch.linalg.vecdot(a2, b2)


#: Values per sample up to which one batched ``vecdot`` beats one ``torch.dot`` per sample on CPU.
_SMALL_DOT = 16384


def call_with(fn: Callable[..., Any], rest: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> Any:
    """``fn(x, *rest, **kwargs)``: a torch function as a function of its first argument (for ``functools.partial``)."""
    return fn(x, *rest, **kwargs)


class Probe(torch.autograd.Function):
    """Identity in both directions; records ``Σ t ⊙ g`` at an operation's input or output.

    With ``finite_only`` entries where ``t`` is infinite count as 0: attention masks put ``-inf``
    where the gradient is exactly 0, and ``-inf · 0`` must not turn the ledger into NaN.
    """

    @staticmethod
    def forward(ctx: Any, t: Tensor, entry: LedgerEntry, side: str, finite_only: bool = False) -> Tensor:
        ctx.entry = entry
        ctx.side = side
        ctx.finite_only = finite_only
        ctx.save_for_backward(t)
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (t,) = ctx.saved_tensors
        if ctx.finite_only:
            t = torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype, device=t.device))
        value = per_sample_dot(t, grad)
        zero = torch.zeros_like(value)
        if ctx.side == "out":
            ctx.entry.add(value, zero)
        else:
            ctx.entry.add(zero, value)
        return grad, None, None, None


class _DerivedKinds:
    """``Rule.kinds``: the kind names a rule's ``applies_to`` (kinds and groups) stands for."""

    def __get__(self, obj: Any, owner: type[Rule]) -> frozenset[str]:
        return KINDS.expand(owner.applies_to)


class Rule:
    """Base class: a rule decides how relevance passes one kind of operation.

    Subclasses name the operation kinds (or groups of kinds, see :mod:`relprop.kinds`) they apply
    to in ``applies_to``; a composite entry whose rule does not apply to an operation's kind is
    skipped for that operation. The engine calls :meth:`forward` for every operation the rule
    was assigned to.
    """

    #: Kind and group names the rule applies to (``kinds`` is derived from them).
    applies_to: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[frozenset[str]] = _DerivedKinds()  # type: ignore[assignment]
    #: Short name shown in ledgers and rule tables (and the registry name of built-in rules).
    label: ClassVar[str] = "rule"
    #: Whether the rule can explain an element-wise module written with several torch calls as one
    #: operation (see :data:`relprop.ops.ELEMENTWISE_MODULE_TYPES`).
    whole_modules: ClassVar[bool] = False
    #: The rule's own ranges for parameters of :data:`relprop.params.RANGES` (e.g. ``stabilizer >= 0``
    #: where a zero stabiliser is safe); the constructor's arguments are checked against the table.
    parameter_ranges: ClassVar[dict[str, _params.Spec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            # Check the constructor's arguments once, from its signature and the table of ranges.
            cls.__init__ = _params.checked(  # type: ignore[method-assign]
                cls.__init__, lambda args: type(args[0]).__name__, _ranges_of(cls)
            )

    def supports(self, kind: str) -> bool:
        """Return whether the rule can be applied to an operation of this kind."""
        return kind in self.kinds

    def params(self) -> dict[str, Any]:
        """Return the rule's parameters (for display)."""
        return {}

    def describe(self) -> str:
        """One-line description with parameters, e.g. ``gamma(gamma=0.25)``."""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{self.label}({params})" if params else self.label

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    # -- the call protocol -------------------------------------------------------------------------
    def check(self, record: OpRecord) -> None:
        """Refuse, when the plan is made, an operation this rule cannot explain (default: accept all)."""

    def trace(self, call: Call) -> Any:
        """The operation's output while the plan is recorded (before any backward is attached).

        Rules that change which tensors carry relevance (a constant output, a constant
        denominator) return the same structure here as in :meth:`forward`, so that the plan
        follows the tensors the explaining pass will follow.
        """
        return call.native()

    def forward(self, call: Call) -> Any:
        """The operation's output with this rule's backward attached (the explaining pass).

        The default runs :meth:`compute` between ledger probes: the operation's row records the
        relevance arriving at its output and handed to its inputs. Rules that book their own
        ledger rows (or have none) override this method instead.
        """
        return call.probed(self.compute)

    def compute(self, call: Call) -> Any:
        """The operation's output with this rule's backward; the default is the ordinary gradient."""
        return call.native()

    def decomposition(self, func: Callable[..., Any]) -> Callable[..., Any] | None:
        """For kinds flagged ``decomposable``: a function computing ``func`` with plain torch calls.

        The engine then runs it in place of the call (``fn(module_path, *args, **kwargs)``), so that
        every part is recorded, gets its own rule and its own ledger row. ``None``: no decomposition.
        """
        return None

    def module_output(self, call: Call, x: Tensor, output: Tensor) -> Tensor:
        """For rules with ``whole_modules``: attach the backward to an element-wise module's output."""
        raise NotImplementedError(f"{type(self).__name__} does not explain element-wise modules as a whole.")


def _ranges_of(cls: type[Rule]) -> dict[str, _params.Spec]:
    ranges: dict[str, _params.Spec] = {}
    for klass in reversed(cls.__mro__):
        ranges.update(klass.__dict__.get("parameter_ranges", {}))
    return ranges


def _fmt(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}" if value.numel() > 1 else f"{value.item():g}"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


# --- the registry ---------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Rule]] = {}
R = TypeVar("R", bound=type[Rule])


def register(cls: R) -> R:
    """Register a rule class under its ``label`` (class decorator); names must be unique."""
    other = _REGISTRY.get(cls.label)
    if other is not None and other is not cls:
        raise ConfigurationError(f"rule name {cls.label!r} is taken by {other.__name__}; choose another label.")
    _REGISTRY[cls.label] = cls
    return cls


def names() -> list[str]:
    """Names of the registered rules."""
    return list(_REGISTRY)


def get(name: str) -> type[Rule]:
    """The rule class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(f"unknown rule {name!r}; choose one of: {', '.join(_REGISTRY)}.") from None


def create(name: str, **params: Any) -> Rule:
    """An instance of rule ``name`` with those of ``params`` its constructor takes (others are ignored).

    Used for defaults such as ``create("pass", stabilizer=1e-6)``: every rule that has a
    stabiliser gets the composite's, the others ignore it.
    """
    cls = get(name)
    accepted = _parameters(cls)
    return cls(**{k: v for k, v in params.items() if k in accepted})


def _parameters(cls: type[Rule]) -> frozenset[str]:
    return frozenset(p for p in inspect.signature(cls.__init__).parameters if p != "self")
