"""relprop.tune: honest (held-out scores are relprop evaluate's), reproducible, within budget, model untouched."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop.errors import ConfigurationError
from relprop.evaluate import EvaluationData, EvaluationSettings, evaluate_methods
from relprop.tuning import Candidate, Context, Objective, TunedComposite, TuneProgress, as_objective, default_space
from relprop.tuning.search import default_references
from test_invariance import assert_unchanged, snapshot

from .conftest import QUICK


def evaluate_split(
    model: nn.Module, x: Tensor, index: list[int], spec: str, family: str, column: str, **settings: Any
) -> Tensor:
    """Per-input values of one relprop evaluate column on the inputs ``x[index]`` (independent of tune)."""
    labels = settings.pop("labels", torch.zeros(len(x), dtype=torch.long))
    masks = settings.pop("masks", None)
    reference = settings.pop("reference", x.mean(0))
    data = EvaluationData(x[index], labels[index], None if masks is None else masks[index], "split", reference)
    result = evaluate_methods(model, data, [spec], [family], EvaluationSettings(**settings))
    return result.values[spec][column]


def summary(values: Tensor) -> tuple[float, float, int]:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()), float(finite.std() / math.sqrt(len(finite))), len(finite)


def search_indices(tuned: relprop.TunedComposite, count: int) -> list[int]:
    held = set(tuned.held_out_indices)
    return [i for i in range(count) if i not in held]


@pytest.mark.parametrize("replacement", ["uniform", "dataset-mean"])
def test_every_score_is_what_relprop_evaluate_measures_on_that_split(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor], replacement: str
) -> None:
    x, _ = digits
    tuned = relprop.tune(
        digits_model, x, objective=f"pixel-flipping:replacement={replacement}", candidates=QUICK, budget=None, seed=3
    )
    assert [r.candidate.spec for r in tuned.results] == QUICK
    column = f"ABPC ({replacement})"
    settings = {"replacements": (replacement,), "bounds": (0.0, 1.0), "seed": 3}
    for result in tuned.results:
        spec = result.candidate.spec
        held = evaluate_split(digits_model, x, tuned.held_out_indices, spec, "selectivity", column, **settings)
        search = evaluate_split(digits_model, x, search_indices(tuned, 24), spec, "selectivity", column, **settings)
        assert (result.held_out.mean, result.held_out.se, result.held_out.n) == pytest.approx(summary(held), abs=0)
        assert (result.search.mean, result.search.se, result.search.n) == pytest.approx(summary(search), abs=0)
    means = [r.search.mean for r in tuned.results]
    assert tuned.chosen == means.index(max(means))
    assert tuned.spec == QUICK[tuned.chosen]


def test_the_splits_are_disjoint_seeded_and_cover_the_data(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    x, _ = digits
    a = relprop.tune(digits_model, x, objective="pixel-flipping:replacement=zeros", candidates=QUICK[:1], seed=1)
    b = relprop.tune(digits_model, x, objective="pixel-flipping:replacement=zeros", candidates=QUICK[:1], seed=2)
    assert (a.search_size, a.held_out_size) == (12, 12) and len(set(a.held_out_indices)) == 12
    assert a.held_out_indices != b.held_out_indices
    assert a.results[0].held_out.n == 12 and a.results[0].search.n == 12


def _without_timing(tuned: relprop.TunedComposite) -> dict[str, Any]:
    data = tuned.to_json()
    data["search"].pop("elapsed_s")
    for result in data["results"]:
        result.pop("seconds")
    return data


def test_same_seed_same_result(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    x, _ = digits
    runs = [
        relprop.tune(digits_model, x[:16], objective="pixel-flipping:replacement=uniform", budget=None, seed=7,
                     max_candidates=11)
        for _ in range(2)
    ]  # fmt: skip
    assert _without_timing(runs[0]) == _without_timing(runs[1])
    assert runs[0].stopped == "max_candidates" and len(runs[0].results) == 11


def test_the_default_search_refines_the_best_composites_in_turn(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    x, _ = digits
    space = default_space((0.0, 1.0))
    first = space.first_points()
    tuned = relprop.tune(
        digits_model, x[:16], objective="pixel-flipping:replacement=zeros", budget=None, seed=0,
        max_candidates=len(first) + 6, references=[None],
    )  # fmt: skip
    tried = [r.candidate for r in tuned.results]
    assert tried[: len(first)] == first and first[0] == Candidate.make("epsilon-gamma-box", {"low": 0.0, "high": 1.0})
    assert len(set(tried)) == len(tried)
    by_family = {r.candidate.composite: r.utility for r in tuned.results[: len(first)]}
    ranked = sorted(by_family, key=lambda name: -by_family[name])[:3]
    assert [c.composite for c in tried[len(first) :]] == ranked * 2
    assert all(c in space.grid(c.composite) for c in tried[len(first) :])


class Scripted(Objective):
    """A fake objective: a fixed score per candidate and input, after a fixed delay."""

    name = "scripted"

    def __init__(self, values: dict[str, float], delay: float = 0.0, higher_is_better: bool = True) -> None:
        self.values, self.delay, self.higher_is_better = values, delay, higher_is_better

    def check(self, model: nn.Module, data: Any) -> None:
        pass

    def scores(self, model: nn.Module, data: Any, spec: str, context: Context) -> Tensor:
        time.sleep(self.delay)
        n = len(data.images)
        return torch.full((n,), self.values[spec], dtype=torch.float64) + torch.arange(n, dtype=torch.float64) % 2

    title = "scripted score"
    spec = "scripted"


@pytest.mark.parametrize("higher", [True, False])
def test_the_choice_follows_the_objective_direction(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor], higher: bool
) -> None:
    values = dict(zip(QUICK, [1.0, 3.0, 2.0], strict=True))
    tuned = relprop.tune(digits_model, digits[0], objective=Scripted(values, higher_is_better=higher), candidates=QUICK)
    assert tuned.spec == (QUICK[1] if higher else QUICK[0])
    assert tuned.higher_is_better is higher


def test_the_search_stops_within_the_budget(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    candidates = [f"lrp:epsilon,epsilon={e}" for e in (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    objective = Scripted({c: 1.0 for c in candidates}, delay=0.15)  # 0.3 s per candidate (two splits)
    tuned = relprop.tune(digits_model, digits[0], objective=objective, candidates=candidates, budget=1.0,
                          keep_first=True)  # fmt: skip
    assert tuned.stopped == "budget" and 1 <= len(tuned.results) <= 3
    # All eight would take 2.4 s; the slack (not 0.3 s) keeps a loaded CI machine from failing it.
    assert tuned.elapsed_s <= 1.0 + 1.0


def test_a_budget_too_small_for_one_candidate_is_a_clear_error(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    objective = Scripted(dict.fromkeys(QUICK, 1.0), delay=0.05)
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(digits_model, digits[0], objective=objective, candidates=QUICK, budget=0.01)
    message = str(info.value)
    assert re.fullmatch(
        r"budget 0\.01 s is too small for one candidate: lrp:epsilon-gamma-box,low=0,high=1 took \d+\.\d s on 24 "
        r"inputs; give a budget of at least \d+ s or fewer inputs\.",
        message,
    ), message
    kept = relprop.tune(digits_model, digits[0], objective=objective, candidates=QUICK, budget=0.01, keep_first=True)
    assert [r.candidate.spec for r in kept.results] == QUICK[:1] and kept.stopped == "budget"
    with pytest.raises(ConfigurationError, match=r"^budget must be a positive number of seconds \(or None\), got 0\.$"):
        relprop.tune(digits_model, digits[0], candidates=QUICK, budget=0)


def test_progress_is_reported_after_every_candidate(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[TuneProgress] = []
    objective = Scripted(dict(zip(QUICK, [1.0, 3.0, 2.0], strict=True)))
    relprop.tune(digits_model, digits[0], objective=objective, candidates=QUICK, progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3] and all(p.planned == 3 for p in seen)
    assert [p.best.candidate.spec for p in seen] == [QUICK[0], QUICK[1], QUICK[1]]
    assert seen[-1].eta == 0 and seen[0].eta >= 0
    relprop.tune(digits_model, digits[0], objective=objective, candidates=QUICK, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"[1/3] {QUICK[0]}: scripted score search ")


def test_the_model_is_unchanged_by_a_search(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    before = snapshot(digits_model)
    relprop.tune(digits_model, digits[0][:8], objective="pixel-flipping:replacement=inpaint", candidates=QUICK)
    assert_unchanged(digits_model, before)


def test_a_weighted_objective_adds_its_weighted_terms_per_input(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor]
) -> None:
    x, labels = digits
    masks = torch.zeros(len(x), 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:6, 2:6] = True
    tuned = relprop.tune(
        digits_model, x, labels, objective={"pixel-flipping:replacement=zeros": 1.0, "localisation": 4.0},
        candidates=QUICK[:2], masks=masks, seed=0,
    )  # fmt: skip
    assert tuned.objective == "pixel-flipping:replacement=zeros,weight=1; localisation,weight=4"
    assert tuned.objective_title == "1 × ABPC (zeros) ↑ + 4 × mass accuracy ↑"
    for result in tuned.results:
        spec = result.candidate.spec
        common = {"labels": labels, "masks": masks, "target": "label", "bounds": (0.0, 1.0), "seed": 0}
        abpc = evaluate_split(
            digits_model, x, tuned.held_out_indices, spec, "selectivity", "ABPC (zeros)", replacements=("zeros",),
            **common,
        )  # fmt: skip
        mass = evaluate_split(digits_model, x, tuned.held_out_indices, spec, "localisation", "mass accuracy", **common)
        assert result.held_out.mean == pytest.approx(summary(abpc + 4.0 * mass)[0], rel=1e-12)


def test_targets_given_per_input_are_explained(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    x, labels = digits
    wrong = (labels + 1) % 10
    tuned = relprop.tune(digits_model, x, wrong, objective="pixel-flipping:replacement=zeros", candidates=QUICK[:1])
    held = evaluate_split(
        digits_model, x, tuned.held_out_indices, QUICK[0], "selectivity", "ABPC (zeros)", labels=wrong,
        target="label", replacements=("zeros",), bounds=(0.0, 1.0),
    )  # fmt: skip
    assert tuned.held_out_score.mean == summary(held)[0]
    assert tuned.target == "label" and "--target label" in " ".join(tuned.evaluate_options or [])


def test_bad_arguments_are_one_line_errors(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    x, _ = digits
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"inputs": x[:1]},
            "1 input(s) cannot be split into a search and a held-out part with held_out=0.5; pass at "
            "least 2 inputs (a few dozen for scores worth reporting).",
        ),
        (
            {"targets": torch.zeros(3, dtype=torch.long)},
            "targets must be None, one class index or one class index per input (24), got torch.int64 of shape (3,).",
        ),
        ({"candidates": ["lrp:nope"]}, "unknown composite 'nope' in a candidate; choose one of: "),
        ({"candidates": []}, "candidates is empty; pass at least one composite, e.g. ['epsilon-gamma-box']."),
        ({"bounds": (1.0, 0.0)}, "bounds must be (low, high) with low < high, got (1.0, 0.0)."),
        ({"held_out": 1.0}, "held_out must be a share strictly between 0 and 1, got 1.0."),
    ]
    for overrides, message in cases:
        arguments = {"inputs": x, "candidates": QUICK[:1], **overrides}
        with pytest.raises(ConfigurationError) as info:
            relprop.tune(digits_model, arguments.pop("inputs"), **arguments)
        assert str(info.value).startswith(message), str(info.value)
        assert "\n" not in str(info.value)


def test_references_join_the_search_and_the_tuned_file(
    digits_model: nn.Module, digits: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    """The default space adds the objective's own reference; a chosen dataset-mean reference travels in the file
    and explains as relprop.explain(..., reference=that mean) does; its held-out score is evaluate's."""
    assert default_references(as_objective("pixel-flipping:replacement=dataset-mean")) == (None, "dataset-mean")
    assert default_references(as_objective("pixel-flipping:replacement=inpaint")) == (None,)
    assert default_references(as_objective("localisation")) == (None,)
    x, labels = digits
    mean = x[16:].mean(0)
    data = EvaluationData(x[:16], labels[:16], reference=mean)
    candidates = ["lrp:epsilon-gamma-box,low=0,high=1", "lrp:epsilon,epsilon=1e-06,reference=dataset-mean"]
    tuned = relprop.tune(digits_model, data, objective="pixel-flipping:replacement=dataset-mean", candidates=candidates,
                         budget=None, seed=0)  # fmt: skip
    with_reference = tuned.results[1]
    held = EvaluationData(x[:16][tuned.held_out_indices], labels[:16][tuned.held_out_indices], reference=mean)
    settings = EvaluationSettings(replacements=("dataset-mean",), batch_size=128)
    measured = evaluate_methods(digits_model, held, [candidates[1]], ["selectivity"], settings)
    abpc = measured.summary(candidates[1], "ABPC (dataset-mean)")[0]
    assert with_reference.held_out.mean == pytest.approx(float(abpc))
    # The reference-aware candidate wins this objective (it explains relative to what pixel flipping inserts).
    assert tuned.candidate.reference == "dataset-mean"
    path = tuned.save(tmp_path / "tuned.json")
    loaded = TunedComposite.load(path)
    assert torch.equal(loaded.reference_input, mean.float())
    by_file = relprop.explain(digits_model, x[:4], composite=str(path))
    direct = relprop.explain(digits_model, x[:4], composite="epsilon", epsilon=1e-6, reference=mean)
    torch.testing.assert_close(by_file.relevance, direct.relevance)
    by_explainer = relprop.Explainer(digits_model, loaded)(x[:4])  # an Explainer runs the tuned reference too
    torch.testing.assert_close(by_explainer.relevance, direct.relevance)


def test_references_restrict_the_default_space(digits_model: nn.Module, digits: tuple[Tensor, Tensor]) -> None:
    """references= (none, zeros, mean, blur) replaces the objective's default references in the default space."""
    x, _ = digits
    tuned = relprop.tune(digits_model, x[:8], objective="pixel-flipping:replacement=blur", budget=None,
                         references="none,mean", max_candidates=4)  # fmt: skip
    box = {"low": 0.0, "high": 1.0}
    assert [r.candidate for r in tuned.results] == [
        Candidate.make("epsilon-gamma-box", box), Candidate.make("epsilon-gamma-box", box, "dataset-mean"),
        Candidate.make("montavon", box), Candidate.make("montavon", box, "dataset-mean"),
    ]  # fmt: skip
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(digits_model, x[:8], references=["zeros", "median"])
    assert (
        str(info.value)
        == "unknown reference 'median' in references; choose from none, zeros, mean, blur (comma-separated)."
    )
    with pytest.raises(ConfigurationError) as info:
        relprop.tune(digits_model, x[:8], references=["blur"], candidates=QUICK)
    assert str(info.value) == (
        "references= restricts the default search space; with candidates= write the reference into each candidate "
        "instead (e.g. 'lrp:gamma,reference=blur')."
    )
