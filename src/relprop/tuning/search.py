"""The search: :func:`tune` measures candidates on one split and reports them on another.

1. The data are split once, by ``seed``, into a search split and a disjoint held-out split.
2. Candidates are measured in a fixed order: one default point per composite first (the
   library's default, ``epsilon-gamma-box``, leads), then the grids of the ``refine`` best
   composites, interleaved, each grid in a seeded random order.
3. Each candidate is scored on both splits; only the search split decides. The held-out
   scores of *every* candidate are kept, so a report shows whether the search's ranking holds
   on new inputs (and how much the winner's search score flatters it).
4. The search stops when the next candidate would not fit the time budget, when
   ``max_candidates`` were measured, or when the space is exhausted.

Same seed, same data, same candidates measured → the same result: the order depends only on
the seed and on scores, and every score is seeded. A time budget can cut the list at a
different place on a slower machine; ``max_candidates`` (with a budget that does not bind)
makes the cut reproducible too.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError, RelpropError, UnsupportedOperationError
from .candidates import REFERENCES, Candidate, SearchSpace, as_candidates, as_references, default_space
from .data import SentencePairs, as_data, load_split, split_indices
from .fingerprint import model_fingerprint
from .objectives import Context, Objective, PixelFlipping, Weighted, as_objective
from .tuned import CandidateResult, Summary, TunedComposite, best_index

__all__ = ["TuneProgress", "default_references", "tune"]


@dataclass(frozen=True)
class TuneProgress:
    """Where a search stands, after each candidate.

    Attributes
    ----------
    done
        Candidates measured so far.
    planned
        Candidates the search would measure without a budget (grows once the best composites
        are known).
    elapsed, budget
        Seconds used and allowed (``None``: no limit).
    result
        The candidate just measured.
    best
        The best candidate so far (by its search-split score).
    title
        The objective's score name.
    """

    done: int
    planned: int
    elapsed: float
    budget: float | None
    result: CandidateResult
    best: CandidateResult
    title: str

    @property
    def seconds_per_candidate(self) -> float:
        return self.elapsed / max(self.done, 1)

    @property
    def eta(self) -> float:
        """Seconds until the search ends (the budget or the remaining candidates, whichever is first)."""
        remaining = max(self.planned - self.done, 0) * self.seconds_per_candidate
        return remaining if self.budget is None else max(0.0, min(remaining, self.budget - self.elapsed))

    def line(self) -> str:
        """One line for a log."""
        r = self.result
        return (
            f"[{self.done}/{self.planned}] {r.candidate.spec}: {self.title} search {r.search.cell()}, held-out "
            f"{r.held_out.cell()} ({r.seconds:.1f} s; {1 / max(self.seconds_per_candidate, 1e-9):.2f} candidates/s, "
            f"ETA {self.eta:.0f} s; best so far {self.best.candidate.spec})"
        )


def _print_progress(progress: TuneProgress) -> None:
    print(progress.line(), file=sys.stderr, flush=True)


class _Plan:
    """The candidates in search order; the refinement stage reads the scores measured so far."""

    def __init__(
        self,
        space: SearchSpace | None,
        explicit: list[Candidate] | None,
        results: list[CandidateResult],
        refine: int,
        seed: int,
    ) -> None:
        self.space, self.explicit, self.results = space, explicit, results
        self.refine, self.seed = refine, seed
        self.tried: set[Candidate] = set()
        self.dropped: set[str] = set()
        self.planned = len(explicit) if explicit is not None else len(space.first_points()) if space else 0

    def __iter__(self) -> Iterator[Candidate]:
        if self.explicit is not None:
            yield from self.explicit
            return
        assert self.space is not None
        yield from self.space.first_points()
        ranked = self._ranked_families()
        rng = random.Random(self.seed)
        queues = []
        for family in ranked[: self.refine]:
            points = [c for c in self.space.grid(family) if c not in self.tried]
            rng.shuffle(points)
            queues.append(points)
        self.planned = len(self.tried) + sum(len(q) for q in queues)
        for round_ in range(max((len(q) for q in queues), default=0)):
            for queue in queues:
                if round_ < len(queue):
                    yield queue[round_]

    def _ranked_families(self) -> list[str]:
        best: dict[str, float] = {}
        for result in self.results:
            name = result.candidate.composite
            value = result.utility if math.isfinite(result.utility) else -math.inf
            best[name] = max(best.get(name, -math.inf), value)
        return sorted((n for n in best if n not in self.dropped), key=lambda n: -best[n])


def _count(data: Any) -> int:
    return len(data) if isinstance(data, SentencePairs) else len(data.images)


def _default_bounds(data: Any, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    if bounds is not None:
        low, high = (float(b) for b in bounds)
        if not low < high:
            raise ConfigurationError(f"bounds must be (low, high) with low < high, got {bounds!r}.")
        return low, high
    if isinstance(data, SentencePairs):
        return None
    return float(data.images.min()), float(data.images.max())


def _is_transformer(model: nn.Module, data: Any, bounds: tuple[float, float] | None) -> bool:
    """Whether the image composites cannot explain this model (a transformer: use attnlrp / cp-lrp)."""
    if isinstance(data, SentencePairs):
        return True
    from ..api import explain

    low, high = bounds if bounds is not None else (None, None)
    try:
        explain(model, data.images[:2], composite="epsilon-gamma-box", low=low, high=high)
    except UnsupportedOperationError:
        return True
    return False


def default_references(objective: Objective) -> tuple[str | None, ...]:
    """The references the default space searches: plain LRP, and LRP relative to the reference the objective
    removes features to (``zeros``, ``blur``, ``dataset-mean``), if it names one."""
    parts = [t.objective for t in objective.terms] if isinstance(objective, Weighted) else [objective]
    matching = [p.replacement for p in parts if isinstance(p, PixelFlipping) and p.replacement in REFERENCES]
    return (None, *dict.fromkeys(str(r) for r in matching))


def _measure(
    objective: Objective, model: nn.Module, splits: tuple[Any, Any], candidate: Candidate, context: Context
) -> CandidateResult:
    start = time.perf_counter()
    search = objective.scores(model, splits[0], candidate.spec, context)
    held = objective.scores(model, splits[1], candidate.spec, context)
    seconds = time.perf_counter() - start
    summary = Summary.of(search)
    utility = summary.mean if objective.higher_is_better else -summary.mean
    return CandidateResult(candidate, summary, Summary.of(held), seconds, utility)


def tune(
    model: nn.Module,
    inputs: Any,
    targets: Any = None,
    objective: Any = "pixel-flipping:replacement=blur",
    candidates: Sequence[Candidate | str] | SearchSpace | None = None,
    budget: float | None = 60.0,
    seed: int = 0,
    *,
    references: Sequence[str | None] | None = None,
    masks: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    bounds: tuple[float, float] | None = None,
    held_out: float = 0.5,
    max_candidates: int | None = None,
    refine: int = 3,
    batch_size: int = 128,
    progress: bool | Callable[[TuneProgress], None] | None = None,
    keep_first: bool = False,
) -> TunedComposite:
    """Choose an LRP composite and its parameters by measured faithfulness on held-out inputs.

    Parameters
    ----------
    model
        The model (eval mode; never modified). For ``token-deletion``: a Hugging Face sentence encoder.
    inputs
        A batch ``(N, ...)``, a :class:`relprop.evaluate.EvaluationData` (inputs, labels, masks,
        reference), or :class:`~relprop.tuning.SentencePairs` for ``token-deletion``.
    targets
        ``None`` (each input's predicted class), one class index, or one per input.
    objective
        What to maximise: a spec such as ``"pixel-flipping:replacement=blur"``,
        ``"pixel-flipping:replacement=dataset-mean,patch_size=2"``, ``"localisation"``,
        ``"token-deletion"``, an :class:`~relprop.tuning.Objective`, or a weighted combination
        (``{"pixel-flipping:replacement=zeros": 1, "localisation": 5}``). See
        :mod:`relprop.tuning.objectives`.
    candidates
        ``None``: the default space (:func:`~relprop.tuning.default_space`); a
        :class:`~relprop.tuning.SearchSpace`; or a list of candidates / ``"lrp:..."`` specs /
        composite names, measured in that order.
    budget
        Seconds for the whole search (``None``: no limit). A budget that does not cover one
        candidate is an error.
    seed
        Seeds the split, the order of the grids and every random score.
    references
        For the default space: the references searched with every image composite (``None`` or
        ``"none"`` in the list: plain LRP; ``"zeros"``, ``"blur"``, ``"mean"`` = ``"dataset-mean"``:
        reference-aware LRP, :mod:`relprop.reference`; ``"zeros,blur"`` lists are split). Default:
        plain LRP and the reference the objective's replacement names, if any
        (:func:`default_references`). With explicit ``candidates`` write the reference into each
        candidate (``"lrp:gamma,reference=blur"``) instead.
    masks
        Ground-truth masks for ``localisation`` (one per input), when ``inputs`` is a tensor.
    reference
        The ``dataset-mean`` reference input (default: the mean of all ``inputs``).
    bounds
        The data range ``(low, high)``: the z^B bounds searched first and the range of
        ``uniform`` noise (default: the smallest and largest input value).
    held_out
        Share of the inputs held out (never used to choose).
    max_candidates
        Stop after this many candidates.
    refine
        How many of the best composites have their parameter grids searched.
    batch_size
        Inputs per explanation call (as ``relprop evaluate --batch-size``).
    progress
        ``True`` prints a line per candidate to stderr; a callable receives a
        :class:`TuneProgress` after each candidate.
    keep_first
        When the first candidate alone overruns the budget, keep it as the result (and stop)
        instead of raising (``composite="auto"`` does, so that it always answers).

    Returns
    -------
    TunedComposite
        The chosen setting, every candidate's search and held-out scores (mean ± SE), the
        model's fingerprint; use it as a composite or ``.save("tuned.json")``.
    """
    if budget is not None and not budget > 0:
        raise ConfigurationError(f"budget must be a positive number of seconds (or None), got {budget!r}.")
    if max_candidates is not None and max_candidates < 1:
        raise ConfigurationError(f"max_candidates must be at least 1, got {max_candidates!r}.")
    data, target = as_data(inputs, targets, masks, reference)
    goal = as_objective(objective)
    goal.check(model, data)
    from ..evaluate import EvaluationData

    if isinstance(data, EvaluationData) and data.reference is None:
        # One dataset-mean reference for both splits: the mean of all inputs.
        data = EvaluationData(data.images, data.labels, data.masks, data.name, data.images.mean(0))
    bounds = _default_bounds(data, bounds)
    context = Context(target=target, seed=seed, bounds=bounds, batch_size=batch_size)
    search_index, held_index = split_indices(_count(data), held_out, seed)
    splits = (load_split(data, search_index), load_split(data, held_index))
    fingerprint = model_fingerprint(model)

    explicit: list[Candidate] | None = None
    space: SearchSpace | None = None
    chosen_references = default_references(goal) if references is None else as_references(references)
    if references is not None and candidates is not None:
        raise ConfigurationError(
            "references= restricts the default search space; with candidates= write the reference into each "
            "candidate instead (e.g. 'lrp:gamma,reference=blur')."
        )
    if candidates is None:
        transformer = _is_transformer(model, data, bounds)
        if transformer and references is not None and chosen_references != (None,):
            raise ConfigurationError(
                f"references {', '.join(str(r) for r in chosen_references if r)} apply to image composites; this model "
                "is searched with the transformer composites, which explain without a reference: drop references=."
            )
        space = default_space(bounds, transformer=transformer, references=chosen_references)
    elif isinstance(candidates, SearchSpace):
        space = candidates
    else:
        explicit = as_candidates(candidates)
    report: Callable[[TuneProgress], None] | None = _print_progress if progress is True else progress or None

    results: list[CandidateResult] = []
    plan = _Plan(space, explicit, results, refine, seed)
    start = time.perf_counter()
    stopped = "exhausted"
    for candidate in plan:
        if candidate in plan.tried or candidate.composite in plan.dropped:
            continue
        if max_candidates is not None and len(results) >= max_candidates:
            stopped = "max_candidates"
            break
        elapsed = time.perf_counter() - start
        if results and budget is not None and elapsed + elapsed / len(results) > budget:
            stopped = "budget"
            break
        plan.tried.add(candidate)
        try:
            result = _measure(goal, model, splits, candidate, context)
        except RelpropError:
            if explicit is not None:
                raise
            plan.dropped.add(candidate.composite)  # this composite does not apply to the model
            continue
        if not results and budget is not None and result.seconds > budget and not keep_first:
            raise ConfigurationError(
                f"budget {budget:g} s is too small for one candidate: {candidate.spec} took {result.seconds:.1f} s on "
                f"{_count(data)} inputs; give a budget of at least {math.ceil(result.seconds * 2)} s or fewer inputs."
            )
        results.append(result)
        if report is not None:
            report(
                TuneProgress(
                    len(results),
                    max(plan.planned, len(results)),
                    time.perf_counter() - start,
                    budget,
                    result,
                    results[best_index(results)],
                    goal.title,
                )
            )
    if not results:
        raise ConfigurationError(
            "no candidate could explain this model; pass candidates= with composites that apply to it."
        )
    chosen = best_index(results)
    options = goal.evaluate_options(context)
    uses_mean = results[chosen].candidate.reference == "dataset-mean"
    return TunedComposite(
        candidate=results[chosen].candidate,
        fingerprint=fingerprint,
        model=type(model).__name__,
        objective=goal.spec,
        objective_title=goal.title,
        higher_is_better=goal.higher_is_better,
        results=results,
        chosen=chosen,
        seed=seed,
        search_size=len(search_index),
        held_out_size=len(held_index),
        data=getattr(data, "name", "inputs"),
        target=target,
        budget_s=budget,
        elapsed_s=time.perf_counter() - start,
        stopped=stopped,
        evaluate_options=None if options is None else ["--methods", results[chosen].candidate.spec, *options],
        held_out_indices=[int(i) for i in held_index],
        reference_input=data.reference.detach().cpu() if uses_mean and isinstance(data, EvaluationData) else None,
    )
