"""Does the relevance for an object's region fall on that object? The digit-scenes segmentation network.

    python scripts/dense_evaluation.py                  # 60 test scenes, every method; updates EVALUATION.md
    python scripts/dense_evaluation.py --scenes 5 --no-report --out /tmp/scenes

For every object of the held-out test scenes (:func:`relprop.models.digit_scenes.digit_scenes_test_set`)
whose class the shipped network predicts somewhere in the object's cell, the explained score is
the sum of that class's scores over the pixels predicted as the class inside the cell
(``class_region(label, within=region(box=cell))``). Each method's map is scored by

* ``mass in cell``: the share of the positive relevance (for the absolute gradient: of the
  gradient's magnitude) that lies in the object's 16×16 cell of input pixels;
* ``mass on other digits``: the share that lies in the cells of the scene's other digits;
* ``rank accuracy``: the share of the K most relevant pixels that lie in the cell (K = 256,
  the cell's area);
* ``objects ≥ 80 %``: the share of objects whose ``mass in cell`` is at least 0.8.

Writes ``OUT/objects.csv`` (one row per object and method), ``OUT/results.md`` (mean ± standard
error), ``OUT/scene.png`` (one scene: input, labels, prediction and every method's heatmap for
one object) and, unless ``--no-report``, the table between the ``<!-- generated:digit-scenes -->``
markers of EVALUATION.md. Seeded and deterministic for a given torch build.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from evaluation_report import replace_generated  # noqa: E402

from relprop import explain, methods, viz  # noqa: E402
from relprop.clitools import write_atomic  # noqa: E402
from relprop.metrics import relevance_mass_accuracy, relevance_rank_accuracy  # noqa: E402
from relprop.models.digit_scenes import (  # noqa: E402
    CANVAS,
    DIGIT_SIZE,
    Scene,
    digit_scenes_test_set,
    load_digit_scenes_model,
)
from relprop.targets import class_region, region  # noqa: E402

#: The compared methods (specs as on the command line; z^B bounds = the pixel range [0, 1]).
METHODS = [
    "lrp:epsilon-gamma-box,low=0,high=1",
    "lrp:epsilon",
    "lrp:epsilon-plus-flat",
    "gradient:absolute=true",
    "gradient-x-input",
    "integrated-gradients:steps=32",
    "occlusion:patch=4,stride=2",
]
THRESHOLD = 0.8
METRICS = ("mass in cell", "mass on other digits", "rank accuracy")
# Background black, one colour per digit class.
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.uint8,
)


def _share(relevance: torch.Tensor, mask: torch.Tensor, absolute: bool) -> float:
    r = relevance.abs() if absolute else relevance
    return float(relevance_mass_accuracy(r, mask.unsqueeze(0))[0])


def _scores(relevance: torch.Tensor, cell: torch.Tensor, others: torch.Tensor, absolute: bool) -> dict[str, float]:
    return {
        "mass in cell": _share(relevance, cell, absolute),
        "mass on other digits": _share(relevance, others, absolute) if bool(others.any()) else 0.0,
        "rank accuracy": float(relevance_rank_accuracy(relevance, cell.unsqueeze(0))[0]),
    }


def run(scenes: int, specs: list[str], out: Path) -> list[dict[str, object]]:
    """Explain every detected object of the first ``scenes`` test scenes with every method."""
    model = load_digit_scenes_model()
    test = digit_scenes_test_set(scenes)
    with torch.no_grad():
        predicted = model(test.images).argmax(1)
    parsed = [(spec, *methods.resolve(spec)) for spec in specs]
    rows: list[dict[str, object]] = []
    figure: list[Image.Image] = []
    start = time.monotonic()
    for n in range(scenes):
        x = test.images[n : n + 1]
        for k, obj in enumerate(test.objects[n]):
            cell = obj.cell()
            found = bool((predicted[n][cell] == obj.label).any())
            target = class_region(obj.label, within=region(box=obj.box)) if found else None
            others = torch.zeros_like(cell)
            for other in test.objects[n]:
                if other is not obj:
                    others |= other.cell()
            for spec, name, params in parsed:
                row: dict[str, object] = {"scene": n, "object": k, "digit": obj.digit, "method": spec, "found": found}
                if found:
                    result = explain(model, x, target=target, method=name, **params)
                    row.update(_scores(result.relevance, cell, others, bool(params.get("absolute", False))))
                    if n == 0 and k == 0:
                        figure.append(viz.heatmap(result.relevance[0], clip_percentile=99.5, size=4 * CANVAS))
                rows.append(row)
        done = n + 1
        elapsed = time.monotonic() - start
        left = elapsed / done * (scenes - done)
        print(f"scene {done}/{scenes}  {done / elapsed:.2f} scenes/s, about {left:.0f} s left", flush=True)
    _write_figure(test, predicted, figure, [spec for spec, _, _ in parsed], out / "scene.png")
    return rows


def _labels_image(labels: torch.Tensor) -> Image.Image:
    return Image.fromarray(PALETTE[labels.numpy()]).resize((4 * CANVAS, 4 * CANVAS), Image.Resampling.NEAREST)


def _write_figure(
    test: Scene, predicted: torch.Tensor, heatmaps: list[Image.Image], specs: list[str], path: Path
) -> None:
    picture = viz.to_image(test.images[0])
    cells = [[picture, _labels_image(test.labels[0]), _labels_image(predicted[0]), *heatmaps]]
    titles = ["input", "labels", "prediction", *[spec.split(",")[0] for spec in specs][: len(heatmaps)]]
    sheet = viz.grid(cells, column_titles=titles, cell_size=4 * CANVAS)
    write_atomic(path, lambda p: sheet.save(p, format="PNG"))


def summarise(rows: list[dict[str, object]], specs: list[str]) -> str:
    """A Markdown table: mean ± standard error per method and metric, and the share of objects ≥ 80 %."""
    lines = [
        "| method | " + " | ".join(METRICS) + f" | objects ≥ {THRESHOLD:.0%} in cell |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for spec in specs:
        found = [r for r in rows if r["method"] == spec and r["found"]]
        cells = []
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in found])  # type: ignore[arg-type]
            se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.3f} ± {se:.3f}")
        passed = np.mean([float(r["mass in cell"]) >= THRESHOLD for r in found])  # type: ignore[arg-type]
        lines.append(f"| `{spec}` | " + " | ".join(cells) + f" | {passed:.0%} |")
    total = {(r["scene"], r["object"]) for r in rows}
    detected = {(r["scene"], r["object"]) for r in rows if r["found"]}
    lines.append("")
    lines.append(
        f"({len(detected)} of {len(total)} objects in {len({r['scene'] for r in rows})} test scenes are predicted "
        "somewhere in their cell and explained; mean ± standard error over them.)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=60, help="number of test scenes (3 digits each)")
    parser.add_argument("--methods", default=";".join(METHODS), help="method specs separated by ';'")
    parser.add_argument("--out", type=Path, default=ROOT / "evaluation" / "digit_scenes")
    parser.add_argument("--no-report", action="store_true", help="do not update EVALUATION.md")
    args = parser.parse_args(argv)
    specs = [spec.strip() for spec in args.methods.split(";") if spec.strip()]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.scenes, specs, args.out)
    fields = ["scene", "object", "digit", "method", "found", *METRICS]
    write_atomic(args.out / "objects.csv", lambda p: _write_csv(p, fields, rows))
    table = summarise(rows, specs)
    command = "python scripts/dense_evaluation.py" + ("" if args.scenes == 60 else f" --scenes {args.scenes}")
    results = f"Command: `{command}` (digits {DIGIT_SIZE}×{DIGIT_SIZE} on a {CANVAS}×{CANVAS} canvas)\n\n{table}\n"
    write_atomic(args.out / "results.md", lambda p: p.write_text(results, encoding="utf-8"))
    print(table)
    if not args.no_report:
        report = ROOT / "EVALUATION.md"
        text = replace_generated(report.read_text(encoding="utf-8"), "digit-scenes", table)
        write_atomic(report, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"updated {report}")


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


if __name__ == "__main__":
    main()
