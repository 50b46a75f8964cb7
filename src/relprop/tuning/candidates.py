"""What the search tries: a :class:`Candidate` is one composite with its parameters.

A candidate is written exactly as ``relprop evaluate`` and ``relprop explain --method`` take it,
``"lrp:montavon,epsilon=0.25,gamma=0.5,split=0.5,low=0,high=1"``, so that the score the search
reports for it is the score ``relprop evaluate`` measures for that spec.

The default search space (:func:`default_space`) covers the composites relprop ships and their
parameters — ε, γ, α/β, the depth at which Montavon's recipe switches from γ to ε (``split``)
and the z^B bounds (the data's range, or each sample's own range). Transformer composites
(``attnlrp``, ``cp-lrp``) are searched for models the image composites cannot explain.

The reference is one more axis (reference-aware LRP, :mod:`relprop.reference`):
:attr:`Candidate.reference` is ``None`` (plain LRP) or one of :data:`REFERENCES` — ``zeros``,
``blur`` or ``dataset-mean`` (the data's reference input, e.g. the training set's mean) — and
is part of a candidate's spec (``...,reference=blur``) and of its JSON form.
:func:`default_space` takes the ``references`` to search.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import composites as _composites
from ..errors import ConfigurationError

__all__ = [
    "EPSILONS",
    "GAMMAS",
    "REFERENCES",
    "REFERENCE_NAMES",
    "SPLITS",
    "Candidate",
    "SearchSpace",
    "as_candidates",
    "as_references",
    "default_space",
    "format_value",
]

#: ε values searched (absolute, in the units of the pre-activations).
EPSILONS = (1e-6, 0.01, 0.1, 0.25, 1.0)
#: γ values searched.
GAMMAS = (0.05, 0.1, 0.25, 0.5, 1.0)
#: Depths (fraction of the convolutions) up to which Montavon's recipe uses γ, above it ε.
SPLITS = (0.25, 0.5, 0.75, 1.0)
#: ``(alpha, beta)`` pairs searched for LRP-αβ (α = β + 1).
ALPHA_BETAS = ((1.0, 0.0), (2.0, 1.0), (3.0, 2.0))

Value = float | int | str
#: References a candidate may explain relative to (``None``: plain LRP). ``dataset-mean`` is the data's
#: reference input (:attr:`relprop.evaluate.EvaluationData.reference`), as in ``relprop evaluate``.
REFERENCES = ("zeros", "blur", "dataset-mean")


#: What users call the references (``relprop tune --reference``, ``tune(references=...)``) → :data:`REFERENCES`.
REFERENCE_NAMES: dict[str, str | None] = {
    "none": None,
    "zeros": "zeros",
    "mean": "dataset-mean",
    "dataset-mean": "dataset-mean",
    "blur": "blur",
}


def as_references(values: Iterable[str | None], what: str = "references") -> tuple[str | None, ...]:
    """The references to search from user names: ``none`` (or ``None``: plain LRP), ``zeros``, ``mean``
    (the data's mean, ``dataset-mean``) or ``blur``; comma-separated lists are split, duplicates dropped."""
    chosen: list[str | None] = []
    for value in [values] if isinstance(values, str) else values:
        for name in [None] if value is None else [part.strip() for part in str(value).split(",")]:
            if name is not None and name not in REFERENCE_NAMES:
                raise ConfigurationError(
                    f"unknown reference {name!r} in {what}; choose from none, zeros, mean, blur (comma-separated)."
                )
            reference = None if name is None else REFERENCE_NAMES[name]
            if reference not in chosen:
                chosen.append(reference)
    if not chosen:
        raise ConfigurationError(f"{what} is empty; pass at least one of none, zeros, mean, blur.")
    return tuple(chosen)


def format_value(value: Value) -> str:
    """A parameter value as a method spec writes it (``0.25``, ``1e-06``, ``0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(f"candidate parameters must be numbers or names, got {value!r}.")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Candidate:
    """One setting the search can choose: a named composite, its parameters and (later) a reference.

    Attributes
    ----------
    composite
        A name from :func:`relprop.composites.names`.
    params
        ``(name, value)`` pairs of the composite's parameters, in spec order.
    reference
        The reference LRP explains relative to: ``None`` (plain LRP) or one of :data:`REFERENCES`.
    """

    composite: str
    params: tuple[tuple[str, Value], ...] = ()
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.composite not in _composites.names():
            raise ConfigurationError(
                f"unknown composite {self.composite!r} in a candidate; choose one of: {', '.join(_composites.names())}."
            )
        for _, value in self.params:
            format_value(value)
        if self.reference is not None and self.reference not in REFERENCES:
            raise ConfigurationError(
                f"candidate reference {self.reference!r} is unknown; choose one of {', '.join(REFERENCES)} (or none)."
            )

    @classmethod
    def make(cls, composite: str, params: Mapping[str, Value] | None = None, reference: str | None = None) -> Candidate:
        """A candidate from a composite name and a parameter mapping (``None`` values are dropped)."""
        items = tuple((k, v) for k, v in (params or {}).items() if v is not None)
        return cls(composite, items, reference)

    @classmethod
    def from_spec(cls, spec: str) -> Candidate:
        """Parse ``"lrp:NAME,key=value,..."`` (or just a composite name) into a candidate."""
        from ..methods import resolve

        text = spec.strip()
        head, colon, _ = text.partition(":")
        if not colon:
            text = f"lrp:{text}"  # a composite name alone
        name, params = resolve(text)
        composite = params.pop("composite", None)
        if name != "lrp" or head.strip() not in ("lrp", text.removeprefix("lrp:")) or composite is None:
            raise ConfigurationError(
                f"candidate {spec!r} is not an LRP composite; write it as 'lrp:NAME,key=value', e.g. "
                "'lrp:epsilon-gamma-box,gamma=0.5'."
            )
        reference = params.pop("reference", None)
        return cls.make(composite, params, None if reference is None else str(reference))

    @property
    def param_dict(self) -> dict[str, Value]:
        """The parameters as a dict."""
        return dict(self.params)

    @property
    def spec(self) -> str:
        """The method spec ``relprop evaluate --methods`` and ``relprop explain --method`` take."""
        items = [f"{k}={format_value(v)}" for k, v in self.params]
        if self.reference is not None:
            items.append(f"reference={self.reference}")
        return ",".join([f"lrp:{self.composite}", *items])

    def composite_params(self) -> dict[str, Any]:
        """Keyword arguments for :func:`relprop.composites.get` (the reference is not one: see :attr:`reference`)."""
        return dict(self.params)

    def build(self) -> _composites.Composite:
        """The :class:`~relprop.composites.Composite` of this candidate (its rules; the reference is separate)."""
        return _composites.get(self.composite, **self.composite_params())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return {"composite": self.composite, "params": dict(self.params), "reference": self.reference}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        """The candidate :meth:`to_json` wrote."""
        try:
            return cls.make(str(data["composite"]), dict(data.get("params") or {}), data.get("reference"))
        except (KeyError, TypeError, AttributeError):
            raise ConfigurationError(
                f"a tuned candidate must be an object with 'composite' and 'params', got {data!r}."
            ) from None

    def __str__(self) -> str:
        return self.spec


#: One axis of a grid: alternative partial parameter settings (``[{"gamma": 0.1}, {"gamma": 0.5}]``).
Axis = Sequence[Mapping[str, Value]]


@dataclass
class SearchSpace:
    """Composites to search, each with a default point and a grid of parameter settings.

    Attributes
    ----------
    families
        ``composite name -> list of axes``; the grid is the product of the axes.
    defaults
        ``composite name -> parameters`` of the point tried first for that composite.
    references
        References to search (``None``: plain LRP; see :data:`REFERENCES`).
    """

    families: dict[str, list[Axis]] = field(default_factory=dict)
    defaults: dict[str, dict[str, Value]] = field(default_factory=dict)
    references: tuple[str | None, ...] = (None,)

    def first_points(self) -> list[Candidate]:
        """One candidate per composite (its default point), in the order of :attr:`families`."""
        return [
            Candidate.make(name, self.defaults.get(name, {}), reference)
            for name in self.families
            for reference in self.references
        ]

    def grid(self, composite: str) -> list[Candidate]:
        """Every point of one composite's grid, in grid order."""
        points = []
        for combo in itertools.product(*self.families[composite]):
            params: dict[str, Value] = {}
            for part in combo:
                params.update(part)
            for reference in self.references:
                points.append(Candidate.make(composite, params, reference))
        return points

    def size(self) -> int:
        """The number of distinct candidates in the space."""
        return len({c for name in self.families for c in [*self.grid(name), *self.first_points()]})


def _axis(name: str, values: Iterable[Value]) -> list[dict[str, Value]]:
    return [{name: v} for v in values]


def default_space(
    bounds: tuple[float, float] | None = None,
    transformer: bool = False,
    references: Sequence[str | None] = (None,),
) -> SearchSpace:
    """The default search space.

    Parameters
    ----------
    bounds
        The data's range ``(low, high)``: the first z^B bounds searched (the second is each
        sample's own range). ``None``: only each sample's own range.
    transformer
        Search the transformer composites (``attnlrp``, ``cp-lrp``) instead of the image ones.
    references
        References to search for image composites (``None``: plain LRP; see :data:`REFERENCES`).
        Transformer composites are searched without a reference (products of two signals pass the
        gradient on differences, which does not conserve).
    """
    epsilon, gamma = _axis("epsilon", EPSILONS), _axis("gamma", GAMMAS)
    if transformer:
        layer_gamma: list[dict[str, Value]] = [{}, *_axis("gamma", (0.05, 0.25))]
        return SearchSpace(
            families={"attnlrp": [epsilon, layer_gamma], "cp-lrp": [epsilon, layer_gamma]},
            defaults={"attnlrp": {}, "cp-lrp": {}},
        )
    box: list[dict[str, Value]] = [{}] if bounds is None else [{"low": bounds[0], "high": bounds[1]}, {}]
    alpha_beta: list[dict[str, Value]] = [{"alpha": a, "beta": b} for a, b in ALPHA_BETAS]
    families: dict[str, list[Axis]] = {
        "epsilon-gamma-box": [epsilon, gamma, box],
        "montavon": [epsilon, gamma, _axis("split", SPLITS), box],
        "epsilon-plus-flat": [epsilon],
        "gamma": [gamma],
        "epsilon": [epsilon],
        "alpha-beta": [alpha_beta],
        "epsilon-alpha2-beta1": [epsilon],
        "epsilon-alpha2-beta1-flat": [epsilon],
        "lrp-0": [],
    }
    defaults: dict[str, dict[str, Value]] = {name: {} for name in families}
    for name in ("epsilon-gamma-box", "montavon"):
        defaults[name] = dict(box[0])
    defaults["epsilon"] = {"epsilon": 0.25}
    return SearchSpace(families, defaults, tuple(references))


def as_candidates(candidates: Iterable[Candidate | str]) -> list[Candidate]:
    """Candidates from candidates, composite names or ``lrp:`` specs (duplicates dropped, order kept)."""
    result: list[Candidate] = []
    for item in candidates:
        candidate = item if isinstance(item, Candidate) else Candidate.from_spec(str(item))
        if candidate not in result:
            result.append(candidate)
    if not result:
        raise ConfigurationError("candidates is empty; pass at least one composite, e.g. ['epsilon-gamma-box'].")
    return result
