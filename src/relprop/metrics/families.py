"""The metric families ``relprop evaluate`` reports, in one registry (as methods have one).

A *family* turns one explained batch into the numbers of its report columns: it declares its
columns (title, and whether higher is better) and a ``measure(batch) -> Measurement`` function
that calls the metric functions of :mod:`relprop.metrics`. :func:`relprop.evaluate.evaluate_methods`
asks the registry for the families the user chose and knows nothing about any one of them.

Adding a metric touches two files: the metric function in its module of :mod:`relprop.metrics`,
and a family registered here (or in your own code) with :func:`register`::

    @register("sparsity", "share of features with |R| below 1 % of the largest", [("sparse share", True)])
    def _sparsity(batch: MetricBatch) -> Measurement:
        r = batch.relevance.flatten(1).abs()
        return Measurement({"sparse share": (r < 0.01 * r.amax(1, keepdim=True)).double().mean(1)})

Families are listed (and reported) in registration order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..explanation import Explanation
from .complexity import entropy, gini
from .conservation import conservation_error, ledger_shares
from .continuity import continuity
from .localisation import relevance_mass_accuracy, relevance_rank_accuracy
from .positivity import negative_share
from .randomisation import RandomisationResult, cascading_randomisation
from .selectivity import PerturbationCurve, selectivity

__all__ = [
    "EvaluationSettings",
    "Measurement",
    "MetricBatch",
    "MetricColumn",
    "MetricFamily",
    "describe",
    "get",
    "names",
    "register",
]


@dataclass(frozen=True)
class MetricColumn:
    """One reported number: its family, column title and whether higher is better."""

    family: str
    title: str
    higher_is_better: bool | None

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or nothing (informational)."""
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    @property
    def better(self) -> str:
        return {True: "higher", False: "lower", None: "-"}[self.higher_is_better]


#: Replacement name meaning "the data's reference input" (:attr:`MetricBatch.reference`: e.g. the training
#: set's per-feature mean, else the mean of the evaluated inputs).
DATASET_MEAN = "dataset-mean"


@dataclass
class EvaluationSettings:
    """Options of the metrics (see :mod:`relprop.metrics` for their meaning).

    Attributes
    ----------
    target
        ``"predicted"`` (explain the model's decision), ``"label"`` or a class index.
    replacements
        Replacements for pixel flipping; each gives its own AOPC/ABPC columns and curves.
    patch_size, regions_per_step, score
        Pixel-flipping options (``score``: ``"logit"`` or ``"probability"``).
    noise_samples, sigma, bounds
        Continuity: perturbations per input, their standard deviation, and the data range
        perturbed inputs are clamped to (``None``: no clamping).
    mass_mode
        Relevance mass accuracy on ``"positive"``, ``"absolute"`` or ``"signed"`` relevance.
    batch_size
        Inputs per explanation call.
    seed
        Seeds the noise (continuity, uniform replacement, the random baseline) and the randomisation.
    """

    target: str | int = "predicted"
    replacements: tuple[str, ...] = ("zeros",)
    patch_size: int = 1
    regions_per_step: int = 1
    score: str = "logit"
    noise_samples: int = 10
    sigma: float = 0.05
    bounds: tuple[float, float] | None = None
    mass_mode: str = "positive"
    batch_size: int = 128
    seed: int = 0


@dataclass
class MetricBatch:
    """One batch explained by one method: everything a family may measure.

    Attributes
    ----------
    model
        The classifier (families that perturb it work on a copy).
    inputs, target
        ``(N, ...)`` inputs and ``(N,)`` explained classes.
    masks
        Ground-truth regions of these inputs, or ``None``.
    explanation
        The method's explanation of ``inputs``.
    explain_fn
        ``explain_fn(model, inputs, target) -> relevance`` with the same method (for the
        families that explain again: continuity, randomisation).
    settings
        The metric options.
    generator
        The method's own noise generator (the same seed for every method).
    reference
        The data's reference input, used by the ``dataset-mean`` replacement (``None``: that name is
        passed on to :func:`~relprop.metrics.selectivity`, which refuses it).
    """

    model: nn.Module
    inputs: Tensor
    target: Tensor
    masks: Tensor | None
    explanation: Explanation
    explain_fn: Callable[[nn.Module, Tensor, Tensor], Tensor]
    settings: EvaluationSettings
    generator: torch.Generator
    reference: Tensor | None = None

    @property
    def relevance(self) -> Tensor:
        return self.explanation.relevance.detach()


@dataclass
class Measurement:
    """What a family measured on one batch.

    Attributes
    ----------
    values
        Per-input values ``(N,)`` by column title.
    curves
        Perturbation curves by ``(replacement, order)`` (averaged over the inputs in the report).
    randomisation
        Similarities per randomisation stage (averaged over the inputs in the report).
    """

    values: dict[str, Tensor]
    curves: dict[tuple[str, str], PerturbationCurve] = field(default_factory=dict)
    randomisation: RandomisationResult | None = None


ColumnSpec = Callable[[EvaluationSettings], Sequence[tuple[str, bool | None]]] | Sequence[tuple[str, bool | None]]
Measure = Callable[[MetricBatch], Measurement]


@dataclass(frozen=True)
class MetricFamily:
    """A registered family: its name, what it measures, its columns and how to measure them."""

    name: str
    description: str
    column_spec: ColumnSpec
    measure: Measure
    needs_masks: bool = False

    def columns(self, settings: EvaluationSettings) -> list[MetricColumn]:
        """The columns this family reports under ``settings``."""
        spec = self.column_spec(settings) if callable(self.column_spec) else self.column_spec
        return [MetricColumn(self.name, title, better) for title, better in spec]


_REGISTRY: dict[str, MetricFamily] = {}


def register(
    name: str, description: str, columns: ColumnSpec, needs_masks: bool = False
) -> Callable[[Measure], Measure]:
    """Register ``measure`` as the metric family ``name``.

    Parameters
    ----------
    name
        The name users give to ``--metrics``.
    description
        One line for listings.
    columns
        ``(title, higher_is_better)`` pairs (``None``: informational), or a function of the
        :class:`EvaluationSettings` returning them.
    needs_masks
        The family needs ground-truth masks; it is skipped by default on data without them.
    """

    def decorator(measure: Measure) -> Measure:
        _REGISTRY[name] = MetricFamily(name, description, columns, measure, needs_masks)
        return measure

    return decorator


def names() -> list[str]:
    """The registered families, in report order."""
    return list(_REGISTRY)


def describe() -> list[tuple[str, str]]:
    """``(name, description)`` of every family."""
    return [(f.name, f.description) for f in _REGISTRY.values()]


def get(name: str) -> MetricFamily:
    """The family registered as ``name``; :class:`~relprop.errors.ConfigurationError` names the valid ones."""
    if name not in _REGISTRY:
        raise ConfigurationError(f"unknown metric {name!r}; choose from {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------------------------
# The built-in families (report order)


@register(
    "conservation",
    "relevance at the input vs. the explained score; share absorbed by biases",
    [("conservation error", False), ("bias share", None)],
)
def _conservation(batch: MetricBatch) -> Measurement:
    explanation = batch.explanation
    bias = ledger_shares(explanation.ledger)["bias"]
    # Without per-layer entries (methods other than LRP) the ledger books no bias share.
    return Measurement(
        {
            "conservation error": conservation_error(batch.relevance, explanation.score),
            "bias share": bias if explanation.ledger.entries else torch.full_like(bias, math.nan),
        }
    )


@register("positivity", "share of the relevance mass that is negative", [("negative share", False)])
def _positivity(batch: MetricBatch) -> Measurement:
    return Measurement({"negative share": negative_share(batch.relevance)})


@register(
    "continuity",
    "explanations of slightly perturbed inputs: local Lipschitz estimate and correlation",
    [("local Lipschitz", False), ("correlation", True)],
)
def _continuity(batch: MetricBatch) -> Measurement:
    settings = batch.settings
    c = continuity(
        batch.model,
        batch.explain_fn,
        batch.inputs,
        batch.target,
        n_samples=settings.noise_samples,
        sigma=settings.sigma,
        bounds=settings.bounds,
        relevance=batch.relevance,
        generator=batch.generator,
    )
    return Measurement({"local Lipschitz": c.lipschitz, "correlation": c.correlation})


def _selectivity_columns(settings: EvaluationSettings) -> list[tuple[str, bool | None]]:
    columns: list[tuple[str, bool | None]] = []
    for r in settings.replacements:
        columns += [(f"AOPC MoRF ({r})", True), (f"AOPC LeRF ({r})", False), (f"ABPC ({r})", True)]
    return columns


@register(
    "selectivity",
    "pixel flipping: score while the most (MoRF) or least (LeRF) relevant regions are removed",
    _selectivity_columns,
)
def _selectivity(batch: MetricBatch) -> Measurement:
    settings = batch.settings
    low, high = (None, None) if settings.bounds is None else settings.bounds
    measured = Measurement({})
    for r in settings.replacements:
        s = selectivity(
            batch.model,
            batch.inputs,
            batch.relevance,
            batch.target,
            patch_size=settings.patch_size,
            regions_per_step=settings.regions_per_step,
            replacement=batch.reference if r == DATASET_MEAN and batch.reference is not None else r,
            score=settings.score,
            low=low,
            high=high,
            generator=batch.generator,
        )
        measured.values.update(
            {f"AOPC MoRF ({r})": s.aopc_morf, f"AOPC LeRF ({r})": s.aopc_lerf, f"ABPC ({r})": s.abpc}
        )
        measured.curves.update({(r, "morf"): s.morf, (r, "lerf"): s.lerf})
    return measured


@register(
    "localisation",
    "relevance inside the ground-truth region (mass and rank accuracy)",
    [("mass accuracy", True), ("rank accuracy", True)],
    needs_masks=True,
)
def _localisation(batch: MetricBatch) -> Measurement:
    assert batch.masks is not None  # evaluate_methods checks needs_masks first
    return Measurement(
        {
            "mass accuracy": relevance_mass_accuracy(batch.relevance, batch.masks, batch.settings.mass_mode),
            "rank accuracy": relevance_rank_accuracy(batch.relevance, batch.masks),
        }
    )


@register(
    "randomisation",
    "similarity to the explanation of a model with randomised layers (cascading, top down)",
    [("Spearman random model", False), ("SSIM random model", False)],
)
def _randomisation(batch: MetricBatch) -> Measurement:
    rnd = cascading_randomisation(
        batch.model, batch.explain_fn, batch.inputs, batch.target, seed=batch.settings.seed, relevance=batch.relevance
    )
    return Measurement(
        {"Spearman random model": rnd.final("spearman"), "SSIM random model": rnd.final("ssim")}, randomisation=rnd
    )


@register("complexity", "how concentrated the relevance is (entropy, Gini index)", [("entropy", False), ("Gini", True)])
def _complexity(batch: MetricBatch) -> Measurement:
    return Measurement({"entropy": entropy(batch.relevance), "Gini": gini(batch.relevance)})
