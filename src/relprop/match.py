"""Matchers: predicates that select operations of a model for a rule.

A composite maps matchers to rules, first match wins. Matchers see one operation at a
time as a :class:`LayerInfo` (module path, module type, operation kind, position among
the parametric layers) and combine with ``&``, ``|`` and ``~``::

    from relprop import match
    match.kind("conv") & match.depth(0.0, 0.5)      # the lower half of the convolutions
    match.path("features.0") | match.first()         # by module path (glob) or position
    match.module_type(torch.nn.Linear)               # by module type
    match.op("exp")                                  # by function name, for any operation
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .kinds import KINDS

__all__ = [
    "LayerInfo",
    "Matcher",
    "as_matcher",
    "depth",
    "first",
    "kind",
    "last",
    "module_type",
    "op",
    "path",
]


@dataclass(frozen=True)
class LayerInfo:
    """What a matcher knows about one operation of the model.

    Attributes
    ----------
    index
        Position of the operation in the recorded forward pass.
    path
        Dotted path of the innermost module that called it (``""`` for the model's own forward).
    module_type
        Type of that module.
    function
        Readable name of the torch function, e.g. ``torch.nn.functional.conv2d``.
    kind
        Operation kind (see :mod:`relprop.kinds`).
    layer_index, layer_count
        Position among the parametric layers (convolutions and dense layers) in execution order;
        ``layer_index`` is ``None`` for other operations.
    kind_index, kind_count
        Position among the parametric layers of the same kind (conv vs dense).
    """

    index: int
    path: str
    module_type: type
    function: str
    kind: str
    layer_index: int | None = None
    layer_count: int = 0
    kind_index: int | None = None
    kind_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_first(self) -> bool:
        """Whether this is the first parametric layer executed (the input layer)."""
        return self.layer_index == 0

    @property
    def is_last(self) -> bool:
        """Whether this is the last parametric layer executed (usually the classifier)."""
        return self.layer_index is not None and self.layer_index == self.layer_count - 1

    @property
    def depth(self) -> float | None:
        """``layer_index / (layer_count - 1)``: 0 at the input layer, 1 at the output layer."""
        if self.layer_index is None:
            return None
        return self.layer_index / max(self.layer_count - 1, 1)

    @property
    def kind_depth(self) -> float | None:
        """Depth among the parametric layers of the same kind."""
        if self.kind_index is None:
            return None
        return self.kind_index / max(self.kind_count - 1, 1)

    @property
    def display_path(self) -> str:
        """The module path, or ``(model)`` for the model's own forward."""
        return self.path or "(model)"


class Matcher:
    """A predicate over :class:`LayerInfo`, combinable with ``&``, ``|`` and ``~``."""

    def __init__(self, predicate: Callable[[LayerInfo], bool], description: str) -> None:
        self._predicate = predicate
        self.description = description

    def __call__(self, info: LayerInfo) -> bool:
        return bool(self._predicate(info))

    def __and__(self, other: Any) -> Matcher:
        right = as_matcher(other)
        return Matcher(lambda i: self(i) and right(i), f"({self.description} & {right.description})")

    def __or__(self, other: Any) -> Matcher:
        right = as_matcher(other)
        return Matcher(lambda i: self(i) or right(i), f"({self.description} | {right.description})")

    def __invert__(self) -> Matcher:
        return Matcher(lambda i: not self(i), f"~{self.description}")

    def __repr__(self) -> str:
        return f"Matcher({self.description})"


def kind(*kinds: str) -> Matcher:
    """Match operations of the given kinds or groups of kinds (``conv``, ``dense``, ``layer``, ``pool`` ...).

    Groups (``layer``/``parametric``: convolutions and dense layers; ``convolution``; ``dense``;
    ``pool``; ``elementwise``; ``affine``; ``product``; ``normalization``; ``nonlinear``) are
    declared with the kinds in :mod:`relprop.kinds`, so kinds registered later join their groups.
    """
    names = tuple(kinds)
    return Matcher(lambda i: i.kind in KINDS.expand(names), f"kind({', '.join(kinds)})")


def module_type(*types: type) -> Matcher:
    """Match operations called by a module of one of these types (``isinstance`` semantics)."""
    names = ", ".join(t.__name__ for t in types)
    return Matcher(lambda i: issubclass(i.module_type, types), f"module_type({names})")


def path(*patterns: str) -> Matcher:
    """Match operations whose module path matches one of the glob patterns (``features.*``)."""
    return Matcher(
        lambda i: any(fnmatch.fnmatchcase(i.path, p) for p in patterns),
        f"path({', '.join(repr(p) for p in patterns)})",
    )


def op(*names: str) -> Matcher:
    """Match operations by torch function name (``exp``, ``conv2d``, ``torch.Tensor.add_``)."""

    def predicate(info: LayerInfo) -> bool:
        short = info.function.rsplit(".", 1)[-1]
        return any(n in (info.function, short) for n in names)

    return Matcher(predicate, f"op({', '.join(repr(n) for n in names)})")


def first() -> Matcher:
    """Match the first parametric layer executed (the layer that reads the input)."""
    return Matcher(lambda i: i.is_first, "first()")


def last() -> Matcher:
    """Match the last parametric layer executed."""
    return Matcher(lambda i: i.is_last, "last()")


def depth(low: float = 0.0, high: float = 1.0, among: str = "all") -> Matcher:
    """Match parametric layers whose relative depth lies in ``[low, high]``.

    Parameters
    ----------
    low, high
        Bounds of the depth fraction (0 = first parametric layer, 1 = last).
    among
        ``"all"``: depth among all parametric layers; ``"kind"``: among layers of the same
        kind (the convolutions only, or the dense layers only).
    """
    if among not in ("all", "kind"):
        raise ValueError(f"depth(among=...) must be 'all' or 'kind', got {among!r}.")

    def predicate(info: LayerInfo) -> bool:
        d = info.depth if among == "all" else info.kind_depth
        return d is not None and low <= d <= high

    return Matcher(predicate, f"depth({low:g}, {high:g}, among={among!r})")


def as_matcher(spec: Any) -> Matcher:
    """Turn a matcher-like value into a :class:`Matcher`.

    A string is a module-path glob, a type is a module type, a tuple of types is any of
    them, and a callable taking a :class:`LayerInfo` is used as it is.
    """
    if isinstance(spec, Matcher):
        return spec
    if isinstance(spec, str):
        return path(spec)
    if isinstance(spec, type) and issubclass(spec, torch.nn.Module):
        return module_type(spec)
    if isinstance(spec, tuple) and spec and all(isinstance(t, type) for t in spec):
        return module_type(*spec)
    if callable(spec):
        return Matcher(spec, getattr(spec, "__name__", "custom"))
    raise TypeError(
        f"cannot use {spec!r} to select layers; pass a module path glob (str), a module type, "
        "a relprop.match matcher, or a callable taking a LayerInfo."
    )
