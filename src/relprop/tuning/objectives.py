"""What the search maximises: faithfulness objectives, one score per input.

================  ===============================================================  ==========
objective         score per input                                                  better
================  ===============================================================  ==========
pixel-flipping    ABPC (area between the LeRF and MoRF pixel-flipping curves) with  higher
                  a replacement: ``zeros``, ``dataset-mean``, ``blur``,
                  ``inpaint``, ``uniform``, ``mean`` (the sample's own) or a
                  callable; ``patch_size`` > 1 is region flipping
localisation      relevance mass accuracy (or ``measure=rank``) inside given masks  higher
token-deletion    area under the similarity curve while the most relevant tokens   lower
                  of two sentences are deleted (sentence encoders)
================  ===============================================================  ==========

Objectives are named by a spec like a method's, ``"pixel-flipping:replacement=blur,patch_size=2"``,
and combine with weights: ``{"pixel-flipping:replacement=blur": 1.0, "localisation": 0.5}`` or
``"localisation,weight=0.5"`` in a list. A combination maximises
:math:`\\sum_k w_k\\, u_k` per input, with :math:`u_k` the score, negated where lower is better.

``pixel-flipping`` and ``localisation`` are computed by :func:`relprop.evaluate.evaluate_methods`
with the settings :meth:`Objective.evaluate_options` prints, so a score equals what
``relprop evaluate`` reports for the same method spec and data (the held-out promise of
:func:`relprop.tune`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError

__all__ = [
    "Context",
    "Localisation",
    "Objective",
    "PixelFlipping",
    "TokenDeletion",
    "Weighted",
    "as_objective",
    "objective_names",
    "register_objective",
]


@dataclass(frozen=True)
class Context:
    """Settings every objective shares (they are those of ``relprop evaluate``).

    Attributes
    ----------
    target
        ``"predicted"``, ``"label"`` (the data's labels) or a class index.
    seed
        Seed of the random parts (``uniform`` replacement).
    bounds
        The data range ``(low, high)`` (``uniform`` noise is drawn in it), or ``None``.
    batch_size
        Inputs per explanation call (random replacements depend on it: keep it fixed).
    """

    target: str | int = "predicted"
    seed: int = 0
    bounds: tuple[float, float] | None = None
    batch_size: int = 128

    def evaluate_options(self) -> list[str]:
        """The ``relprop evaluate`` options of these settings."""
        options = ["--seed", str(self.seed), "--batch-size", str(self.batch_size)]
        if self.bounds is not None:
            options += ["--bounds", _number(self.bounds[0]), _number(self.bounds[1])]
        if self.target != "predicted":
            options += ["--target", str(self.target)]
        return options


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Objective(ABC):
    """A faithfulness measure the search maximises (or minimises, see :attr:`higher_is_better`)."""

    #: Registry name.
    name: ClassVar[str]
    #: Whether a larger score is better.
    higher_is_better: bool = True

    @abstractmethod
    def check(self, model: nn.Module, data: Any) -> None:
        """Raise a :class:`~relprop.errors.ConfigurationError` if the objective cannot be computed."""

    @abstractmethod
    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        """The score of each input of ``data`` for the method spec ``spec``: ``(N,)`` float64, NaN if undefined."""

    @property
    @abstractmethod
    def title(self) -> str:
        """The score's name (the column ``relprop evaluate`` prints, where it has one)."""

    @property
    @abstractmethod
    def spec(self) -> str:
        """The spec that rebuilds this objective (:func:`as_objective`)."""

    def evaluate_options(self, context: Context) -> list[str] | None:
        """``relprop evaluate`` options that print this score, or ``None`` if it cannot."""
        return None

    def utility(self, scores: Tensor) -> Tensor:
        """The scores oriented so that larger is better."""
        return scores if self.higher_is_better else -scores

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


_REGISTRY: dict[str, type[Objective]] = {}
_ALIASES = {"abpc": "pixel-flipping", "region-flipping": "pixel-flipping", "localization": "localisation"}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Register an :class:`Objective` subclass under its :attr:`~Objective.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    """Names of the registered objectives."""
    return list(_REGISTRY)


def _evaluate_scores(
    model: nn.Module, data: Any, spec: str, family: str, column: str, context: Context, **settings: Any
) -> Tensor:
    from ..evaluate import EvaluationSettings, evaluate_methods

    options = EvaluationSettings(
        target=context.target, bounds=context.bounds, batch_size=context.batch_size, seed=context.seed, **settings
    )
    result = evaluate_methods(model, data, [spec], [family], options)
    return result.values[spec][column]


def _require_tensor_data(objective: Objective, data: Any) -> Any:
    from ..evaluate import EvaluationData

    if not isinstance(data, EvaluationData):
        raise ConfigurationError(
            f"objective {objective.spec!r} measures tensor inputs (images or features), got {type(data).__name__}; "
            "use token-deletion for sentence pairs."
        )
    return data


@register_objective
class PixelFlipping(Objective):
    """Selectivity: ABPC of pixel (or region) flipping with a chosen replacement (↑).

    Parameters
    ----------
    replacement
        ``"zeros"``, ``"dataset-mean"`` (the data's reference input, else the mean of all
        inputs given to the search), ``"blur"`` (Gaussian, σ = 1 pixel), ``"inpaint"``,
        ``"uniform"`` (noise in the data range), ``"mean"`` (each sample's channel mean), a
        number, or a callable ``fn(inputs, removed) -> perturbed``.
    patch_size, regions_per_step, score
        As ``relprop evaluate``: square regions of ``patch_size`` pixels, removed
        ``regions_per_step`` at a time; the tracked score (``"logit"`` or ``"probability"``).
    """

    name = "pixel-flipping"

    def __init__(
        self,
        replacement: str | float | Callable[[Tensor, Tensor], Tensor] = "blur",
        patch_size: int = 1,
        regions_per_step: int = 1,
        score: str = "logit",
    ) -> None:
        from ..evaluate import REPLACEMENT_NAMES

        if isinstance(replacement, str) and replacement not in REPLACEMENT_NAMES:
            raise ConfigurationError(
                f"objective pixel-flipping: unknown replacement {replacement!r}; choose one of "
                f"{', '.join(REPLACEMENT_NAMES)}, a number or a function."
            )
        for key, value in (("patch_size", patch_size), ("regions_per_step", regions_per_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"objective pixel-flipping: {key} must be a positive integer, got {value!r}.")
        if score not in ("logit", "probability"):
            raise ConfigurationError(
                f"objective pixel-flipping: score must be 'logit' or 'probability', got {score!r}."
            )
        self.replacement = replacement
        self.patch_size = patch_size
        self.regions_per_step = regions_per_step
        self.score = score

    @property
    def _replacement_name(self) -> str:
        r = self.replacement
        return r if isinstance(r, str) else _number(r) if isinstance(r, (int, float)) else getattr(r, "__name__", "fn")

    @property
    def title(self) -> str:
        return f"ABPC ({self._replacement_name})"

    @property
    def spec(self) -> str:
        parts = [f"replacement={self._replacement_name}"]
        if self.patch_size != 1:
            parts.append(f"patch_size={self.patch_size}")
        if self.regions_per_step != 1:
            parts.append(f"regions_per_step={self.regions_per_step}")
        if self.score != "logit":
            parts.append(f"score={self.score}")
        return f"{self.name}:{','.join(parts)}"

    def check(self, model: nn.Module, data: Any) -> None:
        images = _require_tensor_data(self, data).images
        needs_images = self.replacement in ("blur", "inpaint") or self.patch_size > 1
        if needs_images and images.dim() != 4:
            raise ConfigurationError(
                f"objective {self.spec!r} needs images (N, C, H, W), got inputs of shape {tuple(images.shape)}; use "
                "replacement zeros, dataset-mean or uniform with patch_size=1."
            )

    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        return _evaluate_scores(
            model,
            data,
            spec,
            "selectivity",
            f"ABPC ({self.replacement})",
            context,
            replacements=(self.replacement,),
            patch_size=self.patch_size,
            regions_per_step=self.regions_per_step,
            score=self.score,
        )

    def evaluate_options(self, context: Context) -> list[str] | None:
        if not isinstance(self.replacement, str):
            return None
        options = ["--metrics", "selectivity", "--replacement", self.replacement]
        if self.patch_size != 1:
            options += ["--patch-size", str(self.patch_size)]
        if self.regions_per_step != 1:
            options += ["--regions-per-step", str(self.regions_per_step)]
        if self.score != "logit":
            options += ["--score", self.score]
        return options + context.evaluate_options()


@register_objective
class Localisation(Objective):
    """Localisation: the share of the relevance inside ground-truth masks (↑).

    Parameters
    ----------
    measure
        ``"mass"`` (relevance mass accuracy) or ``"rank"`` (relevance rank accuracy).
    mode
        For ``"mass"``: ``"positive"`` (Arras et al.; the only one ``relprop evaluate`` prints),
        ``"absolute"`` or ``"signed"`` relevance.
    """

    name = "localisation"

    def __init__(self, measure: str = "mass", mode: str = "positive") -> None:
        from ..metrics.localisation import MASS_MODES

        if measure not in ("mass", "rank"):
            raise ConfigurationError(f"objective localisation: measure must be 'mass' or 'rank', got {measure!r}.")
        if mode not in MASS_MODES:
            raise ConfigurationError(
                f"objective localisation: mode must be one of {', '.join(MASS_MODES)}, got {mode!r}."
            )
        self.measure = measure
        self.mode = mode

    @property
    def title(self) -> str:
        return f"{self.measure} accuracy"

    @property
    def spec(self) -> str:
        parts = ([] if self.measure == "mass" else [f"measure={self.measure}"]) + (
            [] if self.mode == "positive" else [f"mode={self.mode}"]
        )
        return self.name + (f":{','.join(parts)}" if parts else "")

    def check(self, model: nn.Module, data: Any) -> None:
        from .. import metrics as M

        data = _require_tensor_data(self, data)
        if data.masks is None:
            raise ConfigurationError(
                "objective 'localisation' needs ground-truth masks, and the data has none; pass masks= (one per input) "
                "or choose another objective."
            )
        try:
            M.relevance_rank_accuracy(torch.zeros_like(data.images[:1]), data.masks[:1])
        except ConfigurationError:
            raise ConfigurationError(
                f"objective 'localisation': masks of shape {tuple(data.masks.shape)} do not fit inputs of shape "
                f"{tuple(data.images.shape)}; pass one mask per input, shaped like it or (N, H, W) / (N, 1, H, W)."
            ) from None

    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        return _evaluate_scores(model, data, spec, "localisation", self.title, context, mass_mode=self.mode)

    def evaluate_options(self, context: Context) -> list[str] | None:
        if self.mode != "positive":
            return None
        return ["--metrics", "localisation", *context.evaluate_options()]


@register_objective
class TokenDeletion(Objective):
    """Token deletion for a sentence encoder's cosine similarity (↓ area under the curve).

    The tokens of both sentences (special tokens excluded) are deleted from the input most
    relevant first, and the similarity of the two mean-pooled embeddings is recomputed after
    each deletion until ``fraction`` of them are gone; the score is the normalised area under
    that curve (an average similarity). It is the measure of ``benchmarks/text_faithfulness.py``.

    Parameters
    ----------
    fraction
        Share of the tokens deleted (``0.5``: the benchmark's first half).
    """

    name = "token-deletion"
    higher_is_better = False

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0 < fraction <= 1:
            raise ConfigurationError(f"objective token-deletion: fraction must be in (0, 1], got {fraction!r}.")
        self.fraction = float(fraction)

    @property
    def title(self) -> str:
        return "deletion AUC"

    @property
    def spec(self) -> str:
        return self.name if self.fraction == 0.5 else f"{self.name}:fraction={_number(self.fraction)}"

    def check(self, model: nn.Module, data: Any) -> None:
        from .data import SentencePairs

        if not isinstance(data, SentencePairs):
            raise ConfigurationError(
                f"objective 'token-deletion' needs sentence pairs (relprop.tuning.SentencePairs), got "
                f"{type(data).__name__}; use pixel-flipping or localisation for tensor inputs."
            )
        if not hasattr(model, "get_input_embeddings"):
            raise ConfigurationError(
                f"objective 'token-deletion' needs a Hugging Face sentence encoder, got {type(model).__name__}."
            )

    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        from .text import token_deletion_scores

        return token_deletion_scores(model, data, spec, self.fraction, context.seed)


@dataclass(frozen=True)
class _Term:
    objective: Objective
    weight: float


class Weighted(Objective):
    """A weighted sum of objectives per input, :math:`\\sum_k w_k u_k` (``u`` negated where lower is better)."""

    name = "weighted"

    def __init__(self, terms: Sequence[tuple[Objective, float]]) -> None:
        if not terms:
            raise ConfigurationError("a weighted objective needs at least one term.")
        for objective, weight in terms:
            if isinstance(objective, Weighted):
                raise ConfigurationError("weighted objectives do not nest; list every term once.")
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ConfigurationError(
                    f"objective {objective.spec!r}: weight must be a positive number, got {weight!r}."
                )
        self.terms = [_Term(o, float(w)) for o, w in terms]

    @property
    def title(self) -> str:
        return " + ".join(f"{_number(t.weight)} × {t.objective.title} {t.objective.arrow}" for t in self.terms)

    @property
    def spec(self) -> str:
        return "; ".join(f"{t.objective.spec},weight={_number(t.weight)}" for t in self.terms)

    def check(self, model: nn.Module, data: Any) -> None:
        for term in self.terms:
            term.objective.check(model, data)

    def parts(self, model: nn.Module, data: Any, spec: str, context: Context) -> list[Tensor]:
        """Each term's own scores."""
        return [t.objective.scores(model, data, spec, context) for t in self.terms]

    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        parts = self.parts(model, data, spec, context)
        return sum(  # type: ignore[return-value]
            (t.weight * t.objective.utility(p) for t, p in zip(self.terms, parts, strict=True)),
            torch.zeros_like(parts[0]),
        )


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse(spec: str) -> tuple[Objective, float]:
    """``"NAME[:key=value,...]"`` (``weight=`` included; ``NAME,weight=2`` too) → ``(objective, weight)``."""
    text = spec.strip()
    cut = min((i for i in (text.find(":"), text.find(",")) if i >= 0), default=len(text))
    name, rest = text[:cut], text[cut + 1 :]  # "localisation,weight=2" as well as "localisation:weight=2"
    name = _ALIASES.get(name.strip(), name.strip())
    if name not in _REGISTRY:
        raise ConfigurationError(f"unknown objective {name!r}; choose one of: {', '.join(_REGISTRY)}.")
    params: dict[str, Any] = {}
    for item in (i.strip() for i in rest.split(",")) if rest.strip() else ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigurationError(f"objective {spec!r}: item {item!r} is not key=value.")
        params[key.strip()] = _parse_value(value.strip())
    weight = params.pop("weight", 1.0)
    try:
        return _REGISTRY[name](**params), weight
    except TypeError:
        import inspect

        accepted = [p for p in inspect.signature(_REGISTRY[name]).parameters if p != "self"]
        raise ConfigurationError(
            f"objective {spec!r}: {name} takes {', '.join([*accepted, 'weight'])}; got {', '.join(params)}."
        ) from None


def as_objective(objective: Any) -> Objective:
    """An :class:`Objective` from an objective, a spec, a list of them (with ``weight=``) or ``{spec: weight}``."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        parsed, weight = _parse(objective)
        return parsed if weight == 1.0 else Weighted([(parsed, weight)])
    terms: list[tuple[Objective, float]] = []
    if isinstance(objective, Mapping):
        for key, weight in objective.items():
            parsed, own = _parse(key) if isinstance(key, str) else (as_objective(key), 1.0)
            terms.append((parsed, float(weight) * own))
    elif isinstance(objective, Sequence):
        for item in objective:
            if isinstance(item, tuple) and len(item) == 2:
                terms.append((as_objective(item[0]), float(item[1])))
            elif isinstance(item, str):
                terms.append(_parse(item))
            else:
                terms.append((as_objective(item), 1.0))
    else:
        raise ConfigurationError(
            f"objective must be a name such as 'pixel-flipping:replacement=blur', an Objective, a list or a "
            f"{{spec: weight}} mapping, got {type(objective).__name__}."
        )
    if len(terms) == 1 and terms[0][1] == 1.0:
        return terms[0][0]
    return Weighted(terms)
