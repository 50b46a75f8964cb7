"""Attribution methods beside LRP, selected by name: ``relprop.explain(..., method=NAME)``.

Each method is a function ``fn(model, inputs, target=None, **params) -> Explanation`` that
leaves the model untouched. ``"lrp"`` (the default of :func:`relprop.explain`) is the LRP
engine itself. All methods resolve ``target`` exactly like LRP and return the same
:class:`relprop.Explanation`: ``relevance`` shaped like the inputs, the model ``output``, the
explained ``target``, a ledger (``score``: what the method explains per sample;
``input_relevance``: the sum of the attribution) and method diagnostics in ``info``.
Every method also takes ``output=`` (which tensor of a dict, tuple or dataclass output to
explain; see :mod:`relprop.outputs`).

================================  ===========================================================
``gradient``                      the gradient (saliency); ``absolute=True`` for its magnitude
``gradient-x-input``              input ⊙ gradient
``smoothgrad``                    gradient averaged over noisy copies of the input
``integrated-gradients``          path integral of the gradient from a baseline
``guided-backprop``               gradient with ReLUs passing only positive gradient where active
``deconvnet``                     gradient with ReLUs passing only positive gradient
``occlusion``                     score drop when a sliding patch is replaced by a value
``deeplift``                      DeepLIFT against a reference (rescale or RevealCancel rule)
``deep-taylor``                   Deep Taylor decomposition: z⁺ on every layer, z^B at the input
================================  ===========================================================

:func:`resolve` turns a command-line spec such as ``"smoothgrad:n=20,sigma=0.1"`` into a
method name and its parameters.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

from .. import params as _params
from ..engine import guard
from ..errors import ConfigurationError
from ..outputs import check_selector, with_output
from ..params import Spec

__all__ = ["describe", "get", "names", "parameters", "register", "resolve"]

Method = Callable[..., Any]
_REGISTRY: dict[str, tuple[Method, str, tuple[str, ...]]] = {}
# Every method's own leading arguments; the rest are its parameters.
_CALL_ARGUMENTS = ("model", "inputs", "target")
# What "lrp" accepts besides the composite's own parameters (relprop.explain / Explainer options).
_LRP_OPTIONS = ("composite", "canonize", "ledger", "top", "contrast", "output", "reference", "blur_sigma", "compile")
# Taken by every method: which tensor of the model's output to explain (relprop.outputs).
_OUTPUT = "output"
# A spec may name one parameter without "key=": "lrp:epsilon-gamma-box", "deeplift:reveal-cancel".
_SHORTHAND = {"lrp": "composite", "deeplift": "rule"}
# Listing order of the built-in methods; methods registered later follow in registration order.
_ORDER = (
    "gradient",
    "gradient-x-input",
    "smoothgrad",
    "integrated-gradients",
    "guided-backprop",
    "deconvnet",
    "occlusion",
    "deeplift",
    "deep-taylor",
)


def register(name: str, description: str, **ranges: Spec) -> Callable[[Method], Method]:
    """Register ``fn`` as the method ``name`` (one-line ``description`` for listings).

    The registered function (which the decorator returns) makes every method keep the same
    promises as LRP, so that ``fn`` itself needs to check none of them:

    * parameters it does not take are refused with a :class:`~relprop.errors.ConfigurationError`
      that lists the ones it does, and the given ones are checked against
      :data:`relprop.params.RANGES` (``ranges`` replace entries for this method);
    * the model is checked before any forward pass (:func:`relprop.engine.guard.check_model`);
    * ``inputs`` are checked, converted to the model's dtype and moved to its device
      (:func:`relprop.engine.guard.prepare_inputs`), NaN or Inf refused unless
      ``nonfinite="report"``;
    * the result is checked (:func:`relprop.engine.guard.finish`): NaN or Inf is an error, or
      with ``nonfinite="report"`` a report in ``info["nonfinite"]``.
    * ``output=`` is taken by every method: the model is then run through a
      :class:`~relprop.outputs.SelectedOutput` that returns the selected tensor.
    """

    def decorator(fn: Method) -> Method:
        own = tuple(p for p in inspect.signature(fn).parameters if p not in _CALL_ARGUMENTS)
        accepted = own if _OUTPUT in own else (*own, _OUTPUT)

        @functools.wraps(fn)
        def checked(model: Any, inputs: Any, target: Any = None, nonfinite: str = "raise", **params: Any) -> Any:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise ConfigurationError(
                    f"method {name!r} does not take {', '.join(unknown)}; {_listing(accepted, 'its parameters are')}."
                )
            _params.check(f"method {name!r}", params, ranges)
            mode = guard.check_nonfinite_mode(nonfinite)
            if _OUTPUT not in own and _OUTPUT in params:
                model = with_output(model, check_selector(params.pop(_OUTPUT)))
            facts = guard.check_model(model)
            x = guard.prepare_inputs(model, inputs, mode, facts)
            return guard.finish(fn(model, x, target, **params), mode, model)

        _REGISTRY[name] = (checked, description, accepted)
        return checked

    return decorator


def _listing(params: tuple[str, ...], lead: str) -> str:
    return f"{lead} {', '.join(params)}" if params else "it takes no parameters"


def _ordered() -> list[str]:
    builtin = [n for n in _ORDER if n in _REGISTRY]
    return builtin + [n for n in _REGISTRY if n not in _ORDER]


def names() -> list[str]:
    """Names of the available methods, ``"lrp"`` first."""
    return ["lrp", *_ordered()]


def describe() -> list[tuple[str, str]]:
    """``(name, description)`` of every method."""
    return [
        ("lrp", "Layer-wise Relevance Propagation with a composite of rules"),
        *((n, _REGISTRY[n][1]) for n in _ordered()),
    ]


def parameters(name: str, composite: str | None = None) -> tuple[str, ...]:
    """The parameters method ``name`` accepts (for ``"lrp"``: the options and those of ``composite``)."""
    if name == "lrp":
        from .. import composites

        if composite is not None and composite in composites.names():
            own = next(p for n, _, p in composites.describe() if n == composite)
        else:
            own = tuple(sorted({p for _, _, ps in composites.describe() for p in ps}))
        return (*_LRP_OPTIONS, *own)
    _check_name(name)
    return _REGISTRY[name][2]


def _check_name(name: str) -> None:
    if name != "lrp" and name not in _REGISTRY:
        raise ConfigurationError(f"unknown method {name!r}; choose one of: {', '.join(names())}.")


def get(name: str) -> Method:
    """The method function registered as ``name``."""
    _check_name(name)
    if name == "lrp":
        raise ConfigurationError("method 'lrp' is relprop.explain itself (or relprop.Explainer); call that.")
    return _REGISTRY[name][0]


_INT = re.compile(r"[+-]?\d+")
_TUPLE = re.compile(r"\d+(x\d+)+")


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered == "none":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _TUPLE.fullmatch(lowered):
        return tuple(int(v) for v in lowered.split("x"))
    try:
        return float(text)
    except ValueError:
        return text


def resolve(name_or_spec: str) -> tuple[str, dict[str, Any]]:
    """Parse a method spec ``NAME[:PARAMS]`` into ``(method name, parameters)``.

    ``PARAMS`` is a comma-separated list of ``key=value``; values become booleans
    (``true``/``false``), ``None`` (``none``), integers, tuples of integers (``4x4``), floats
    or else strings. For ``lrp`` the first item may be a composite name and for ``deeplift``
    a rule name, without ``key=``.

    Examples
    --------
    >>> resolve("lrp:epsilon-gamma-box,gamma=0.5")
    ('lrp', {'composite': 'epsilon-gamma-box', 'gamma': 0.5})
    >>> resolve("smoothgrad:n=20,sigma=0.1")
    ('smoothgrad', {'n': 20, 'sigma': 0.1})
    >>> resolve("occlusion:patch=4x4,stride=2")
    ('occlusion', {'patch': (4, 4), 'stride': 2})

    Raises
    ------
    ConfigurationError
        For an unknown method, a malformed item, a repeated or unknown parameter.
    """
    if not isinstance(name_or_spec, str) or not name_or_spec.strip():
        raise ConfigurationError(
            f"a method spec must be a non-empty string like 'smoothgrad:n=20', got {name_or_spec!r}."
        )
    spec = name_or_spec.strip()
    name, _, rest = spec.partition(":")
    name = name.strip()
    _check_name(name)
    params: dict[str, Any] = {}
    items = [item.strip() for item in rest.split(",")] if rest.strip() else []
    for position, item in enumerate(items):
        if not item:
            raise ConfigurationError(f"method spec {spec!r} has an empty item; separate parameters with single commas.")
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            shorthand = _SHORTHAND.get(name)
            if position != 0 or shorthand is None:
                raise ConfigurationError(
                    f"method spec {spec!r}: item {item!r} is not key=value; write e.g. "
                    f"'{name}:{(parameters(name) or ('key',))[0]}=...'."
                )
            key, value = shorthand, item
        if not key or not value:
            raise ConfigurationError(f"method spec {spec!r}: item {item!r} needs both a name and a value (key=value).")
        if key in params:
            raise ConfigurationError(f"method spec {spec!r} gives {key!r} twice; give each parameter once.")
        params[key] = value if key in ("composite", "rule") else _parse_value(value)
    accepted = parameters(name, params.get("composite"))
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ConfigurationError(
            f"method {name!r} does not take {', '.join(unknown)}; {_listing(accepted, 'its parameters are')}."
        )
    return name, params


# Importing the method modules registers them (listings follow _ORDER).
from . import (  # noqa: E402, F401
    deep_taylor,
    deeplift,
    gradient,
    guided,
    integrated_gradients,
    occlusion,
    smoothgrad,
)
