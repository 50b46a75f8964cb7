"""Operation kinds: one declaration per kind of operation relprop has rules for.

The engine sees a model as the sequence of torch functions it calls (``F.conv2d``, ``F.relu``,
``Tensor.add_``, ``torch.cat`` ...), whether a module or the user's own ``forward`` calls them.
Each function belongs to one :class:`Kind`, declared once below with everything the rest of
relprop needs to know about it:

* the torch functions (and ATen overloads) it covers and its argument signature;
* its *groups* — families such as ``"layer"``, ``"pool"`` or ``"affine"`` that matchers
  (``relprop.match.kind("layer")``) and rules (``Rule.applies_to``) name instead of listing kinds;
* its flags: whether it is always part of the plan, whether it takes a rule at all, whether it is
  linear in its relevance-carrying inputs, whether it keeps non-negative tensors non-negative;
* its default rule (by the rule's registered name), used when no composite entry claims it;
* checks run when the plan is recorded (a batch norm in training mode, an active dropout).

A new kind is one :func:`register` call (see ``ARCHITECTURE.md``); rules and matchers pick it up
through its groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigurationError, ModelStateError, UnsupportedOperationError

if TYPE_CHECKING:
    from .engine.call import Call

__all__ = [
    "ACTIVATION_FUNCS",
    "GATE_FUNCS",
    "INPLACE_TO_OUT_OF_PLACE",
    "KINDS",
    "PIECEWISE_LINEAR",
    "RELU_FUNCS",
    "Kind",
    "KindRegistry",
    "Operands",
    "Signature",
    "out_of_place",
    "register",
]

Tensor_ = torch.Tensor
Func = Callable[..., Any]


# --- argument signatures ------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    """Argument names (in positional order) and defaults of a torch function."""

    names: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map positional and keyword arguments to their names (defaults filled in)."""
        bound = dict(self.defaults)
        bound.update(zip(self.names, args, strict=False))
        bound.update(kwargs)
        return bound


@dataclass(frozen=True)
class Operands:
    """What classification sees of one call: the function, its arguments and which of them carry relevance.

    ``positions`` are the positions, among the call's tensor arguments, of the relevance-carrying
    ones; ``carried`` their ``id``\\ s.
    """

    func: Func
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    positions: tuple[int, ...]
    carried: frozenset[int]


@dataclass(eq=False)
class Kind:
    """One kind of operation: the functions it covers and what relprop knows about them.

    Attributes
    ----------
    name
        The kind's name, as matchers (``match.kind("conv")``) and :class:`~relprop.match.LayerInfo` show it.
    functions
        The torch functions of this kind.
    signature
        Argument names and defaults of the functions (``signatures`` overrides it per function).
    groups
        Families this kind belongs to (``"layer"``, ``"pool"``, ``"affine"`` ...); matchers and
        rules may name a group instead of its kinds. The group ``"nonlinear"`` is derived: every
        kind that takes a rule and is not ``linear``.
    counted
        Always part of the plan when it touches relevance (``False``: only when its output carries
        relevance, e.g. queries such as ``x.size()`` or comparisons are not).
    ruled
        Takes a rule (``False`` for exact routing and inactive dropout, whose gradient is exact).
    default_rule
        Registered name of the rule used when no composite entry claims the operation; ``None``
        for kinds where the composite must choose (the error then names the composites that do).
    linear
        Linear in its relevance-carrying inputs up to a constant term, so LRP-0 is its gradient.
    positional
        A parametric layer: it has a position among the layers (``first()``, ``depth()``).
    sign_preserving
        ``True``: non-negative inputs give a non-negative output; a set of function names: only
        those functions do. ``nonnegative``: the output is always non-negative (ReLU).
    identity
        When it runs (an inactive dropout, checked when recording) it returns its input unchanged.
    masks
        The operation may see ``-inf`` masks where the gradient is 0 (ledger probes skip them).
    refine
        Decides the kind of one particular call (a product with a constant is linear: ``"exact"``).
    check
        Validation run while the plan is recorded (e.g. refuse a batch norm in training mode).
    recorded
        Bound arguments kept in the plan (a batch norm's statistics, for folding).
    aten
        Names of ATen overload packets of this kind (models converted to ATen graphs).
    hint
        Added to the error raised when no rule applies (which composites have rules for it).
    """

    name: str
    functions: Collection[Func] = ()
    signature: Signature | None = None
    signatures: Mapping[Func, Signature] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    counted: bool = True
    ruled: bool = True
    default_rule: str | None = None
    linear: bool = False
    positional: bool = False
    sign_preserving: bool | frozenset[str] = False
    nonnegative: bool = False
    identity: bool = False
    masks: bool = False
    refine: Callable[[Operands], str] | None = None
    check: Callable[[Call], None] | None = None
    recorded: tuple[str, ...] = ()
    aten: frozenset[str] = frozenset()
    hint: str = ""

    def signature_of(self, func: Func) -> Signature:
        """The argument signature of one of this kind's functions."""
        found = self.signatures.get(func, self.signature)
        if found is None:
            raise UnsupportedOperationError(f"relprop has no argument signature for {func!r} ({self.name}).")
        return found

    def bind(self, func: Func, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by name."""
        return self.signature_of(func).bind(args, kwargs)

    def preserves_sign(self, function: str) -> bool:
        """Whether a call of ``function`` (its readable name) keeps non-negative inputs non-negative."""
        if isinstance(self.sign_preserving, frozenset):
            return function.rsplit(".", 1)[-1] in self.sign_preserving
        return self.sign_preserving

    @property
    def needs_rule(self) -> bool:
        """Whether the composite must give this kind a rule (there is no default)."""
        return self.ruled and self.default_rule is None


class KindRegistry:
    """All operation kinds, looked up by name, group or torch function."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}
        self._by_function: dict[Func, Kind] = {}
        self._by_aten: dict[str, Kind] = {}
        self.version = 0

    def register(self, kind: Kind) -> Kind:
        """Add ``kind`` (its name and functions must be new)."""
        if kind.name in self._kinds:
            raise ConfigurationError(f"operation kind {kind.name!r} is already registered; choose another name.")
        taken = [f for f in kind.functions if f in self._by_function]
        if taken:
            other = self._by_function[taken[0]].name
            raise ConfigurationError(
                f"{taken[0]!r} already belongs to kind {other!r}; a torch function has exactly one kind."
            )
        self._kinds[kind.name] = kind
        for func in kind.functions:
            self._by_function[func] = kind
        for name in kind.aten:
            self._by_aten[name] = kind
        self.version += 1
        return kind

    def unregister(self, name: str) -> None:
        """Remove a kind (for tests and plug-ins that register temporarily)."""
        kind = self._kinds.pop(name)
        for func in kind.functions:
            self._by_function.pop(func, None)
        for packet in kind.aten:
            self._by_aten.pop(packet, None)
        self.version += 1

    def __getitem__(self, name: str) -> Kind:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[Kind]:
        return iter(list(self._kinds.values()))

    def names(self) -> list[str]:
        """Names of all kinds, in registration order."""
        return list(self._kinds)

    def of_function(self, func: Func) -> Kind | None:
        """The kind a torch function belongs to, if any."""
        kind = self._by_function.get(func)
        if kind is None:
            packet = getattr(func, "overloadpacket", None)
            if packet is not None:
                kind = self._by_aten.get(packet.__name__)
        return kind

    def expand(self, names: Iterable[str]) -> frozenset[str]:
        """Kind names for a mix of kind and group names (``"layer"`` → conv, conv_transpose, linear)."""
        return _expand(self, tuple(names), self.version)

    def classify(self, operands: Operands) -> Kind:
        """The kind of one call."""
        kind = self.of_function(operands.func) or self._kinds["unknown"]
        seen = {kind.name}
        while kind.refine is not None:
            refined = self._kinds[kind.refine(operands)]
            if refined.name in seen:
                break
            seen.add(refined.name)
            kind = refined
        return kind


@functools.lru_cache(maxsize=256)
def _expand(registry: KindRegistry, names: tuple[str, ...], version: int) -> frozenset[str]:
    found: set[str] = set()
    for name in names:
        if name in registry:
            found.add(name)
        elif name == NONLINEAR:
            found.update(k.name for k in registry if k.ruled and not k.linear)
        found.update(k.name for k in registry if name in k.groups)
    return frozenset(found)


#: The group of every kind that takes a rule and is not linear (derived from the flags).
NONLINEAR = "nonlinear"
KINDS = KindRegistry()
register = KINDS.register


# --- per-function facts ---------------------------------------------------------------------------
# ReLU: its gradient already passes relevance unchanged (R_in = R_out), so it runs natively.
RELU_FUNCS: frozenset[Func] = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, Tensor_.relu, Tensor_.relu_})

# Other element-wise activations: (out-of-place function, is piecewise-linear through 0). For
# piecewise-linear activations through the origin (leaky ReLU, PReLU) f(x)/x equals the
# derivative, so pass-through relevance is the plain gradient.
_ACTIVATIONS: list[tuple[Func, Func, bool]] = [
    (F.leaky_relu, F.leaky_relu, True),
    (F.leaky_relu_, F.leaky_relu, True),
    (F.prelu, F.prelu, True),
    (F.gelu, F.gelu, False),
    (F.silu, F.silu, False),
    (F.mish, F.mish, False),
    (F.elu, F.elu, False),
    (F.elu_, F.elu, False),
    (F.selu, F.selu, False),
    (F.celu, F.celu, False),
    (F.hardtanh, F.hardtanh, False),
    (F.hardtanh_, F.hardtanh, False),
    (F.relu6, F.relu6, False),
    (F.hardswish, F.hardswish, False),
    (F.softplus, F.softplus, False),
    (F.softsign, F.softsign, False),
    (F.tanh, torch.tanh, False),
    (torch.tanh, torch.tanh, False),
    (Tensor_.tanh, torch.tanh, False),
    (F.sigmoid, torch.sigmoid, False),
    (torch.sigmoid, torch.sigmoid, False),
    (Tensor_.sigmoid, torch.sigmoid, False),
    (F.hardsigmoid, F.hardsigmoid, False),
    (F.logsigmoid, F.logsigmoid, False),
    (F.tanhshrink, F.tanhshrink, False),
    (F.softshrink, F.softshrink, False),
    (F.hardshrink, F.hardshrink, False),
]
#: Activation function → (its out-of-place form, whether it is piecewise linear through 0).
ACTIVATION_FUNCS: dict[Func, tuple[Func, bool]] = {f: (g, linear) for f, g, linear in _ACTIVATIONS}
#: Element-wise functions with ``f(x)/x = f'(x)`` (piecewise linear through 0): their gradient passes
#: relevance through unchanged.
PIECEWISE_LINEAR: frozenset[Func] = RELU_FUNCS | {f for f, (_, linear) in ACTIVATION_FUNCS.items() if linear}
# Activations whose positional "inplace" flag follows this many other arguments.
_POSITIONAL_INPLACE: dict[Func, int] = {F.hardtanh: 2, F.elu: 1, F.leaky_relu: 1, F.relu: 0}
_INPLACE_ACTIVATIONS: frozenset[Func] = frozenset({F.leaky_relu_, F.elu_, F.hardtanh_})

# Functions whose output is a multiplicative gate in (0, 1): a product with such a tensor is
# treated as a gated signal by the product rule.
GATE_FUNCS: frozenset[Func] = frozenset(
    {F.sigmoid, torch.sigmoid, Tensor_.sigmoid, F.hardsigmoid, F.softmax, torch.softmax, Tensor_.softmax}
)

INPLACE_TO_OUT_OF_PLACE: dict[Func, Func] = {
    Tensor_.add_: torch.add,
    Tensor_.__iadd__: torch.add,
    Tensor_.sub_: torch.sub,
    Tensor_.__isub__: torch.sub,
    Tensor_.mul_: torch.mul,
    Tensor_.__imul__: torch.mul,
    Tensor_.div_: torch.div,
    Tensor_.__itruediv__: torch.div,
    torch.relu_: torch.relu,
    F.relu_: torch.relu,
    Tensor_.relu_: torch.relu,
    Tensor_.squeeze_: torch.squeeze,
    Tensor_.unsqueeze_: torch.unsqueeze,
    Tensor_.transpose_: torch.transpose,
}

#: In-place functions the engine runs natively (they write a slice, or copy into the tensor).
NATIVE_INPLACE: frozenset[Func] = frozenset({Tensor_.__setitem__, Tensor_.copy_})


def out_of_place(
    func: Func, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Func, tuple[Any, ...], dict[str, Any]]:
    """The out-of-place form of a call: ``x.relu_()`` → ``torch.relu(x)``, ``out += y`` → ``torch.add(out, y)``.

    An ``inplace`` flag (keyword, or the positional flag of an activation) is dropped: rules compute
    a new output and never write into the model's tensors.
    """
    replacement = INPLACE_TO_OUT_OF_PLACE.get(func)
    activation = ACTIVATION_FUNCS.get(func)
    if replacement is None and activation is not None:
        replacement = activation[0]
    target = func if replacement is None else replacement
    rest = tuple(args)
    if func in ACTIVATION_FUNCS or func in RELU_FUNCS:
        arity = _POSITIONAL_INPLACE.get(target)
        if arity is not None:
            rest = rest[: 1 + arity]
        else:
            # Element-wise activations take no other boolean than a positional inplace flag.
            rest = (rest[0], *(a for a in rest[1:] if not isinstance(a, bool))) if rest else rest
    return target, rest, {k: v for k, v in kwargs.items() if k != "inplace"}


def is_inplace(func: Func, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether the call, as written, would modify its first argument."""
    if func in INPLACE_TO_OUT_OF_PLACE or kwargs.get("inplace"):
        return True
    if func in _INPLACE_ACTIVATIONS:
        return True
    arity = _POSITIONAL_INPLACE.get(func)
    return arity is not None and len(args) > 1 + arity and args[1 + arity] is True


def _collect(owners: Iterable[Any], names: Iterable[str]) -> frozenset[Func]:
    found: set[Func] = set()
    for name in names:
        for owner in owners:
            obj = getattr(owner, name, None)
            if obj is not None and callable(obj):
                found.add(obj)
    return frozenset(found)


# --- refinements and checks -----------------------------------------------------------------------
def _product_or_exact(kind: str) -> Callable[[Operands], str]:
    def refine(operands: Operands) -> str:
        # A product with a constant is linear in the signal: its gradient is exact.
        return kind if len(operands.positions) > 1 else "exact"

    return refine


def _division(operands: Operands) -> str:
    # x / c is linear in x; a division by a relevance-carrying tensor is a normalisation
    # (for c / x, Tensor.__rtruediv__(x, c), the carrying tensor is the denominator).
    if operands.func is Tensor_.__rtruediv__:
        return "div"
    return "exact" if operands.positions == (0,) else "div"


def _statistic(operands: Operands) -> str:
    # Only x ** c (a power of the signal) is a statistic; c ** x or x ** y are not.
    first = operands.args[0] if operands.args else None
    if operands.positions == (0,) and isinstance(first, Tensor) and id(first) in operands.carried:
        return "statistic"
    return "unknown"


def _tensors(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Iterable[Tensor]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (b for b in a if isinstance(b, Tensor))


def _merge_or_exact(operands: Operands) -> str:
    """Routing that mixes relevance-carrying tensors with floating-point constants is a ``merge``."""
    if operands.func not in MERGE_FUNCS:
        return "exact"
    for t in _tensors(operands.args, operands.kwargs):
        if id(t) not in operands.carried and t.is_floating_point() and t.numel():
            return "merge"
    if operands.func in SCALAR_VALUE_FUNCS:
        values = [*operands.args[1:], *operands.kwargs.values()]
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0 for v in values):
            return "merge"
    return "exact"


def _check_constant_weights(call: Call) -> None:
    for name in ("weight", "bias"):
        t = call.bound.get(name)
        if isinstance(t, Tensor) and call.is_carried(t):
            raise UnsupportedOperationError(
                f"module '{call.display_path}' ({call.record.module_type.__name__}) calls {call.record.function} "
                f"with a {name} computed from the input; relprop's layer rules need input-independent weights, so "
                "give this operation a rule with rules=[(relprop.match.path(...), relprop.rules.GradientRule())]"
                " or restructure the layer."
            )


def _check_batchnorm_eval(call: Call) -> None:
    bound = call.bound
    if bound["training"] or bound["running_mean"] is None:
        raise ModelStateError(
            f"batch norm at '{call.display_path}' ({call.record.module_type.__name__}) normalises with batch "
            "statistics (training mode or no running statistics); call model.eval() before explaining."
        )


def _check_dropout_inactive(call: Call) -> None:
    bound = call.bound
    if bound["training"] and float(bound["p"]) > 0:
        raise ModelStateError(
            f"dropout at '{call.display_path}' ({call.record.module_type.__name__}) is active (training mode); "
            "call model.eval() before explaining."
        )


_TRANSFORMER_HINT = "is a transformer operation: explain with composite='attnlrp' or 'cp-lrp', which have rules for it"

# --- the kinds ------------------------------------------------------------------------------------
CONV_FUNCS: dict[Func, int] = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
CONV_TRANSPOSE_FUNCS: dict[Func, int] = {
    torch.conv_transpose1d: 1,
    torch.conv_transpose2d: 2,
    torch.conv_transpose3d: 3,
}

register(
    Kind(
        "conv",
        CONV_FUNCS,
        Signature(
            ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
            {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
        ),
        groups=("layer", "parametric", "convolution"),
        linear=True,
        positional=True,
        default_rule="lrp-0",
        check=_check_constant_weights,
        recorded=("groups",),
    )
)
register(
    Kind(
        "conv_transpose",
        CONV_TRANSPOSE_FUNCS,
        Signature(
            ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
            {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1},
        ),
        groups=("layer", "parametric", "convolution"),
        linear=True,
        positional=True,
        default_rule="lrp-0",
        check=_check_constant_weights,
        recorded=("groups",),
    )
)
register(
    Kind(
        "linear",
        {F.linear},
        Signature(("input", "weight", "bias"), {"bias": None}),
        groups=("layer", "parametric", "dense"),
        linear=True,
        positional=True,
        default_rule="lrp-0",
        check=_check_constant_weights,
    )
)
register(
    Kind(
        "batchnorm",
        {F.batch_norm},
        Signature(
            ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
            {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5},
        ),
        groups=("affine",),
        linear=True,
        default_rule="norm",
        check=_check_batchnorm_eval,
        recorded=("running_mean", "running_var", "weight", "bias", "eps"),
    )
)
register(
    Kind(
        "relu",
        RELU_FUNCS,
        Signature(("input", "inplace"), {"inplace": False}),
        groups=("elementwise",),
        default_rule="pass",
        nonnegative=True,
    )
)
register(
    Kind(
        "activation",
        ACTIVATION_FUNCS,
        Signature(("input",)),
        groups=("elementwise",),
        default_rule="pass",
    )
)
_POOL_SIGNATURE = Signature(
    ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
)
_ADAPTIVE_POOL_SIGNATURE = Signature(("input", "output_size", "return_indices"), {"return_indices": False})
register(
    Kind(
        "maxpool",
        {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d},
        _POOL_SIGNATURE,
        {f: _ADAPTIVE_POOL_SIGNATURE for f in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)},
        groups=("pool",),
        default_rule="winner-takes-all",
        sign_preserving=True,
    )
)
register(
    Kind(
        "avgpool",
        {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d},
        groups=("pool", "affine"),
        linear=True,
        default_rule="norm",
        sign_preserving=True,
    )
)
register(
    Kind(
        "add",
        _collect(
            (torch, Tensor_),
            (
                "add",
                "add_",
                "__add__",
                "__radd__",
                "__iadd__",
                "sub",
                "subtract",
                "sub_",
                "__sub__",
                "__rsub__",
                "__isub__",
            ),
        ),
        Signature(("input", "other", "alpha"), {"alpha": 1}),
        groups=("affine",),
        linear=True,
        default_rule="norm",
    )
)
register(
    Kind(
        "mul",
        _collect((torch, Tensor_), ("mul", "multiply", "mul_", "__mul__", "__rmul__", "__imul__")),
        Signature(("input", "other")),
        groups=("product",),
        default_rule="product",
        refine=_product_or_exact("mul"),
    )
)
register(
    Kind(
        "matmul",
        _collect((torch, Tensor_), ("matmul", "mm", "bmm", "__matmul__", "__rmatmul__")) | {torch.einsum},
        groups=("product",),
        default_rule="product",
        refine=_product_or_exact("matmul"),
    )
)
register(
    Kind(
        "div",
        _collect(
            (torch, Tensor_),
            ("div", "divide", "true_divide", "div_", "__truediv__", "__itruediv__", "__rtruediv__"),
        ),
        Signature(("input", "other")),
        {Tensor_.__rtruediv__: Signature(("other", "input"))},
        groups=("normalization",),
        refine=_division,
        hint=_TRANSFORMER_HINT,
    )
)
register(
    Kind(
        "dropout",
        {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout},
        Signature(("input", "p", "training", "inplace"), {"p": 0.5, "training": True, "inplace": False}),
        ruled=False,
        linear=True,
        sign_preserving=True,
        identity=True,
        check=_check_dropout_inactive,
    )
)
register(
    Kind(
        "softmax",
        {F.softmax, torch.softmax, Tensor_.softmax},
        Signature(("input", "dim")),
        masks=True,
        hint=_TRANSFORMER_HINT,
    )
)
register(
    Kind(
        "attention",
        {F.scaled_dot_product_attention},
        Signature(
            ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"),
            {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None},
        ),
        hint=_TRANSFORMER_HINT,
    )
)
register(
    Kind(
        "layer_norm",
        {F.layer_norm},
        Signature(("input", "normalized_shape", "weight", "bias", "eps"), {"weight": None, "bias": None, "eps": 1e-5}),
        groups=("normalization",),
        hint=_TRANSFORMER_HINT,
    )
)
register(
    Kind(
        "rms_norm",
        {F.rms_norm} if hasattr(F, "rms_norm") else set(),
        Signature(("input", "normalized_shape", "weight", "eps"), {"weight": None, "eps": None}),
        groups=("normalization",),
        hint=_TRANSFORMER_HINT,
    )
)
register(
    Kind(
        "normalize",
        {F.normalize},
        Signature(("input", "p", "dim", "eps"), {"p": 2.0, "dim": 1, "eps": 1e-12}),
        groups=("normalization",),
        hint=_TRANSFORMER_HINT,
    )
)
# Statistics of a tensor that normalisations divide by (x², √·, 1/√·, variance, norms). A hand-written
# LayerNorm or RMSNorm computes them from the input; AttnLRP's identity rule treats them as constants.
_STATISTIC_NAMES = ["pow", "pow_", "__pow__", "__ipow__", "square", "sqrt", "rsqrt", "reciprocal", "var", "std"]
_STATISTIC_NAMES += ["var_mean", "std_mean", "norm"]
register(
    Kind(
        "statistic",
        _collect(
            (torch, Tensor_),
            _STATISTIC_NAMES,
        )
        | {torch.linalg.vector_norm, torch.linalg.norm},
        refine=_statistic,
        hint=_TRANSFORMER_HINT,
    )
)
# Routing operations that may merge relevance-carrying tensors with constant ones (a class token
# concatenated to the patch tokens, a masked fill): the constant parts take relevance.
MERGE_FUNCS: frozenset[Func] = _collect(
    (torch, Tensor_), ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "where", "masked_fill")
)
# Functions whose scalar arguments are values written into the output (not dimensions).
SCALAR_VALUE_FUNCS: frozenset[Func] = frozenset({torch.where, Tensor_.where, torch.masked_fill, Tensor_.masked_fill})
register(Kind("merge", default_rule="gradient", masks=True))

# Linear operations without bias, and pure routing (reshape, index, concatenate): their gradient
# is exact LRP-0, which conserves relevance (Σ x ⊙ Aᵀg = Σ (Ax) ⊙ g).
_EXACT_NAMES = [
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "unsqueeze_",
    "permute",
    "transpose",
    "transpose_",
    "swapaxes",
    "swapdims",
    "movedim",
    "moveaxis",
    "t",
    "contiguous",
    "clone",
    "expand",
    "expand_as",
    "repeat",
    "repeat_interleave",
    "tile",
    "narrow",
    "select",
    "split",
    "split_with_sizes",
    "chunk",
    "unbind",
    "tensor_split",
    "hsplit",
    "vsplit",
    "dsplit",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "dstack",
    "masked_fill",
    "where",
    "flip",
    "fliplr",
    "flipud",
    "roll",
    "rot90",
    "__getitem__",
    "__setitem__",
    "index_select",
    "gather",
    "take_along_dim",
    "diagonal",
    "tril",
    "triu",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "channel_shuffle",
    "native_channel_shuffle",
    "unfold",
    "fold",
    "to",
    "type",
    "type_as",
    "float",
    "double",
    "half",
    "bfloat16",
    "cpu",
    "cuda",
    "sum",
    "mean",
    "nansum",
    "cumsum",
    "neg",
    "negative",
    "__neg__",
    "positive",
    "__pos__",
    "interpolate",
    "upsample",
    "upsample_nearest",
    "upsample_bilinear",
    "max",
    "min",
    "amax",
    "amin",
    "sort",
    "topk",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices",
    "identity",
]
# Routing operations that keep a non-negative tensor non-negative.
_SIGN_PRESERVING_NAMES = frozenset(
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
_EXACT_FUNCS = _collect((torch, Tensor_, F), _EXACT_NAMES) | {
    getattr(Tensor_, prop).__get__ for prop in ("T", "mT", "H", "mH")
}
# ATen overloads (converted TorchScript graphs) that are routing or linear without a constant term.
_EXACT_ATEN = frozenset(
    [
        "view",
        "reshape",
        "_unsafe_view",
        "t",
        "transpose",
        "permute",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "expand",
        "clone",
        "contiguous",
        "slice",
        "select",
        "index",
        "cat",
        "stack",
        "split",
        "split_with_sizes",
        "chunk",
        "mean",
        "sum",
        "alias",
        "detach_copy",
        "_to_copy",
        "constant_pad_nd",
    ]
)
register(
    Kind(
        "exact",
        # Functions of the kinds above keep their kind (``torch.max`` pools nothing, ``F.relu`` is no routing).
        _EXACT_FUNCS - {f for kind in KINDS for f in kind.functions},
        counted=False,
        ruled=False,
        linear=True,
        sign_preserving=_SIGN_PRESERVING_NAMES,
        refine=_merge_or_exact,
        aten=_EXACT_ATEN,
    )
)
register(Kind("unknown", counted=False))
