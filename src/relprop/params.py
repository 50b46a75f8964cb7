"""The declared ranges of relprop's parameters, checked once where rules, composites and methods get them.

Every numeric parameter has one entry in :data:`RANGES`, keyed by its name (``epsilon``,
``gamma``, ``stabilizer``, ``sigma`` ...): what values it takes. Rules, composites and methods
do not check their parameters themselves; the places that receive them do it from the
callable's signature and this table:

* every :class:`~relprop.rules.Rule` subclass's ``__init__`` (wrapped by ``Rule.__init_subclass__``
  with :func:`checked`),
* :func:`relprop.composites.get` (the named composites' factories) and :class:`~relprop.composites.Composite`,
* the method registry (:func:`relprop.methods.register`),
* :class:`~relprop.Explainer` for its own options.

An owner may narrow or widen an entry (``ranges=``): ``stabilizer`` must be ``> 0`` where it is a
denominator's only guard (γ, αβ, z^B, proportional max pooling), but ``0`` is fine for LRP-ε-like
rules, which are the plain gradient at 0. :data:`RELATIONS` holds the checks between parameters
(``low <= high``). A value outside its range raises :class:`~relprop.errors.ConfigurationError`
with one sentence naming the owner, the parameter, the value and the range.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from .errors import ConfigurationError

__all__ = ["RANGES", "RELATIONS", "Choice", "Flag", "Number", "Spec", "Values", "check", "checked"]


def _plain(value: Any) -> str:
    """``value`` as a message shows it: strings are said to be strings, tensors by shape."""
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (a Python or NumPy scalar, a one-element tensor), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value.detach().cpu().reshape(()))
    return None


def _first_bad(t: Tensor) -> str | None:
    """Where a tensor holds NaN or ±Inf (``"nan at (1, 2) (and 3 more)"``), or ``None``."""
    from .finite import first_non_finite

    found = first_non_finite(t.detach())
    if found is None:
        return None
    position, value, count = found
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{value} at {position}{more}"


class Spec:
    """What one parameter accepts; :meth:`problem` says what is wrong with a value (``None``: fine)."""

    def describe(self) -> str:
        """The accepted values, as a message says it (``"a finite number >= 0"``)."""
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (``None`` if it is accepted)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Spec):
    """A finite real number in a range; ``integer`` for whole numbers, ``optional`` to accept ``None``."""

    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False
    integer: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        if self.minimum is not None and self.maximum is not None:
            what += f" in [{self.minimum:g}, {self.maximum:g}]"
        elif self.minimum is not None:
            what += f" {'>' if self.above_minimum else '>='} {self.minimum:g}"
        return f"None or {what}" if self.optional else what

    def problem(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        number = _number(value)
        if number is None:
            return _plain(value)
        if self.integer and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
            return _plain(value)
        if not math.isfinite(number):
            return repr(number)
        too_low = self.minimum is not None and (number <= self.minimum if self.above_minimum else number < self.minimum)
        too_high = self.maximum is not None and number > self.maximum
        return repr(value) if too_low or too_high else None


@dataclass(frozen=True)
class Values(Spec):
    """A value given as a number or a tensor (a bound, a baseline): every number in it must be finite.

    ``None`` and strings (names such as ``"zeros"`` or ``"blurred"``, which their owner checks)
    pass; anything else must be a real number or a real tensor without NaN or ±Inf.
    """

    def describe(self) -> str:
        return "a finite number or a tensor (or list) of finite values"

    def problem(self, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return None
        if isinstance(value, (list, tuple)):
            try:
                value = torch.as_tensor(value, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError, OverflowError):
                return _plain(value)
            bad = _first_bad(value)
            return None if bad is None else f"a sequence with {bad}"
        if isinstance(value, Tensor):
            if value.is_complex() or value.dtype == torch.bool:
                return f"a {value.dtype} tensor"
            if not value.is_floating_point():
                return None
            bad = _first_bad(value)
            return None if bad is None else f"a tensor with {bad}"
        number = _number(value)
        if number is None:
            return _plain(value)
        return None if math.isfinite(number) else repr(number)


@dataclass(frozen=True)
class Flag(Spec):
    """``True`` or ``False``."""

    def describe(self) -> str:
        return "True or False"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) or type(value).__name__ == "bool_" else _plain(value)


@dataclass(frozen=True)
class Choice(Spec):
    """One of a few strings."""

    options: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) and value in self.options else _plain(value)


NON_NEGATIVE = Number(minimum=0.0)
POSITIVE = Number(minimum=0.0, above_minimum=True)
COUNT = Number(minimum=1, integer=True)

#: Every parameter relprop's rules, composites, methods and the explainer take, by name.
RANGES: dict[str, Spec] = {
    # LRP rules and composites
    "epsilon": NON_NEGATIVE,
    "gamma": NON_NEGATIVE,
    "alpha": NON_NEGATIVE,
    "beta": NON_NEGATIVE,
    "stabilizer": POSITIVE,
    "low": Values(),
    "high": Values(),
    "split": Number(minimum=0.0, maximum=1.0),
    "bias": Flag(),
    # methods
    "sigma": NON_NEGATIVE,
    "blur_sigma": POSITIVE,
    "n": COUNT,
    "steps": COUNT,
    "batch_size": COUNT,
    "seed": Number(integer=True, optional=True),
    "eps": POSITIVE,
    "baseline": Values(),
    "reference": Values(),
    "value": Values(),
    "absolute": Flag(),
    "times_input": Flag(),
    # the explainer's options
    "canonize": Flag(),
    "ledger": Flag(),
    "compile": Flag(),
    "nonfinite": Choice(("raise", "report")),
}


def _bounds_in_order(owner: str, values: Mapping[str, Any]) -> None:
    low, high = values["low"], values["high"]
    if isinstance(low, str) or isinstance(high, str):
        return
    lo = torch.as_tensor(low, dtype=torch.float64).detach().cpu()
    hi = torch.as_tensor(high, dtype=torch.float64).detach().cpu()
    try:
        above = lo > hi
    except RuntimeError:
        return  # shapes that do not broadcast: the rule names them when it meets an input
    if bool(above.any()):
        where = "" if above.dim() == 0 else f" at {tuple(int(i) for i in above.nonzero()[0])}"
        first_low = float(lo.expand_as(above)[above][0])
        first_high = float(hi.expand_as(above)[above][0])
        raise ConfigurationError(
            f"{owner}: low must not exceed high, got low={first_low:g} > high={first_high:g}{where}; "
            "give the lower bound as low and the upper one as high."
        )


def _alpha_is_beta_plus_one(owner: str, values: Mapping[str, Any]) -> None:
    alpha, beta = values["alpha"], values["beta"]
    if abs((float(alpha) - float(beta)) - 1.0) > 1e-12:
        raise ConfigurationError(
            f"{owner}: the alpha-beta rule needs alpha = beta + 1 to conserve relevance, got alpha={alpha!r}, "
            f"beta={beta!r}; set alpha={float(beta) + 1!r}."
        )


#: Checks between parameters: ``(names, check)``, run when all the names are given and not ``None``.
RELATIONS: tuple[tuple[tuple[str, ...], Callable[[str, Mapping[str, Any]], None]], ...] = (
    (("low", "high"), _bounds_in_order),
    (("alpha", "beta"), _alpha_is_beta_plus_one),
)


def check(owner: str, params: Mapping[str, Any], ranges: Mapping[str, Spec] | None = None) -> None:
    """Refuse any parameter in ``params`` outside its declared range (names not in the table pass).

    Parameters
    ----------
    owner
        How messages name what takes the parameters (``"composite 'gamma'"``, ``"GammaRule"``).
    params
        The given parameters by name.
    ranges
        The owner's own entries, which replace the table's for those names.

    Raises
    ------
    ConfigurationError
        ``"{owner}: {name} must be {range}, got {value}; ..."`` for the first bad parameter.
    """
    table = RANGES if not ranges else {**RANGES, **ranges}
    for name, value in params.items():
        spec = table.get(name)
        if spec is None:
            continue
        problem = spec.problem(value)
        if problem is not None:
            raise ConfigurationError(f"{owner}: {name} must be {spec.describe()}, got {problem}{_hint(value)}.")
    for names, relation in RELATIONS:
        if all(params.get(n) is not None for n in names):
            relation(owner, params)


def _hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ""
        return f"; pass the number {number!r}, not a string" if math.isfinite(number) else ""
    return ""


F = TypeVar("F", bound=Callable[..., Any])


def checked(function: F, owner: str | Callable[[tuple[Any, ...]], str], ranges: Mapping[str, Spec] | None = None) -> F:
    """Wrap ``function`` so that the arguments it is given are checked against the table first.

    Only arguments the caller gives are checked (defaults are trusted). ``owner`` is the name
    used in messages, or a callable that makes it from the positional arguments (e.g. from
    ``self``'s type for a rule's ``__init__``).
    """
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return function(*args, **kwargs)  # Python's own message for a wrong call
        given: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                given.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL and name != "self":
                given[name] = value
        check(owner if isinstance(owner, str) else owner(args), given, ranges)
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
