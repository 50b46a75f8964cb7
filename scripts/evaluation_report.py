"""Regenerate every number, table and figure of EVALUATION.md.

    python scripts/evaluation_report.py          # about 5 minutes on one CPU core

1. ``relprop evaluate`` on the 360 held-out digits with the embedded model (``DIGITS_ARGS``),
   writing ``evaluation/digits/`` (results.csv, results.md, pixel_flipping.png, randomisation.png);
2. the Clever-Hans experiment (``scripts/clever_hans.py``), writing ``evaluation/clever_hans/``;
3. the tables between the ``<!-- generated:NAME -->`` markers of EVALUATION.md, from those results.

The prose of EVALUATION.md is written by hand around the markers; read it again after a rerun.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import clever_hans  # noqa: E402

from relprop.evaluate import evaluate, format_cell, write_atomic  # noqa: E402

#: The methods of the report. LRP composites (z^B bounds = the digits' pixel range [0, 1]) and
#: the noise baseline; add the relatives (gradient, integrated-gradients, ...) once they exist.
METHODS = clever_hans.METHODS
DIGITS_ARGS = [
    "--model", "digits",
    "--data", "digits",
    "--methods", ",".join(METHODS),
    "--replacement", "zeros,blur,inpaint",
    "--bounds", "0", "1",
    "--noise-samples", "10",
    "--sigma", "0.05",
    "--seed", "0",
]  # fmt: skip
PROPERTY_FAMILIES = ("conservation", "positivity", "continuity", "randomisation", "complexity")


def table_from_csv(path: Path, families: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> str:
    """A Markdown table (methods × metrics, ``mean ± SE``) from a results.csv of ``relprop evaluate``."""
    with path.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (families is None or r["family"] in families)]
    rows = [r for r in rows if r["family"] not in exclude]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = list(dict.fromkeys((r["metric"], r["better"]) for r in rows))
    arrows = {"higher": " ↑", "lower": " ↓", "-": ""}
    cells = {(r["method"], r["metric"]): format_cell(float(r["mean"]), float(r["se"]), int(r["n"])) for r in rows}
    lines = [
        "| method | " + " | ".join(f"{m}{arrows[b]}" for m, b in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for method in methods:
        lines.append(f"| `{method}` | " + " | ".join(cells[(method, m)] for m, _ in metrics) + " |")
    return "\n".join(lines)


def selectivity_table(path: Path) -> str:
    """Pixel flipping: one row per method, AOPC MoRF / LeRF and ABPC per replacement."""
    return table_from_csv(path, families=("selectivity",))


def replace_generated(text: str, name: str, content: str) -> str:
    """Replace what stands between ``<!-- generated:name -->`` and ``<!-- /generated:name -->``."""
    pattern = re.compile(rf"(<!-- generated:{name} -->).*?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: EVALUATION.md has no <!-- generated:{name} --> section")
    return pattern.sub(lambda m: f"{m.group(1)}\n{content}\n{m.group(2)}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-digits", action="store_true", help="reuse evaluation/digits/results.csv")
    parser.add_argument("--skip-clever-hans", action="store_true", help="reuse evaluation/clever_hans/results.md")
    args = parser.parse_args()
    os.chdir(ROOT)  # the recorded command writes to evaluation/digits relative to the repository
    digits_dir = ROOT / "evaluation" / "digits"
    hans_dir = ROOT / "evaluation" / "clever_hans"
    if not args.skip_digits:
        evaluate.main(
            args=[*DIGITS_ARGS, "--out", str(digits_dir.relative_to(ROOT)), "--force", "--title", "Digits"],
            prog_name="relprop evaluate",
            standalone_mode=False,
        )
    if not args.skip_clever_hans:
        clever_hans.main(["--out", str(hans_dir), "--force"])

    report = ROOT / "EVALUATION.md"
    text = report.read_text(encoding="utf-8")
    command = "relprop evaluate " + shlex.join(DIGITS_ARGS)
    text = replace_generated(text, "digits-command", f"    {command} --out evaluation/digits")
    csv_path = digits_dir / "results.csv"
    text = replace_generated(text, "digits-properties", table_from_csv(csv_path, PROPERTY_FAMILIES))
    text = replace_generated(text, "digits-selectivity", selectivity_table(csv_path))
    hans = (hans_dir / "results.md").read_text(encoding="utf-8").strip()
    text = replace_generated(text, "clever-hans", re.sub(r"^## ", "### ", hans, flags=re.M))
    write_atomic(report, lambda p: p.write_text(text, encoding="utf-8"))
    print(f"updated {report}")


if __name__ == "__main__":
    main()
