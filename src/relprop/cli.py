"""The ``relprop`` command line.

``relprop demo`` explains real test digits with the embedded default model and writes a
contact sheet comparing LRP-0, LRP-ε, LRP-γ and the epsilon-gamma-box composite (the
comparison of the seeds), plus a JSON summary with each explanation's conservation ledger.

User errors (a missing file, an unknown name, an existing output) print one line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from . import composites as _composites
from . import rules as _rules
from .engine import Explainer
from .errors import RelpropError

__all__ = ["main"]

DEMO_COMPOSITES: list[tuple[str, str, dict[str, Any]]] = [
    # ASCII titles: PIL's built-in font has no Greek letters.
    ("LRP-0", "lrp-0", {}),
    ("LRP-eps 0.25", "epsilon", {"epsilon": 0.25}),
    ("LRP-gamma 0.25", "gamma", {"gamma": 0.25}),
    ("eps-gamma-box", "epsilon-gamma-box", {"epsilon": 0.25, "gamma": 0.25, "low": 0.0, "high": 1.0}),
]


class UserError(click.ClickException):
    """A mistake in the command's input: one line, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def write_atomic(path: Path, write: Callable[[Path], None], force: bool) -> None:
    """Write through a temporary file in the same folder and rename it into place.

    An interrupted run leaves no partial file; an existing file is kept unless ``force``.
    """
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it or choose another --out folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relprop")
def main() -> None:
    """Explain neural-network predictions with Layer-wise Relevance Propagation."""


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-demo"),
    show_default=True,
    help="Folder for the contact sheet and summary.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 360),
    default=10,
    show_default=True,
    help="How many test digits to explain (one per class first).",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def demo(out_dir: Path, count: int, force: bool) -> None:
    """Explain real test digits with the embedded model; write a contact sheet and a summary."""
    from . import viz
    from .models.digits import digits_test_set, load_digits_model

    model = load_digits_model()
    test = digits_test_set()
    # One digit of each class first, then the rest in order: every class is shown.
    first_of_class = [int((test.labels == c).nonzero()[0]) for c in range(10)]
    order = first_of_class + [i for i in range(len(test.labels)) if i not in first_of_class]
    chosen = order[:count]
    x = test.images[chosen]
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    rows: list[list[Any]] = [[viz.to_image(img)] for img in x]
    summary: list[dict[str, Any]] = [
        {
            "test_index": int(i),
            "dataset_index": int(test.indices[i]),
            "label": int(test.labels[i]),
            "predicted": int(probabilities[k].argmax()),
            "probability": round(float(probabilities[k].max()), 6),
            "explanations": {},
        }
        for k, i in enumerate(chosen)
    ]
    for title, name, params in DEMO_COMPOSITES:
        result = Explainer(model, name, **params)(x)
        for k in range(len(chosen)):
            rows[k].append(viz.heatmap(result.relevance[k]))
            ledger = result.ledger
            summary[k]["explanations"][name] = {
                "title": title,
                "params": params,
                "explained_score": float(ledger.score[k]),
                "input_relevance": float(ledger.input_relevance[k]),
                "absorbed": float(ledger.absorbed[k]),
                "residual": float(ledger.residual[k]),
            }
    row_titles = [f"{s['label']}->{s['predicted']}" for s in summary]
    sheet = viz.grid(rows, column_titles=["input"] + [t for t, _, _ in DEMO_COMPOSITES], row_titles=row_titles)
    sheet_path = out_dir / "contact_sheet.png"
    summary_path = out_dir / "summary.json"
    for path in (sheet_path, summary_path):
        if path.exists() and not force:
            raise UserError(f"{path} already exists; pass --force to overwrite it or choose another --out folder")
    write_atomic(sheet_path, lambda p: sheet.save(p, format="PNG"), force=True)
    document = {"model": "digits (embedded)", "composites": [n for _, n, _ in DEMO_COMPOSITES], "digits": summary}
    write_atomic(summary_path, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    click.echo(f"explained {len(chosen)} test digits with {len(DEMO_COMPOSITES)} rules")
    click.echo(f"contact sheet: {sheet_path}")
    click.echo(f"summary:       {summary_path}")


@main.command("composites")
def list_composites() -> None:
    """List the named composites with their parameters."""
    for name, description, params in _composites.describe():
        click.echo(f"{name:<26} {description}")
        click.echo(f"{'':<26} parameters: {', '.join(params)}")


@main.command("rules")
def list_rules() -> None:
    """List the rules with the operations they apply to."""
    for name in _rules.__all__:
        cls = getattr(_rules, name)
        if isinstance(cls, type) and issubclass(cls, _rules.Rule) and cls not in (_rules.Rule, _rules.LinearRule):
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            kinds = ", ".join(sorted(cls.kinds))
            click.echo(f"{name:<26} {doc}")
            click.echo(f"{'':<26} applies to: {kinds}")


def run() -> None:
    """Entry point that turns relprop's own errors into one-line messages."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RelpropError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
