"""``relprop explain-table``: relevance per row and feature of a scikit-learn model on a CSV table.

The command object :data:`explain_table` is registered on the ``relprop`` group by
:mod:`relprop.cli`. The model is rewritten as a network by :mod:`relprop.neon` and explained
with NEON's rules (k-means, one-class SVM, kernel density) or relprop's engine (linear models,
MLPs). Needs the ``neon`` extra (scikit-learn, joblib, matplotlib).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from .clitools import UserError, refuse_overwrite, write_atomic
from .errors import RelpropError, first_line

__all__ = ["explain_table", "read_table"]

OUTPUTS = ("relevance.csv", "rows.png", "summary.png", "summary.json")


def _load_model(path: Path) -> Any:
    try:
        import joblib
    except ImportError:
        raise UserError("explain-table needs joblib and scikit-learn; run pip install relprop[neon]") from None
    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling can fail in any way: report it on one line
        reason = first_line(exc)
        reason = reason if len(reason) <= 100 else reason[:97] + "..."
        raise UserError(f"cannot load a model from {path} (not a joblib/pickle file of a model?): {reason}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: Path, model: Any) -> tuple[np.ndarray, list[str], list[str]]:
    """The model's columns of a CSV file as float64, their names, and the CSV columns left out.

    A first row with a non-numeric cell is the header. With a header and a model that knows its
    feature names, those columns are taken (in the model's order) and others are left out;
    otherwise the file must have exactly as many columns as the model has features.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path} as CSV: {first_line(exc)}") from None
    if not rows:
        raise UserError(f"{path} is empty; it needs a header row and at least one row of numbers")
    header = None if all(_is_number(cell) for cell in rows[0]) else [cell.strip() for cell in rows[0]]
    body = rows[1:] if header is not None else rows
    width = len(rows[0])
    if not body:
        raise UserError(f"{path} has a header but no rows to explain")
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise UserError(f"{path}, line {number}: {len(row)} cells where the first line has {width}")
    expected = getattr(model, "feature_names_in_", None)
    wanted = getattr(model, "n_features_in_", None)
    if header is not None and expected is not None:
        expected = [str(n) for n in expected]
        missing = [n for n in expected if n not in header]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UserError(
                f"{path} lacks {len(missing)} of the {len(expected)} columns the model was fitted with: "
                f"{', '.join(missing[:5])}{more}"
            )
        used = [header.index(n) for n in expected]
    else:
        if wanted is not None and width != wanted:
            raise UserError(f"{path} has {width} columns but the model takes {wanted} features; pass the same columns")
        used = list(range(width))
    names = [header[i] if header else (str(expected[i]) if expected is not None else f"x{i}") for i in used]
    values = np.empty((len(body), len(used)))
    for r, row in enumerate(body):
        for c, i in enumerate(used):
            try:
                values[r, c] = float(row[i])
            except ValueError:
                line = r + (2 if header else 1)
                raise UserError(
                    f"{path}, line {line}, column {names[c]!r}: {row[i]!r} is not a number; explain-table needs "
                    "numeric data (encode categorical columns first)"
                ) from None
            if not math.isfinite(values[r, c]):
                raise UserError(f"{path}, line {r + (2 if header else 1)}, column {names[c]!r}: missing or infinite")
    left_out = [header[i] for i in range(width) if i not in used] if header else []
    return values, names, left_out


def _target(text: str, network: Any) -> Any:
    """``predicted`` → None; a class label of the classifier → its index; else an integer index."""
    if text == "predicted":
        return None
    classes = getattr(network, "classes", None)
    if classes is not None:
        labels = [str(c) for c in classes]
        if text in labels:
            return labels.index(text)
        valid = f"'predicted', an index or one of the classes {', '.join(labels)}"
    else:
        valid = "'predicted' or an index"
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--target {text!r} is not {valid}") from None


def _method_options(spec: str | None) -> dict[str, Any]:
    if spec is None:
        return {}
    from . import methods

    name, params = methods.resolve(spec)
    return {"composite": params.pop("composite", None), **params} if name == "lrp" else {"method": name, **params}


def _write_outputs(out: Path, result: Any, values: np.ndarray, names: list[str], rows: int, top: int) -> None:
    from .neon import plots

    relevance = result.relevance.numpy()
    score = result.score.numpy()
    target = result.target.numpy()
    classes = result.info.get("classes")
    label = [str(classes[t]) if classes else str(int(t)) for t in target]

    def write_csv(path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "target", "score", *names])
            for r in range(len(relevance)):
                writer.writerow([r, label[r], repr(float(score[r])), *(repr(float(v)) for v in relevance[r])])

    write_atomic(out / "relevance.csv", write_csv)
    shown = min(rows, len(relevance))
    titles = [f"row {r}: score {score[r]:.3g}, target {label[r]}" for r in range(shown)]
    figure = plots.row_bars(relevance[:shown], names, titles, top)
    write_atomic(out / "rows.png", lambda p: plots.save(figure, p))
    figure = plots.summary(relevance, values, names)
    write_atomic(out / "summary.png", lambda p: plots.save(figure, p))
    mean_abs = np.abs(relevance).mean(0)
    order = np.argsort(-mean_abs)
    summary = {
        "estimator": result.info["estimator"],
        "score": result.info["score_name"],
        "rows": len(relevance),
        "ledger_closes": bool(result.ledger.closes(rtol=1e-8)),
        "mean_abs_relevance": {names[i]: float(mean_abs[i]) for i in order},
        "targets": {t: label.count(t) for t in sorted(set(label))},
    }
    text = json.dumps(summary, indent=2) + "\n"

    def write_json(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    write_atomic(out / "summary.json", write_json)


@click.command("explain-table")
@click.argument("model_path", metavar="MODEL.joblib", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data_path", metavar="DATA.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", default="predicted", show_default=True, help="'predicted', a class label, or an index.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-table"),
    show_default=True,
    help="Folder for relevance.csv, rows.png, summary.png and summary.json.",
)
@click.option("--method", "spec", default=None, help="Linear models and MLPs: e.g. 'lrp:lrp-0', 'deeplift'.")
@click.option("--reference", type=click.Choice(["none", "mean"]), default="none", show_default=True,
              help="Linear models and MLPs: explain f(x) - f(mean of the rows).")  # fmt: skip
@click.option("--beta", type=float, default=None, help="k-means, one-class SVM, KDE: soft-min stiffness.")
@click.option("--rows", type=click.IntRange(1, 60), default=6, show_default=True, help="Rows in rows.png.")
@click.option("--top", type=click.IntRange(1, 100), default=8, show_default=True, help="Features per row chart.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def explain_table(
    model_path: Path,
    data_path: Path,
    target: str,
    out_dir: Path,
    spec: str | None,
    reference: str,
    beta: float | None,
    rows: int,
    top: int,
    force: bool,
) -> None:
    """Explain a scikit-learn model (MODEL.joblib) on the rows of DATA.csv, per feature.

    Supported: KMeans, MiniBatchKMeans, OneClassSVM (RBF), KernelDensity (Gaussian), linear
    models (LogisticRegression, LinearSVC, Ridge, RidgeClassifier, LinearRegression, ...) and
    MLPClassifier/MLPRegressor, alone or after scalers in a Pipeline. DATA.csv has a header row
    naming the model's features (other columns are left out) and numeric values.

    Security: MODEL.joblib is loaded with joblib (pickle), and loading such a file runs code
    from it. Only load models you trust.
    """
    refuse_overwrite([out_dir / name for name in OUTPUTS], force)
    model = _load_model(model_path)
    try:
        from . import neon

        network = neon.neuralize(model)
        values, names, left_out = read_table(data_path, model)
        options = _method_options(spec)
        result = neon.explain(
            model,
            values,
            _target(target, network),
            feature_names=names,
            reference=None if reference == "none" else "mean",
            beta=beta,
            **options,
        )
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    except ImportError as exc:
        raise UserError(f"explain-table needs {exc.name}; run pip install relprop[neon]") from None
    if left_out:
        click.echo(f"note: left out columns the model does not use: {', '.join(left_out)}", err=True)
    try:
        _write_outputs(out_dir, result, values, names, rows, top)
    except ImportError as exc:
        raise UserError(f"explain-table needs {exc.name} for its figures; run pip install relprop[neon]") from None
    mean_abs = np.abs(result.relevance.numpy()).mean(0)
    leading = ", ".join(f"{names[i]} {mean_abs[i]:.3g}" for i in np.argsort(-mean_abs)[:5])
    click.echo(f"explained {len(values)} rows with {result.info['estimator']} ({result.info['score_name']})")
    click.echo(f"most relevant features (mean |relevance|): {leading}")
    click.echo(f"wrote {', '.join(str(out_dir / n) for n in OUTPUTS)}")
