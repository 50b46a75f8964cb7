"""Attribution methods beside LRP, selected by name: ``relprop.explain(..., method=NAME)``.

Each method is a function ``fn(model, inputs, target=None, **params) -> Explanation`` that
leaves the model untouched. ``"lrp"`` (the default of :func:`relprop.explain`) is the LRP
engine itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

__all__ = ["describe", "get", "names", "register"]

Method = Callable[..., Any]
_REGISTRY: dict[str, tuple[Method, str]] = {}


def register(name: str, description: str) -> Callable[[Method], Method]:
    """Register ``fn`` as the method ``name`` (one-line ``description`` for listings)."""

    def decorator(fn: Method) -> Method:
        _REGISTRY[name] = (fn, description)
        return fn

    return decorator


def names() -> list[str]:
    """Names of the available methods, ``"lrp"`` first."""
    return ["lrp", *_REGISTRY]


def describe() -> list[tuple[str, str]]:
    """``(name, description)`` of every method."""
    return [
        ("lrp", "Layer-wise Relevance Propagation with a composite of rules"),
        *((n, d) for n, (_, d) in _REGISTRY.items()),
    ]


def get(name: str) -> Method:
    """The method function registered as ``name``."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise ConfigurationError(f"unknown method {name!r}; choose one of: {', '.join(names())}.") from None
