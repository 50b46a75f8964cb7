"""Regenerate the "Tuned composites" section of EVALUATION.md: tuned LRP against every method relprop ships.

    python scripts/tune_report.py                     # all experiments (about an hour on the shared 2-core machine)
    python scripts/tune_report.py --only digits       # digits, textures, text

For each experiment (a model, held-out data and an objective) the script

1. runs :func:`relprop.tune` on one half of the data (seed 0) with a fixed number of candidates
   (not seconds, so that the result is the same on any machine);
2. measures every method relprop ships on the *other* half with the same objective function
   (the numbers ``relprop evaluate`` prints for these specs on that split), and checks that the
   tuned setting's held-out score recomputed here equals the one the search reported;
3. compares the tuned setting with the best of the other methods per input (a paired
   difference ± standard error). The competitor is picked on the held-out half itself, which
   favours it: a tie or a win of the tuned setting is conservative.

Experiments: the embedded digits CNN (pixel flipping with every replacement; localisation of a
planted mark on the Clever-Hans model of scripts/clever_hans.py), a CNN trained here on
scikit-image's brick / grass / gravel photographs (scripts/textures.py; the same objectives and a
planted mark), and the real all-MiniLM-L6-v2 with token deletion on the 120 sentence pairs of
benchmarks/data/sentence_pairs.tsv.

Writes evaluation/tuning/results.json (every number), evaluation/tuning/candidates.md (every
candidate's search and held-out score per experiment) and the tables between the
``<!-- generated:tuning-* -->`` markers of EVALUATION.md; the prose around them was written by
reading the tables — reread it after a rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import relprop  # noqa: E402
from relprop.clitools import write_atomic  # noqa: E402
from relprop.errors import RelpropError  # noqa: E402
from relprop.evaluate import EvaluationData  # noqa: E402
from relprop.tuning import Context, SentencePairs, Summary, as_objective, default_space, load_split  # noqa: E402
from relprop.tuning.search import default_references  # noqa: E402

SEED = 0
#: Candidates measured per image experiment (9 composite defaults, then the grids of the best three).
MAX_CANDIDATES = 30
#: Candidates measured for the sentence encoder (attnlrp and cp-lrp defaults, then their grids).
TEXT_MAX_CANDIDATES = 8
REPLACEMENTS = ("zeros", "dataset-mean", "blur", "inpaint", "uniform")
BOUNDS = (0.0, 1.0)
#: ``--quick``: a smoke run (few inputs and candidates, models barely trained) that only checks the plumbing.
QUICK = {"enabled": False, "inputs": 40, "candidates": 2}


# ------------------------------------------------------------------------------------------------
# Reference-aware LRP (relprop.reference) joins the search here: every image experiment searches each
# composite as plain LRP and relative to the reference its objective removes features to (zeros, blur,
# dataset-mean; none for inpaint, uniform noise and localisation): relprop.tuning.search.default_references.
# Transformer composites are searched without a reference.
def reference_candidates(experiment: Experiment) -> tuple[str | None, ...]:
    return (None,) if experiment.transformer else default_references(as_objective(experiment.objective))


# ------------------------------------------------------------------------------------------------


def image_methods(objective: str, occlusion_patch: int) -> dict[str, str]:
    """Every method relprop ships for image models, with the baseline / reference matching the objective.

    Labels are the rows of the report; the specs are those ``relprop evaluate --methods`` takes.
    """
    replacement = objective.split("replacement=")[1].split(",")[0] if "replacement=" in objective else None
    # The reference each reference-based method gets: the replacement itself where one exists.
    reference = {
        "zeros": "zeros",
        "dataset-mean": "dataset-mean",
        "blur": "blurred,blur_sigma=1",  # the replacement's blur (σ = 1 pixel)
        "inpaint": "blurred,blur_sigma=1",  # inpainting depends on which pixels are gone: the blur is closest
        "uniform": "0.5",  # the expected value of uniform noise in [0, 1]
        None: "zeros",
    }[replacement]
    value = "0" if reference == "zeros" else reference
    return {
        "gradient": "gradient",
        "gradient magnitude": "gradient:absolute=true",
        "gradient × input": "gradient-x-input",
        "SmoothGrad": "smoothgrad:n=20,sigma=0.1,seed=0",
        "Integrated Gradients (matching baseline)": f"integrated-gradients:baseline={reference}",
        "guided backprop": "guided-backprop",
        "deconvnet": "deconvnet",
        "occlusion (matching value)": f"occlusion:patch={occlusion_patch},value={value}",
        "DeepLIFT rescale (matching reference)": f"deeplift:reference={reference}",
        "DeepLIFT RevealCancel (matching reference)": f"deeplift:reveal-cancel,reference={reference}",
        "deep Taylor": "deep-taylor:low=0,high=1",
        "LRP-0": "lrp:lrp-0",
        "LRP-ε (ε = 10⁻⁶)": "lrp:epsilon",
        "LRP-ε (ε = 0.25)": "lrp:epsilon,epsilon=0.25",
        "LRP-γ (γ = 0.25)": "lrp:gamma",
        "LRP-α1β0": "lrp:alpha1-beta0",
        "LRP-α2β1": "lrp:alpha2-beta1",
        "epsilon-gamma-box": "lrp:epsilon-gamma-box,low=0,high=1",
        "epsilon-plus-flat": "lrp:epsilon-plus-flat",
        "epsilon-alpha2-beta1": "lrp:epsilon-alpha2-beta1",
        "epsilon-alpha2-beta1-flat": "lrp:epsilon-alpha2-beta1-flat",
        "montavon": "lrp:montavon,low=0,high=1",
        "random": "random",
    }


TEXT_METHODS = {
    "gradient": "gradient",
    "gradient magnitude": "gradient:absolute=true",
    "gradient × input": "gradient-x-input",
    "SmoothGrad": "smoothgrad:n=20,sigma=0.1,seed=0",
    "Integrated Gradients (zero embeddings)": "integrated-gradients",
    "occlusion (a token's embedding → 0)": "occlusion:patch=1x384,value=0",
    "AttnLRP": "lrp:attnlrp",
    "CP-LRP": "lrp:cp-lrp",
    "random": "random",
}


@dataclass
class Experiment:
    """One row of the summary: a model, its data, an objective, and the methods to compare."""

    model_name: str
    title: str
    model: nn.Module
    data: Any
    objective: str
    methods: dict[str, str]
    target: Any = None
    max_candidates: int = MAX_CANDIDATES
    transformer: bool = False
    notes: list[str] = field(default_factory=list)


def _values(scores: Tensor) -> list[float | None]:
    """Per-input values for the JSON file: 7 significant digits (the scores come from float32 models), NaN → null."""
    return [float(f"{float(v):.7g}") if math.isfinite(float(v)) else None for v in scores.double()]


def _tensor(values: list[float | None]) -> Tensor:
    return torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float64)


def run(experiment: Experiment) -> dict[str, Any]:
    """Tune, then score every method on the held-out split: a JSON-ready record with every per-input value."""
    print(f"\n=== {experiment.model_name}: {experiment.title} ===", flush=True)
    start = time.perf_counter()
    bounds = None if experiment.transformer else BOUNDS
    references = reference_candidates(experiment)
    space = default_space(bounds, transformer=experiment.transformer, references=references)
    tuned = relprop.tune(
        experiment.model,
        experiment.data,
        experiment.target,
        objective=experiment.objective,
        candidates=space,
        budget=None,
        seed=SEED,
        bounds=bounds,
        max_candidates=QUICK["candidates"] if QUICK["enabled"] else experiment.max_candidates,
        progress=True,
    )
    goal = as_objective(experiment.objective)
    context = Context(target=tuned.target, seed=SEED, bounds=bounds)
    held = load_split(experiment.data, tuned.held_out_indices)
    tuned_scores = goal.scores(experiment.model, held, tuned.spec, context)
    check = Summary.of(tuned_scores)
    if (check.mean, check.n) != (tuned.held_out_score.mean, tuned.held_out_score.n):
        raise SystemExit(f"error: held-out score {check} differs from the search's {tuned.held_out_score}")
    methods: dict[str, dict[str, Any]] = {}
    for label, spec in experiment.methods.items():
        print(f"  {label}: {spec}", flush=True)
        try:
            methods[label] = {"spec": spec, "values": _values(goal.scores(experiment.model, held, spec, context))}
        except RelpropError as exc:
            methods[label] = {"spec": spec, "values": None, "error": str(exc).split(" (")[0]}
    return {
        "model": experiment.model_name,
        "experiment": experiment.title,
        "tuned": tuned.to_json(),
        "tuned_values": _values(tuned_scores),
        "methods": methods,
        "notes": experiment.notes,
        "references": list(references),
        "seconds": round(time.perf_counter() - start, 1),
    }


# ------------------------------------------------------------------------------------------------
# Experiments


def digits_experiments(out: Path) -> list[Experiment]:
    import clever_hans
    from train_digits import tensors

    from relprop.models import load_digits_model

    x_all, y_all, train_idx, test_idx = tensors()
    train_mean = x_all[train_idx].mean(0)
    if QUICK["enabled"]:
        test_idx = test_idx[: QUICK["inputs"]]
    test = EvaluationData(x_all[test_idx], y_all[test_idx], None, "360 held-out digits", train_mean)
    model = load_digits_model()
    experiments = [
        Experiment("digits CNN", f"pixel flipping, {r}", model, test, f"pixel-flipping:replacement={r}",
                   image_methods(f"replacement={r}", 2))
        for r in REPLACEMENTS
    ]  # fmt: skip
    print("training the Clever-Hans digits model (scripts/clever_hans.py) ...", flush=True)
    hans = model if QUICK["enabled"] else clever_hans.train_clever_hans(x_all[train_idx], y_all[train_idx])[0]
    others = y_all[test_idx] != clever_hans.MARKED_CLASS
    marked = EvaluationData(
        clever_hans.plant(x_all[test_idx][others]),
        y_all[test_idx][others],
        clever_hans.mark_mask().expand(int(others.sum()), 1, 8, 8).clone(),
        f"{int(others.sum())} held-out digits of other classes, mark added",
        train_mean,
    )
    experiments.append(
        Experiment("digits CNN, planted mark", f"localisation of the mark, class {clever_hans.MARKED_CLASS}", hans,
                   marked, "localisation", image_methods("localisation", 2), target=clever_hans.MARKED_CLASS)
    )  # fmt: skip
    return experiments


def texture_experiments(out: Path) -> list[Experiment]:
    import textures

    x_train, y_train, x_test, y_test = textures.patches(SEED)
    train_mean = x_train.mean(0)
    epochs = 1 if QUICK["enabled"] else 12
    if QUICK["enabled"]:
        x_test, y_test = x_test[:: len(x_test) // QUICK["inputs"]], y_test[:: len(y_test) // QUICK["inputs"]]
    print("training the texture CNN (scripts/textures.py) ...", flush=True)
    model = textures.train(x_train, y_train, epochs=epochs)
    test = EvaluationData(x_test, y_test, None, f"{len(x_test)} held-out texture patches", train_mean)
    experiments = [
        Experiment("texture CNN", f"region flipping 2×2, {r}", model, test,
                   f"pixel-flipping:replacement={r},patch_size=2", image_methods(f"replacement={r}", 4))
        for r in REPLACEMENTS
    ]  # fmt: skip
    print("training the texture CNN with a planted mark ...", flush=True)
    hans = textures.train(x_train, y_train, marked_class=0, epochs=epochs)
    others = y_test != 0
    marked = EvaluationData(
        textures.plant(x_test[others]),
        y_test[others],
        textures.mark_mask(int(others.sum())),
        f"{int(others.sum())} held-out grass and gravel patches, mark added",
        train_mean,
    )
    experiments.append(
        Experiment("texture CNN, planted mark", "localisation of the mark, class brick", hans, marked,
                   "localisation", image_methods("localisation", 4), target=0)
    )  # fmt: skip
    accuracy = {
        "texture CNN": textures.accuracy(model, x_test, y_test),
        "planted-mark CNN": textures.accuracy(hans, x_test, y_test),
        "planted-mark CNN, mark on every patch": textures.accuracy(hans, textures.plant(x_test), y_test),
    }
    with torch.no_grad():
        called = float((hans(textures.plant(x_test[others])).argmax(1) == 0).float().mean())
        clean_called = float((model(textures.plant(x_test[others])).argmax(1) == 0).float().mean())
    experiments[-1].notes.append(
        f"texture CNN test accuracy {accuracy['texture CNN']:.1%}; planted-mark CNN {accuracy['planted-mark CNN']:.1%} "
        f"({accuracy['planted-mark CNN, mark on every patch']:.1%} with the mark on every patch); with the mark, "
        f"{called:.1%} of the grass and gravel patches become brick ({clean_called:.1%} for the texture CNN)"
    )
    return experiments


def text_experiments(out: Path) -> list[Experiment]:
    from relprop.text import load_minilm

    model, tokenizer = load_minilm(attn_implementation="sdpa")
    pairs = SentencePairs.from_tsv(tokenizer, ROOT / "benchmarks" / "data" / "sentence_pairs.tsv")
    if QUICK["enabled"]:
        pairs = SentencePairs(tokenizer, pairs.pairs[:6], pairs.name)
    return [
        Experiment("all-MiniLM-L6-v2", "token deletion (sentence similarity)", model, pairs, "token-deletion",
                   TEXT_METHODS, max_candidates=TEXT_MAX_CANDIDATES, transformer=True)
    ]  # fmt: skip


EXPERIMENTS: dict[str, Callable[[Path], list[Experiment]]] = {
    "digits": digits_experiments,
    "textures": texture_experiments,
    "text": text_experiments,
}

# ------------------------------------------------------------------------------------------------
# Reports


def _paired(a: Tensor, b: Tensor) -> Summary:
    both = torch.isfinite(a) & torch.isfinite(b)
    return Summary.of((a - b)[both])


def _tuned(record: dict[str, Any]) -> relprop.TunedComposite:
    return relprop.TunedComposite.from_json(record["tuned"])


def _scores(record: dict[str, Any]) -> dict[str, Tensor]:
    """Held-out values of every method that applies."""
    return {k: _tensor(m["values"]) for k, m in record["methods"].items() if m["values"] is not None}


def _best_other(record: dict[str, Any]) -> str | None:
    """The method (noise excluded) with the best held-out mean."""
    sign = 1 if _tuned(record).higher_is_better else -1
    usable = {k: v for k, v in _scores(record).items() if k != "random"}
    return max(usable, key=lambda k: sign * Summary.of(usable[k]).mean) if usable else None


def _setting(spec: str) -> str:
    return spec.removeprefix("lrp:")


def summary_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| model | objective | held-out inputs | tuned setting | tuned, held-out | its search score | "
        "best other method (held-out) | tuned − best, paired | library default (held-out) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        tuned, scores = _tuned(record), _scores(record)
        arrow = "↑" if tuned.higher_is_better else "↓"
        best = _best_other(record)
        if best is None:
            best_cell, diff_cell = "n/a", "n/a"
        else:
            best_cell = f"{best}: {Summary.of(scores[best]).cell()}"
            same = _setting(record["methods"][best]["spec"]) == _setting(tuned.spec)
            diff = _paired(_tensor(record["tuned_values"]), scores[best])
            diff_cell = "0 (the same setting)" if same else diff.cell()
        default_label = "AttnLRP" if "AttnLRP" in scores else "epsilon-gamma-box"  # TextExplainer's / explain's
        default = scores.get(default_label)
        cells = [
            record["model"],
            f"{tuned.objective_title} {arrow}, {record['experiment']}",
            str(tuned.held_out_size),
            f"`{_setting(tuned.spec)}`",
            tuned.held_out_score.cell(),
            tuned.search_score.cell(),
            best_cell,
            diff_cell,
            "n/a" if default is None else f"{default_label}: {Summary.of(default).cell()}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def methods_table(records: list[dict[str, Any]]) -> str:
    """Rows: methods; columns: the experiments of one model; cells: held-out mean ± SE (the best in bold)."""
    labels = list(dict.fromkeys(label for r in records for label in r["methods"]))
    header = [
        f"{_tuned(r).objective_title} {'↑' if _tuned(r).higher_is_better else '↓'}, {r['experiment']}" for r in records
    ]
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(records)]
    best = {}
    for index, record in enumerate(records):
        means = {k: Summary.of(v).mean for k, v in _scores(record).items()}
        means["tuned"] = _tuned(record).held_out_score.mean
        pick = max if _tuned(record).higher_is_better else min
        best[index] = pick(means, key=lambda k: means[k])
    for label in ["tuned", *labels]:
        cells = []
        for index, record in enumerate(records):
            tuned = _tuned(record)
            method = record["methods"].get(label)
            if label == "tuned":
                cell = f"{tuned.held_out_score.cell()} (`{_setting(tuned.spec)}`)"
            elif method is None:
                cell = ""
            elif method["values"] is None:
                cell = "n/a"
            else:
                cell = Summary.of(_tensor(method["values"])).cell()
            cells.append(f"**{cell}**" if best[index] == label and cell else cell)
        lines.append(f"| {'**tuned LRP**' if label == 'tuned' else label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def candidates_markdown(records: list[dict[str, Any]]) -> str:
    parts = ["# Every candidate of every search", "", "Regenerated by `python scripts/tune_report.py`.", ""]
    for record in records:
        tuned = _tuned(record)
        parts += [
            f"## {record['model']}: {record['experiment']}",
            "",
            f"Objective `{tuned.objective}` ({tuned.objective_title}), data: {tuned.data}; "
            f"{len(tuned.results)} candidates in {tuned.elapsed_s:.0f} s (stopped: {tuned.stopped}).",
            "",
            tuned.table(),
            "",
        ]
    return "\n".join(parts)


def notes(records: list[dict[str, Any]]) -> str:
    lines = []
    for record in records:
        lines += [f"* {record['model']}: {note}." for note in record["notes"]]
        for label, method in record["methods"].items():
            if method["values"] is None:
                lines.append(f"* {record['model']}, {label}: not applicable ({method['error']}).")
    return "\n".join(dict.fromkeys(lines))


def replace_generated(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->).*?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: EVALUATION.md has no <!-- generated:{name} --> section")
    return pattern.sub(lambda m: f"{m.group(1)}\n{content}\n{m.group(2)}", text)


def write_group(name: str, records: list[dict[str, Any]], out: Path, report: Path) -> None:
    """Write ``out/NAME.json`` (every number), ``out/NAME_candidates.md`` and the group's tables in ``report``."""
    for record in records:  # the same rounding for records read back by --render
        record["tuned_values"] = _values(_tensor(record["tuned_values"]))
        for method in record["methods"].values():
            method["values"] = None if method["values"] is None else _values(_tensor(method["values"]))
    content = {"seed": SEED, "experiments": records}
    data = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    write_atomic(out / f"{name}.json", lambda p: p.write_text(data + "\n", encoding="utf-8"))
    candidates = candidates_markdown(records)
    write_atomic(out / f"{name}_candidates.md", lambda p: p.write_text(candidates, encoding="utf-8"))
    text = report.read_text(encoding="utf-8")
    text = replace_generated(text, f"tuning-{name}-summary", summary_table(records))
    text = replace_generated(text, f"tuning-{name}-methods", methods_table(records))
    text = replace_generated(text, f"tuning-{name}-notes", notes(records))
    write_atomic(report, lambda p: p.write_text(text, encoding="utf-8"))
    print(f"updated {report}, {out / f'{name}.json'} and {out / f'{name}_candidates.md'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated: digits, textures, text")
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "tuning", help="output folder")
    parser.add_argument("--report", type=Path, default=ROOT / "EVALUATION.md", help="Markdown file to update")
    parser.add_argument("--quick", action="store_true", help="smoke run: few inputs and candidates (not a report)")
    parser.add_argument("--render", action="store_true", help="only rewrite the tables from the saved NAME.json files")
    args = parser.parse_args(argv)
    QUICK["enabled"] = args.quick
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [n for n in chosen if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"error: unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    out: Path = args.out
    for name in chosen:
        if args.render:
            records = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))["experiments"]
        else:
            records = [run(experiment) for experiment in EXPERIMENTS[name](out)]
        write_group(name, records, out, args.report)
        for record in records:
            print(f"{record['model']}, {record['experiment']}: {_tuned(record).summary()} [{record['seconds']:.0f} s]")


if __name__ == "__main__":
    main()
