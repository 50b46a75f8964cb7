"""Composites: which rule for which layer.

A :class:`Composite` is an ordered list of ``(matcher, rule)`` entries; for each operation
of the model the first entry whose matcher accepts it *and* whose rule applies to its kind
wins. Operations no entry claims get the structural defaults (pass-through for
activations, proportional sums for residual additions, average pooling and unmerged batch
norm, winner-takes-all max pooling, the product rule for products of two signals, LRP-0
for parametric layers).

Named composites (``relprop.composites.names()``) reproduce the usual recipes, e.g.
``"epsilon-gamma-box"`` (z^B at the input, γ on convolutions, ε on dense layers) and
``"montavon"`` (the VGG-16 recipe of Montavon et al.: LRP-0 on the top dense layers, LRP-ε
on the upper convolutions, LRP-γ on the lower ones, z^B at the pixels).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import match
from . import params as _params
from . import rules as _rules
from .errors import ConfigurationError
from .kinds import KINDS
from .match import LayerInfo, Matcher
from .rules import (
    AlphaBetaRule,
    AttentionRule,
    EpsilonRule,
    FlatRule,
    GammaRule,
    LRP0Rule,
    NormalizationRule,
    ProductRule,
    Rule,
    SoftmaxRule,
    StopRule,
    ZBoxRule,
    ZPlusRule,
)

__all__ = [
    "Composite",
    "bounds_from_normalization",
    "default_rules",
    "describe",
    "get",
    "names",
]

Entry = tuple[Any, Rule]


def default_rules(stabilizer: float = 1e-6) -> list[tuple[Matcher, Rule]]:
    """The structural defaults used after a composite's own entries: each kind's default rule.

    The defaults are declared with the kinds (:mod:`relprop.kinds`): pass-through for activations,
    proportional sums for residual additions, average pooling and unmerged batch norm,
    winner-takes-all max pooling, the product rule for products of two signals, LRP-0 for
    parametric layers, the gradient for constants merged into a signal (a class token). Rules with a
    stabiliser get ``stabilizer``.
    """
    by_rule: dict[str, list[str]] = {}
    for kind in KINDS:
        if kind.ruled and kind.default_rule is not None:
            by_rule.setdefault(kind.default_rule, []).append(kind.name)
    return [(match.kind(*kinds), _rules.create(name, stabilizer=stabilizer)) for name, kinds in by_rule.items()]


class Composite:
    """An ordered map from layer matchers to rules; the first applicable match wins.

    Parameters
    ----------
    entries
        ``(matcher, rule)`` pairs. A matcher is a :class:`relprop.match.Matcher`, a module path
        glob (str), a module type, or a callable taking a :class:`LayerInfo`.
    name
        Name shown in ledgers and rule tables.
    stabilizer
        Stabiliser of the structural default rules.
    """

    def __init__(self, entries: Iterable[Entry] = (), name: str = "custom", stabilizer: float = 1e-6) -> None:
        _params.check(f"composite {name!r}", {"stabilizer": stabilizer}, {"stabilizer": _params.NON_NEGATIVE})
        self.entries: list[tuple[Matcher, Rule]] = []
        for spec, rule in _pairs(entries):
            if not isinstance(rule, Rule):
                raise ConfigurationError(
                    f"composite entry for {spec!r} has {rule!r}, which is not a relprop rule; pass an "
                    "instance such as relprop.rules.EpsilonRule(0.25)."
                )
            self.entries.append((match.as_matcher(spec), rule))
        self.name = name
        self.defaults = default_rules(stabilizer)

    def prepend(self, entries: Iterable[Entry]) -> Composite:
        """Return a copy whose entries are ``entries`` followed by this composite's (user first)."""
        new = Composite(entries, name=self.name)
        new.entries.extend(self.entries)
        new.defaults = self.defaults
        return new

    def rule_for(self, info: LayerInfo) -> Rule | None:
        """Return the rule for an operation, or ``None`` if neither an entry nor a default applies."""
        for matcher, rule in self.entries:
            if rule.supports(info.kind) and matcher(info):
                return rule
        for matcher, rule in self.defaults:
            if rule.supports(info.kind) and matcher(info):
                return rule
        return None

    def __repr__(self) -> str:
        inner = ", ".join(f"({m.description}, {r!r})" for m, r in self.entries)
        return f"Composite(name={self.name!r}, entries=[{inner}])"


def _pairs(entries: Any) -> list[tuple[Any, Any]]:
    """``entries`` as a list of ``(matcher, rule)`` pairs, or a one-sentence error saying how to write them."""
    example = "rules=[('features.0', relprop.rules.FlatRule())]"
    if isinstance(entries, Mapping):
        raise ConfigurationError(
            f"rules must be a list of (matcher, rule) pairs, got a {type(entries).__name__}; pass "
            f"list(rules.items()) or write {example}."
        )
    if isinstance(entries, (str, bytes, Rule)) or not isinstance(entries, Iterable):
        raise ConfigurationError(f"rules must be a list of (matcher, rule) pairs, got {entries!r}; write {example}.")
    items = list(entries)
    if len(items) == 2 and isinstance(items[1], Rule) and not isinstance(items[0], (tuple, list)):
        raise ConfigurationError(
            f"rules must be a list of (matcher, rule) pairs, got one pair {tuple(items)!r} not in a list; wrap it: "
            f"rules=[{tuple(items)!r}]."
        )
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigurationError(
                f"rules must be a list of (matcher, rule) pairs, but holds {item!r}; write each entry as "
                f"(matcher, rule), e.g. {example}."
            )
    return [(item[0], item[1]) for item in items]


def bounds_from_normalization(
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Per-channel z^B bounds of inputs normalised as ``(x - mean) / std`` from ``x ∈ [low, high]``.

    Returns
    -------
    (low, high)
        Two tensors with one value per channel, e.g. for torchvision's ImageNet normalisation
        ``bounds_from_normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))``.
    """
    m = torch.as_tensor(mean, dtype=torch.float64)
    s = torch.as_tensor(std, dtype=torch.float64)
    if (s <= 0).any():
        raise ConfigurationError(f"normalisation std must be positive, got {s.tolist()}.")
    return (low - m) / s, (high - m) / s


@dataclass(frozen=True)
class _NamedComposite:
    factory: Callable[..., Composite]
    description: str
    ranges: dict[str, _params.Spec]

    @property
    def params(self) -> tuple[str, ...]:
        """The factory's parameters, in signature order."""
        return tuple(inspect.signature(self.factory).parameters)


_REGISTRY: dict[str, _NamedComposite] = {}


def _register(
    name: str, description: str, **ranges: _params.Spec
) -> Callable[[Callable[..., Composite]], Callable[..., Composite]]:
    """Register a composite factory; ``ranges`` replace :data:`relprop.params.RANGES` entries for it."""

    def decorator(factory: Callable[..., Composite]) -> Callable[..., Composite]:
        _REGISTRY[name] = _NamedComposite(factory, description, ranges)
        return factory

    return decorator


_conv = match.kind("convolution")
_dense = match.kind("dense")
_layer = match.kind("layer")


# Where every rule the stabiliser reaches is LRP-ε-like (0 = the gradient), a zero stabiliser is safe.
@_register("lrp-0", "LRP-0 everywhere (equals Gradient×Input)", stabilizer=_params.NON_NEGATIVE)
def _lrp0(stabilizer: float = 0.0) -> Composite:
    return Composite([(_layer, LRP0Rule())], name="lrp-0", stabilizer=stabilizer)


@_register("epsilon", "LRP-ε on every layer", stabilizer=_params.NON_NEGATIVE)
def _epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite([(_layer, EpsilonRule(epsilon))], name="epsilon", stabilizer=stabilizer)


@_register("gamma", "LRP-γ on every layer")
def _gamma(gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    return Composite([(_layer, GammaRule(gamma, stabilizer))], name="gamma", stabilizer=stabilizer)


@_register("alpha1-beta0", "LRP-α1β0 (z⁺) on every layer")
def _a1b0(stabilizer: float = 1e-6) -> Composite:
    return Composite([(_layer, AlphaBetaRule(1.0, 0.0, stabilizer))], name="alpha1-beta0", stabilizer=stabilizer)


@_register("alpha2-beta1", "LRP-α2β1 on every layer")
def _a2b1(stabilizer: float = 1e-6) -> Composite:
    return Composite([(_layer, AlphaBetaRule(2.0, 1.0, stabilizer))], name="alpha2-beta1", stabilizer=stabilizer)


@_register("alpha-beta", "LRP-αβ on every layer with your alpha and beta (alpha = beta + 1)")
def _alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> Composite:
    return Composite([(_layer, AlphaBetaRule(alpha, beta, stabilizer))], name="alpha-beta", stabilizer=stabilizer)


@_register("epsilon-gamma-box", "z^B on the first layer, LRP-γ on convolutions, LRP-ε on dense layers")
def _epsilon_gamma_box(
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low: float | Tensor | None = None,
    high: float | Tensor | None = None,
    stabilizer: float = 1e-6,
) -> Composite:
    return Composite(
        [
            (match.first(), ZBoxRule(low, high, stabilizer)),
            (_conv, GammaRule(gamma, stabilizer)),
            (_dense, EpsilonRule(epsilon)),
        ],
        name="epsilon-gamma-box",
        stabilizer=stabilizer,
    )


@_register("epsilon-plus-flat", "flat on the first layer, z⁺ on convolutions, LRP-ε on dense layers")
def _epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        [
            (match.first(), FlatRule(stabilizer)),
            (_conv, ZPlusRule(stabilizer)),
            (_dense, EpsilonRule(epsilon)),
        ],
        name="epsilon-plus-flat",
        stabilizer=stabilizer,
    )


@_register("epsilon-alpha2-beta1", "LRP-α2β1 on convolutions (the first one included), LRP-ε on dense layers")
def _epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        [
            (_conv, AlphaBetaRule(2.0, 1.0, stabilizer)),
            (_dense, EpsilonRule(epsilon)),
        ],
        name="epsilon-alpha2-beta1",
        stabilizer=stabilizer,
    )


@_register("epsilon-alpha2-beta1-flat", "flat on the first layer, LRP-α2β1 on convolutions, LRP-ε on dense layers")
def _epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        [
            (match.first(), FlatRule(stabilizer)),
            (_conv, AlphaBetaRule(2.0, 1.0, stabilizer)),
            (_dense, EpsilonRule(epsilon)),
        ],
        name="epsilon-alpha2-beta1-flat",
        stabilizer=stabilizer,
    )


@_register(
    "montavon",
    "Montavon et al.'s VGG-16 recipe: z^B at the input, LRP-γ on the lower convolutions, "
    "LRP-ε on the upper convolutions, LRP-0 on the dense layers",
)
def _montavon(
    epsilon: float = 0.25,
    gamma: float = 0.25,
    low: float | Tensor | None = None,
    high: float | Tensor | None = None,
    split: float = 0.5,
    stabilizer: float = 1e-6,
) -> Composite:
    return Composite(
        [
            (match.first(), ZBoxRule(low, high, stabilizer)),
            (_conv & match.depth(0.0, split, among="kind"), GammaRule(gamma, stabilizer)),
            (_conv, EpsilonRule(epsilon)),
            (_dense, LRP0Rule()),
        ],
        name="montavon",
        stabilizer=stabilizer,
    )


def _transformer_entries(epsilon: float, gamma: float | None, stabilizer: float) -> list[tuple[Matcher, Rule]]:
    layer_rule: Rule = EpsilonRule(epsilon) if gamma is None else GammaRule(gamma, stabilizer)
    return [
        (_layer, layer_rule),
        (match.kind("layer_norm", "rms_norm", "normalize", "div"), NormalizationRule()),
        (match.kind("statistic"), StopRule()),
    ]


@_register(
    "attnlrp",
    "AttnLRP (Achtibat et al. 2024) for transformers: LRP-ε on dense layers, the uniform rule on products of two "
    "signals (q·kᵀ, attention·v, gates), softmax by its Taylor decomposition, identity rule on normalisations",
    stabilizer=_params.NON_NEGATIVE,  # reaches LRP-ε-like defaults only (and γ, which checks its own, if given)
)
def _attnlrp(epsilon: float = 1e-6, gamma: float | None = None, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        [
            *_transformer_entries(epsilon, gamma, stabilizer),
            (match.kind("mul", "matmul"), ProductRule("uniform")),
            (match.kind("softmax"), SoftmaxRule()),
            (match.kind("attention"), AttentionRule("uniform")),
        ],
        name="attnlrp",
        stabilizer=stabilizer,
    )


@_register(
    "cp-lrp",
    "CP-LRP (Ali et al. 2022) for transformers: attention weights held constant, identity rule on normalisations, "
    "LRP-ε on dense layers",
    stabilizer=_params.NON_NEGATIVE,
)
def _cp_lrp(epsilon: float = 1e-6, gamma: float | None = None, stabilizer: float = 1e-6) -> Composite:
    return Composite(
        [
            *_transformer_entries(epsilon, gamma, stabilizer),
            (match.kind("softmax"), StopRule()),
            (match.kind("attention"), AttentionRule("cp")),
        ],
        name="cp-lrp",
        stabilizer=stabilizer,
    )


def names() -> list[str]:
    """Names of the built-in composites."""
    return list(_REGISTRY)


def describe() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(name, one-line description, parameters)`` of every built-in composite."""
    return [(name, c.description, c.params) for name, c in _REGISTRY.items()]


def get(name: str, **params: Any) -> Composite:
    """Build a named composite with parameters (``epsilon``, ``gamma``, ``low``, ``high`` ...).

    Parameters that are ``None`` are ignored, so callers can forward optional settings.
    """
    try:
        named = _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(f"unknown composite {name!r}; choose one of: {', '.join(_REGISTRY)}.") from None
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(named.params))
    if unknown:
        raise ConfigurationError(
            f"composite {name!r} does not take {', '.join(unknown)}; its parameters are {', '.join(named.params)}."
        )
    bound = inspect.signature(named.factory).bind(**given)
    bound.apply_defaults()  # relations (alpha = beta + 1) see the defaults too
    _params.check(f"composite {name!r}", {k: v for k, v in bound.arguments.items() if v is not None}, named.ranges)
    return named.factory(**given)
