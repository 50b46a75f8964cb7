"""``relprop explain-table`` through click's test runner, on models the tests fit and save."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from relprop.cli import main
from relprop.table_cli import explain_table

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from relprop import neon  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("table")
    wine = load_wine(as_frame=True)
    data = wine.data
    kmeans = make_pipeline(StandardScaler(), KMeans(3, n_init=4, random_state=0)).fit(data)
    labels = wine.target.map({0: "barolo", 1: "grignolino", 2: "barbera"})
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data, labels)
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(data, labels)
    paths = {"kmeans": folder / "kmeans.joblib", "logistic": folder / "logistic.joblib", "forest": folder / "rf.joblib"}
    for name, model in (("kmeans", kmeans), ("logistic", logistic), ("forest", forest)):
        joblib.dump(model, paths[name])
    # The CSV has an id column first and the features in another order than at fit time.
    table = data[list(reversed(data.columns))].iloc[:20].copy()
    table.insert(0, "id", [f"w{i}" for i in range(20)])
    paths["csv"] = folder / "wine.csv"
    table.to_csv(paths["csv"], index=False)
    return {"paths": paths, "kmeans": kmeans, "logistic": logistic, "data": data.iloc[:20]}


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_kmeans_table_writes_relevance_figures_and_summary(files: dict[str, Any], tmp_path: Path) -> None:
    paths = files["paths"]
    out = tmp_path / "out"
    result = CliRunner().invoke(explain_table, [str(paths["kmeans"]), str(paths["csv"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: left out columns the model does not use: id" in result.output
    assert "explained 20 rows with StandardScaler → KMeans (cluster evidence f_c)" in result.output
    header, rows = _read(out / "relevance.csv")
    names = list(files["data"].columns)
    assert header == ["row", "target", "score", *names]  # the model's column order
    expected = neon.explain(files["kmeans"], files["data"])
    values = np.array([[float(v) for v in row[3:]] for row in rows])
    np.testing.assert_allclose(values, expected.relevance.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose([float(r[2]) for r in rows], expected.score.numpy(), rtol=0, atol=0)
    assert [int(r[1]) for r in rows] == expected.target.tolist()
    for image in ("rows.png", "summary.png"):
        assert (out / image).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ledger_closes"] is True and summary["rows"] == 20
    assert list(summary["mean_abs_relevance"]) == sorted(names, key=lambda n: -summary["mean_abs_relevance"][n])
    again = CliRunner().invoke(explain_table, [str(paths["kmeans"]), str(paths["csv"]), "--out", str(out)])
    assert again.exit_code == 2 and "relevance.csv already exists; pass --force" in again.output


def test_classifier_by_label_against_the_mean(files: dict[str, Any], tmp_path: Path) -> None:
    paths = files["paths"]
    args = [str(paths["logistic"]), str(paths["csv"]), "--out", str(tmp_path), "--target", "barbera"]
    result = CliRunner().invoke(explain_table, [*args, "--reference", "mean", "--method", "lrp:lrp-0"])
    assert result.exit_code == 0, result.output
    _, rows = _read(tmp_path / "relevance.csv")
    assert {r[1] for r in rows} == {"barbera"}
    model = files["logistic"]
    x = files["data"].to_numpy()
    c = list(model.classes_).index("barbera")
    closed_form = model[-1].coef_[c] / model[0].scale_ * (x - x.mean(0))
    np.testing.assert_allclose(np.array([[float(v) for v in r[3:]] for r in rows]), closed_form, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("forest", "relprop.neon cannot rewrite RandomForestClassifier; supported estimators are"),
        ("columns", "lacks 1 of the 13 columns the model was fitted with: proline"),
        ("text", "line 3, column 'ash': 'n/a' is not a number; explain-table needs numeric data"),
        ("target", "--target 'chianti' is not 'predicted', an index or one of the classes"),
        ("not-a-model", "cannot load a model from"),
        ("method", "explained with NEON's own rules, which take beta only; drop composite"),
        ("count", "has 12 columns but the model takes 13 features"),
    ],
)
def test_user_errors_are_one_line(files: dict[str, Any], tmp_path: Path, case: str, message: str) -> None:
    paths = files["paths"]
    data = files["data"]
    model, table, extra = paths["kmeans"], tmp_path / "data.csv", []
    frame = data.copy()
    if case == "forest":
        model = paths["forest"]
    elif case == "columns":
        frame = frame.drop(columns="proline")
    elif case == "text":
        frame = frame.astype({"ash": object})
        frame.iloc[1, list(frame.columns).index("ash")] = "n/a"
    elif case == "target":
        model, extra = paths["logistic"], ["--target", "chianti"]
    elif case == "not-a-model":
        model = paths["csv"]
    elif case == "method":
        extra = ["--method", "lrp:epsilon"]
    frame.to_csv(table, index=False, header=case != "count")
    if case == "count":
        np.savetxt(table, data.to_numpy()[:, :12], delimiter=",")
    result = CliRunner().invoke(explain_table, [str(model), str(table), "--out", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_help_warns_that_loading_runs_code_and_the_command_is_registered() -> None:
    result = CliRunner().invoke(main, ["explain-table", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "loading such a file runs code from it. Only load models you trust." in text
    assert "explain-table" in CliRunner().invoke(main, ["--help"]).output
