"""Choose LRP composites and their parameters by measured faithfulness.

Which rule for which layer depends on the model and on how "removing a feature" is defined:
on the digits model the z^B composites win pixel flipping by far when removed pixels are
blurred, and lose to LRP-γ when they are set to zero (EVALUATION.md). :func:`tune` measures
instead of guessing::

    tuned = relprop.tune(model, images, objective="pixel-flipping:replacement=blur", budget=60, seed=0)
    print(tuned.table())                       # every candidate: search split and held-out split, mean ± SE
    tuned.save("tuned.json")
    relprop.explain(model, x, composite=tuned)            # or composite="tuned.json"
    relprop.Explainer(model, relprop.tuning.TunedComposite.load("tuned.json"))

The search runs on one split of the data and reports every candidate's score on a disjoint
held-out split as well, computed exactly as ``relprop evaluate`` computes it. A tuned file
remembers the model's fingerprint and is refused for any other model.

Modules: :mod:`~relprop.tuning.objectives` (what is maximised), :mod:`~relprop.tuning.candidates`
(what is searched), :mod:`~relprop.tuning.search` (the search), :mod:`~relprop.tuning.tuned`
(the result), :mod:`~relprop.tuning.data` (splits and the one data access function),
:mod:`~relprop.tuning.resolve` (``composite=tuned``, ``"tuned.json"`` and ``"auto"``).
Needs the ``evaluation`` extra (the measures are those of ``relprop evaluate``).
"""

from __future__ import annotations

from .candidates import Candidate, SearchSpace, default_space
from .data import SentencePairs, load_split, split_indices
from .fingerprint import model_fingerprint
from .objectives import (
    Context,
    Localisation,
    Objective,
    PixelFlipping,
    TokenDeletion,
    Weighted,
    as_objective,
    objective_names,
    register_objective,
)
from .resolve import AUTO_BUDGET, auto_composite
from .search import TuneProgress, tune
from .tuned import CandidateResult, Summary, TunedComposite

__all__ = [
    "AUTO_BUDGET",
    "Candidate",
    "CandidateResult",
    "Context",
    "Localisation",
    "Objective",
    "PixelFlipping",
    "SearchSpace",
    "SentencePairs",
    "Summary",
    "TokenDeletion",
    "TuneProgress",
    "TunedComposite",
    "Weighted",
    "as_objective",
    "auto_composite",
    "default_space",
    "load_split",
    "model_fingerprint",
    "objective_names",
    "register_objective",
    "split_indices",
    "tune",
]
