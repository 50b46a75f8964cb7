"""``relprop evaluate`` through click's CliRunner, and the library function behind it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import relprop
from relprop.evaluate import (
    EvaluationData,
    EvaluationSettings,
    evaluate,
    evaluate_methods,
    format_cell,
    resolve_method,
    split_method_specs,
)
from relprop.models import digits_test_set, load_digits_model
from test_invariance import assert_unchanged, snapshot

LRP = "lrp:epsilon-gamma-box,low=0,high=1"


def run(*args: str) -> object:
    return CliRunner().invoke(evaluate, list(args), catch_exceptions=False)


def test_writes_table_csv_markdown_and_curves(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run(
        "--methods", f"{LRP},lrp:epsilon,epsilon=0.25", "--methods", "random",
        "--metrics", "conservation,positivity,selectivity,randomisation,complexity",
        "--replacement", "zeros,inpaint", "--count", "6", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean ± SE over 6 inputs" in result.output and "ABPC (inpaint)" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "pixel_flipping.png",
        "randomisation.png",
        "results.csv",
        "results.md",
    ]
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    methods = {r["method"] for r in rows}
    assert methods == {LRP, "lrp:epsilon,epsilon=0.25", "random"}
    metrics = [r["metric"] for r in rows if r["method"] == "random"]
    assert metrics == [
        "conservation error", "bias share", "negative share",
        "AOPC MoRF (zeros)", "AOPC LeRF (zeros)", "ABPC (zeros)",
        "AOPC MoRF (inpaint)", "AOPC LeRF (inpaint)", "ABPC (inpaint)",
        "Spearman random model", "SSIM random model", "entropy", "Gini",
    ]  # fmt: skip
    assert all(r["n"] == "6" for r in rows if r["metric"] != "bias share" or r["method"] != "random")
    markdown = (out / "results.md").read_text()
    assert "relprop evaluate --methods" in markdown and "--count 6" in markdown
    assert f"| `{LRP}` |" in markdown
    assert (out / "pixel_flipping.png").read_bytes()[:4] == b"\x89PNG"


def test_refuses_to_overwrite_without_force_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    args = ["--metrics", "positivity", "--count", "3", "--out", str(tmp_path)]
    assert run(*args).exit_code == 0
    before = (tmp_path / "results.csv").read_text()
    again = run(*args)
    assert again.exit_code == 2
    assert "results.csv already exists; pass --force to overwrite it" in again.output
    forced = run(*args, "--methods", "random", "--force")
    assert forced.exit_code == 0
    assert (tmp_path / "results.csv").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.md"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "lrp:no-such-composite"], "unknown composite 'no-such-composite'"),
        (["--methods", "no-such-method"], "unknown method 'no-such-method'"),
        (["--metrics", "beauty"], "unknown metric 'beauty'"),
        (["--metrics", "localisation"], "metric 'localisation' needs ground-truth masks"),
        (["--replacement", "paint"], "--replacement 'paint' is unknown"),
        (["--target", "cat"], "--target must be 'predicted', 'label' or a class index"),
        (["--data", "missing.pt"], "--data 'missing.pt' is neither 'digits' nor an existing"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(*args, "--count", "2", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_data_file_with_masks_gives_localisation_and_a_model_file_loads(tmp_path: Path) -> None:
    test = digits_test_set()
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    torch.save({"images": test.images[:5], "labels": test.labels[:5], "masks": masks}, tmp_path / "data.pt")
    torch.save(load_digits_model().state_dict(), tmp_path / "model.pt")
    result = run(
        "--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data.pt"), "--methods", LRP,
        "--metrics", "localisation", "--target", "label", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text())))
    assert [r["metric"] for r in rows] == ["mass accuracy", "rank accuracy"]
    assert 0 < float(rows[0]["mean"]) <= 1
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    bad = run("--model", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out2"))
    assert bad.exit_code == 2 and "not a state dict of relprop's DigitsCNN" in bad.output


def test_method_specs_split_on_commas_but_keep_parameters() -> None:
    assert split_method_specs(["lrp:epsilon,epsilon=0.25,gradient", "smoothgrad:n=20,sigma=0.1", "random"]) == [
        "lrp:epsilon,epsilon=0.25",
        "gradient",
        "smoothgrad:n=20,sigma=0.1",
        "random",
    ]
    assert resolve_method("lrp:epsilon-gamma-box,low=0,high=1.0,gamma=0.5") == (
        "lrp",
        {"composite": "epsilon-gamma-box", "low": 0, "high": 1.0, "gamma": 0.5},
    )
    assert resolve_method("random") == ("random", {})
    with pytest.raises(relprop.ConfigurationError, match="'n20'"):
        resolve_method("smoothgrad:n20")


def test_library_function_on_a_tensor_dataset() -> None:
    test = digits_test_set()
    data = EvaluationData(test.images[:10], test.labels[:10], name="ten digits")
    settings = EvaluationSettings(replacements=("blur",), batch_size=4, noise_samples=2)
    model = load_digits_model()
    before = snapshot(model)
    result = evaluate_methods(
        model, data, [LRP, "random"], ["continuity", "selectivity", "randomisation"], settings=settings
    )
    assert_unchanged(model, before)
    assert result.n_inputs == 10
    for spec in (LRP, "random"):
        assert all(v.shape == (10,) for v in result.values[spec].values())
        assert result.curves[spec][("blur", "morf")].shape == (65,)
    assert result.summary(LRP, "ABPC (blur)")[0] > result.summary("random", "ABPC (blur)")[0]
    assert result.summary(LRP, "local Lipschitz")[0] < result.summary("random", "local Lipschitz")[0]
    with pytest.raises(relprop.ConfigurationError, match="data 'bad': 3 images, 2 labels"):
        EvaluationData(test.images[:3], test.labels[:2], name="bad")


def test_a_methods_numbers_do_not_depend_on_the_other_methods() -> None:
    test = digits_test_set()
    data = EvaluationData(test.images[:6], test.labels[:6])
    settings = EvaluationSettings(replacements=("uniform",), noise_samples=2, batch_size=3)
    model = load_digits_model()
    alone = evaluate_methods(model, data, [LRP], ["continuity", "selectivity"], settings)
    together = evaluate_methods(model, data, ["random", LRP], ["continuity", "selectivity"], settings)
    for title, values in alone.values[LRP].items():
        torch.testing.assert_close(values, together.values[LRP][title], rtol=0, atol=0, equal_nan=True)


def test_cells_round_to_the_standard_error() -> None:
    assert format_cell(0.123456, 0.0123, 50) == "0.123 ± 0.012"
    assert format_cell(17.18, 0.31, 360) == "17.18 ± 0.31"
    assert format_cell(3e-9, 2e-10, 360) == "3.00e-09 ± 2.0e-10"
    assert format_cell(0.5, 0.0, 10) == "0.5"
    assert format_cell(float("nan"), float("nan"), 0) == "n/a"


def test_reported_means_standard_errors_and_curves_match_the_metric_functions(tmp_path: Path) -> None:
    """The numbers EVALUATION.md is made of: each CSV mean is the mean of the metric function's per-input
    values, its SE is std/√n (not std/n), and the MoRF and LeRF curves are not swapped."""
    import math

    import numpy as np

    from relprop import metrics

    out = tmp_path / "report"
    result = run(
        "--methods", LRP, "--metrics", "positivity,selectivity,complexity", "--replacement", "zeros",
        "--count", "6", "--batch-size", "4", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}

    model = load_digits_model()
    images = digits_test_set().images[:6]
    per_input: dict[str, list[torch.Tensor]] = {}
    curves: dict[str, list[torch.Tensor]] = {"morf": [], "lerf": []}
    for batch in (images[:4], images[4:]):  # the command's batches, so that every call is the same
        target = metrics.predicted_class(model, batch)
        relevance = relprop.explain(model, batch, target, composite="epsilon-gamma-box", low=0, high=1).relevance
        flips = metrics.selectivity(model, batch, relevance, target, replacement="zeros")
        for title, values in {
            "negative share": metrics.negative_share(relevance),
            "AOPC MoRF (zeros)": flips.morf.aopc,
            "AOPC LeRF (zeros)": flips.lerf.aopc,
            "ABPC (zeros)": flips.lerf.auc - flips.morf.auc,
            "entropy": metrics.entropy(relevance),
            "Gini": metrics.gini(relevance),
        }.items():
            per_input.setdefault(title, []).append(values)
        curves["morf"].append(flips.morf.scores)
        curves["lerf"].append(flips.lerf.scores)
    assert set(per_input) == set(rows)
    for title, chunks in per_input.items():
        values = torch.cat(chunks).double().numpy()
        assert len(values) == 6 and int(rows[title]["n"]) == 6
        assert float(rows[title]["mean"]) == pytest.approx(values.mean(), rel=1e-8, abs=1e-12), title
        assert float(rows[title]["se"]) == pytest.approx(values.std(ddof=1) / math.sqrt(6), rel=1e-8, abs=1e-12)
    markdown = (out / "results.md").read_text()
    for title in per_input:
        row = rows[title]
        assert format_cell(float(row["mean"]), float(row["se"]), 6) in markdown

    library = evaluate_methods(
        model, EvaluationData(images, digits_test_set().labels[:6]), [LRP], ["selectivity"],
        EvaluationSettings(batch_size=4),
    )  # fmt: skip
    for order in ("morf", "lerf"):
        expected = torch.cat(curves[order]).double().mean(0)
        torch.testing.assert_close(library.curves[LRP][("zeros", order)], expected, rtol=1e-12, atol=1e-12)
    morf, lerf = (library.curves[LRP][("zeros", o)] for o in ("morf", "lerf"))
    assert morf[-1] == lerf[-1] and (lerf[1:-1] > morf[1:-1]).float().mean() > 0.9  # LeRF stays high: not swapped
    np.testing.assert_allclose(library.fractions.numpy(), np.arange(65) / 64)
