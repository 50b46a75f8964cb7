"""The Clever-Hans experiment: plant a spurious mark in one class, train, and see who finds it.

    python scripts/clever_hans.py --out evaluation/clever_hans [--force]

1. Plant a bright 2×2 mark in the bottom-left corner (a region the digits almost never use) of
   90 % of the training images of one class, after the random shifts of the shipped recipe so
   that it sits at a fixed place like a watermark; train with the recipe of
   scripts/train_digits.py (same seed, same split). The embedded model, trained on the same
   images without the mark, is the control.
2. Show that the model relies on the mark: accuracy on the held-out digits with and without
   the mark, and how many digits of other classes it calls the marked class once the mark is
   added.
3. Measure how much of the evidence for the marked class each explanation method puts on the
   mark (relevance mass accuracy inside the mark's mask, positive relevance; rank accuracy),
   on every held-out digit of the other classes with the mark added, for both models.

Writes ``results.md``, ``results.json``, ``figure.png`` and, for ``relprop evaluate``,
``clever_hans_cnn.pt`` (weights) and ``marked_test.pt`` (the marked digits with their masks).
Training is deterministic (seeded, one thread); it takes about a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_digits import fit, tensors  # noqa: E402

from relprop import viz  # noqa: E402
from relprop.evaluate import (  # noqa: E402
    EvaluationData,
    EvaluationResult,
    EvaluationSettings,
    evaluate_methods,
    markdown_table,
    write_atomic,
)
from relprop.models import load_digits_model  # noqa: E402

MARKED_CLASS = 3
FRACTION = 0.9
MARK_ROWS = slice(6, 8)
MARK_COLS = slice(0, 2)
MARK_VALUE = 1.0
#: LRP composites compared (z^B bounds: the pixel range [0, 1]).
LRP_METHODS = [
    "lrp:lrp-0",
    "lrp:epsilon,epsilon=0.25",
    "lrp:gamma,gamma=0.25",
    "lrp:alpha1-beta0",
    "lrp:epsilon-plus-flat",
    "lrp:epsilon-gamma-box,low=0,high=1",
    "lrp:montavon,low=0,high=1",
]
#: The relatives of LRP, compared as soon as relprop.methods provides them (the methods branch).
RELATIVES = [
    "gradient",
    "gradient-x-input",
    "smoothgrad:n=20,sigma=0.1,seed=0",
    "integrated-gradients",
    "guided-backprop",
    "deconvnet",
    "occlusion:patch=2",
    "deeplift",
    "deeplift:reveal-cancel",
    "deep-taylor:low=0,high=1",
]


def available_methods() -> list[str]:
    """The LRP composites, the relatives this relprop has, and the noise baseline ``random``."""
    from relprop import methods

    names = set(methods.names())
    return [*LRP_METHODS, *(m for m in RELATIVES if m.split(":")[0] in names), "random"]


METHODS = available_methods()
FIGURE_METHODS = ["lrp:lrp-0", "lrp:epsilon,epsilon=0.25", "lrp:alpha1-beta0", "lrp:epsilon-gamma-box,low=0,high=1"]


def mark_mask() -> torch.Tensor:
    """Boolean ``(1, 8, 8)`` mask of the mark."""
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, MARK_ROWS, MARK_COLS] = True
    return mask


def plant(images: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` ``(N, 1, 8, 8)`` with the mark."""
    marked = images.clone()
    marked[:, :, MARK_ROWS, MARK_COLS] = MARK_VALUE
    return marked


def train_clever_hans(x_train: torch.Tensor, y_train: torch.Tensor) -> tuple[torch.nn.Module, int]:
    """Train with the mark planted in ``FRACTION`` of the ``MARKED_CLASS`` images (a seeded choice)."""
    members = (y_train == MARKED_CLASS).nonzero().flatten()
    chosen = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(1))]
    chosen = chosen[: round(FRACTION * len(members))]
    carries_mark = torch.zeros(len(x_train), dtype=torch.bool)
    carries_mark[chosen] = True

    def after_augment(batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        batch = batch.clone()
        batch[carries_mark[indices], :, MARK_ROWS, MARK_COLS] = MARK_VALUE
        return batch

    return fit(x_train, y_train, after_augment), len(chosen)


def reliance(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy with and without the mark, and how often other classes become the marked class."""
    with torch.no_grad():
        clean = model(x).argmax(1)
        marked = model(plant(x)).argmax(1)
    own = y == MARKED_CLASS
    return {
        "accuracy (no mark)": float((clean == y).float().mean()),
        "accuracy (mark added to every digit)": float((marked == y).float().mean()),
        f"recall of class {MARKED_CLASS} (no mark)": float((clean[own] == y[own]).float().mean()),
        f"recall of class {MARKED_CLASS} (with mark)": float((marked[own] == y[own]).float().mean()),
        f"other digits called {MARKED_CLASS} (no mark)": float((clean[~own] == MARKED_CLASS).float().mean()),
        f"other digits called {MARKED_CLASS} (with mark)": float((marked[~own] == MARKED_CLASS).float().mean()),
    }


def figure(
    models: dict[str, torch.nn.Module],
    examples: torch.Tensor,
    results: dict[str, EvaluationResult],
    path: Path,
) -> None:
    """Example heatmaps for both models, and relevance mass on the mark per method."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    import relprop

    n_examples = len(examples)
    fig = Figure(figsize=(8, 11), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.75, 1])
    axes = top.subplots(2 * n_examples, len(FIGURE_METHODS) + 1, squeeze=False)
    for block, (name, model) in enumerate(models.items()):
        explanations = {
            spec: relprop.explain(model, examples, MARKED_CLASS, **_explain_params(spec)).relevance
            for spec in FIGURE_METHODS
        }
        with torch.no_grad():
            predicted = model(examples).argmax(1)
        for i in range(n_examples):
            row = axes[block * n_examples + i]
            row[0].imshow(examples[i, 0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            row[0].set_ylabel(f"{name.split(' model')[0]}\npredicts {int(predicted[i])}", fontsize=8)
            for j, spec in enumerate(FIGURE_METHODS):
                row[j + 1].imshow(viz.heatmap_array(explanations[spec][i]), interpolation="nearest")
            for ax in row:
                ax.add_patch(Rectangle((-0.5, 5.5), 2, 2, fill=False, edgecolor="gold", linewidth=1.5))
                ax.set_xticks([])
                ax.set_yticks([])
    axes[0][0].set_title("input (mark in gold)", fontsize=8)
    for j, spec in enumerate(FIGURE_METHODS):
        axes[0][j + 1].set_title(spec.removeprefix("lrp:").replace(",", "\n", 1).replace(",", " "), fontsize=8)
    top.suptitle(
        f"Held-out digits with the mark added: relevance for class {MARKED_CLASS} (red +, blue −)", fontsize=10
    )

    ax = bottom.subplots()
    width = 0.38
    positions = np.arange(len(METHODS))
    for k, (name, result) in enumerate(results.items()):
        summary = [result.summary(spec, "mass accuracy") for spec in METHODS]
        ax.bar(
            positions + (k - 0.5) * width,
            [s[0] for s in summary],
            width,
            yerr=[s[1] for s in summary],
            label=name,
            color=["#c0392b", "#7f8c8d"][k],
            capsize=2,
        )
    ax.axhline(4 / 64, color="black", linestyle=":", linewidth=1, label="mark's share of the pixels (4/64)")
    ax.set_xticks(
        positions, [m.removeprefix("lrp:").replace(",", " ") for m in METHODS], rotation=25, ha="right", fontsize=7
    )
    ax.set_ylabel(f"share of positive relevance\nfor class {MARKED_CLASS} on the mark")
    ax.set_title("Relevance mass on the mark (mean ± SE, marked held-out digits of other classes)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=100))


def _explain_params(spec: str) -> dict[str, Any]:
    from relprop.evaluate import resolve_method

    name, params = resolve_method(spec)
    return {"method": name, **params}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "clever_hans", help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args(argv)
    out: Path = args.out
    names = ["results.md", "results.json", "figure.png", "clever_hans_cnn.pt", "marked_test.pt"]
    existing = [out / n for n in names if (out / n).exists()]
    if existing and not args.force:
        raise SystemExit(f"error: {existing[0]} already exists; pass --force to overwrite it or choose another --out")

    x_all, y_all, train_idx, test_idx = tensors()
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_test, y_test = x_all[test_idx], y_all[test_idx]
    print(f"training with the mark on {FRACTION:.0%} of the class-{MARKED_CLASS} training digits ...", flush=True)
    clever_hans, n_marked = train_clever_hans(x_train, y_train)
    models = {"Clever-Hans model": clever_hans, "clean model (control)": load_digits_model()}
    reliance_rows = {name: reliance(model, x_test, y_test) for name, model in models.items()}

    others = y_test != MARKED_CLASS
    data = EvaluationData(
        plant(x_test[others]),
        y_test[others],
        mark_mask().expand(int(others.sum()), 1, 8, 8).clone(),
        f"{int(others.sum())} held-out digits of classes other than {MARKED_CLASS}, mark added",
    )
    settings = EvaluationSettings(target=MARKED_CLASS, mass_mode="positive")
    results = {}
    for name, model in models.items():
        print(f"measuring relevance on the mark: {name} ...", flush=True)
        results[name] = evaluate_methods(model, data, METHODS, ["localisation"], settings)

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "clever_hans_cnn.pt", lambda p: torch.save(clever_hans.state_dict(), p))
    write_atomic(
        out / "marked_test.pt",
        lambda p: torch.save({"images": data.images, "labels": data.labels, "masks": data.masks, "name": data.name}, p),
    )
    with torch.no_grad():
        flipped = (clever_hans(data.images).argmax(1) == MARKED_CLASS).nonzero().flatten()
    examples = data.images[flipped[:3]]
    figure(models, examples, results, out / "figure.png")

    lines = [
        "## Reliance on the mark",
        "",
        f"The mark (2×2, value {MARK_VALUE}, rows 6–7, columns 0–1) was planted in {n_marked} of the "
        f"{int((y_train == MARKED_CLASS).sum())} class-{MARKED_CLASS} training digits. Held-out test digits "
        f"({len(y_test)}):",
        "",
        "| | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for key in next(iter(reliance_rows.values())):
        lines.append(f"| {key} | " + " | ".join(f"{reliance_rows[name][key]:.1%}" for name in models) + " |")
    for name, result in results.items():
        lines += [
            "",
            f"## Relevance on the mark: {name}",
            "",
            f"{data.name}; explained class {MARKED_CLASS}; mean ± standard error.",
            "",
            *markdown_table(result),
        ]
    write_atomic(out / "results.md", lambda p: p.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    summary = {
        "marked_class": MARKED_CLASS,
        "marked_training_digits": n_marked,
        "reliance": reliance_rows,
        "relevance_on_mark": {
            name: {
                spec: {col: result.summary(spec, col) for col in ("mass accuracy", "rank accuracy")} for spec in METHODS
            }
            for name, result in results.items()
        },
    }
    write_atomic(out / "results.json", lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"))
    print((out / "results.md").read_text())
    print(f"wrote {', '.join(str(out / n) for n in names)}")


if __name__ == "__main__":
    main()
