"""Measure explanation quality: the four properties of a good explanation, and more.

Pure functions on tensors (one value per sample, float64, NaN where a measure is undefined);
those that need the model take it with an explanation function
``explain_fn(model, inputs, target) -> relevance``, so any method plugs in, e.g.::

    def explain_fn(model, x, target):
        return relprop.explain(model, x, target, composite="epsilon-gamma-box").relevance

================  ====================================================================
family            functions
================  ====================================================================
conservation      :func:`conservation_error`, :func:`absorbed_share`, :func:`ledger_shares`
positivity        :func:`negative_share`
continuity        :func:`continuity` (local Lipschitz estimate, correlation), :func:`local_lipschitz`
selectivity       :func:`perturbation_curve`, :func:`selectivity` (MoRF/LeRF, AOPC, AUC, ABPC)
localisation      :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy`
randomisation     :func:`cascading_randomisation` (Spearman, SSIM per stage)
complexity        :func:`entropy`, :func:`gini`
similarity        :func:`pearson`, :func:`spearman`, :func:`ssim`
================  ====================================================================

``relprop evaluate`` reports these families through the registry in
:mod:`relprop.metrics.families`; registering a family there adds it to the command.
"""

from __future__ import annotations

from ._common import ExplainFn, predicted_class, predicted_scores
from .complexity import entropy, gini
from .conservation import absorbed_share, conservation_error, ledger_shares
from .continuity import ContinuityResult, continuity, local_lipschitz
from .localisation import relevance_mass_accuracy, relevance_rank_accuracy
from .positivity import negative_share
from .randomisation import RandomisationResult, cascading_randomisation, randomisable_layers
from .selectivity import (
    ORDERS,
    REPLACEMENTS,
    PerturbationCurve,
    SelectivityResult,
    aopc,
    area_under_curve,
    gaussian_blur,
    inpaint_neighbour_mean,
    perturbation_curve,
    selectivity,
)
from .similarity import average_ranks, pearson, spearman, ssim

__all__ = [
    "ORDERS",
    "REPLACEMENTS",
    "ContinuityResult",
    "ExplainFn",
    "PerturbationCurve",
    "RandomisationResult",
    "SelectivityResult",
    "absorbed_share",
    "aopc",
    "area_under_curve",
    "average_ranks",
    "cascading_randomisation",
    "conservation_error",
    "continuity",
    "entropy",
    "gaussian_blur",
    "gini",
    "inpaint_neighbour_mean",
    "ledger_shares",
    "local_lipschitz",
    "negative_share",
    "pearson",
    "perturbation_curve",
    "predicted_class",
    "predicted_scores",
    "randomisable_layers",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "selectivity",
    "spearman",
    "ssim",
]
