"""``relprop evaluate`` with a reference input: the ``dataset-mean`` replacement and method parameter value."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from click.testing import CliRunner

import relprop
from relprop import metrics as M
from relprop.evaluate import EvaluationData, EvaluationSettings, evaluate, evaluate_methods, load_data
from relprop.models import digits_test_set, load_digits_model

LRP = "lrp:epsilon-gamma-box,low=0,high=1"


def test_dataset_mean_is_the_data_reference_else_the_mean_of_the_images() -> None:
    model, test = load_digits_model(), digits_test_set()
    x = test.images[:10]
    reference = torch.rand(1, 8, 8)
    settings = EvaluationSettings(replacements=("dataset-mean",))
    relevance = relprop.explain(model, x, composite="epsilon-gamma-box", low=0, high=1).relevance
    for given, expected_reference in ((reference, reference), (None, x.mean(0))):
        data = EvaluationData(x, test.labels[:10], None, "ten digits", given)
        values = evaluate_methods(model, data, [LRP], ["selectivity"], settings).values[LRP]["ABPC (dataset-mean)"]
        expected = M.selectivity(model, x, relevance, M.predicted_class(model, x), replacement=expected_reference).abpc
        torch.testing.assert_close(values, expected.double())


def test_methods_take_the_reference_as_baseline_reference_or_value() -> None:
    model, test = load_digits_model(), digits_test_set()
    x, reference = test.images[:6], test.images[100:200].mean(0)
    data = EvaluationData(x, test.labels[:6], None, "six digits", reference)
    specs = [
        "integrated-gradients:baseline=dataset-mean",
        "deeplift:reference=dataset-mean",
        "occlusion:value=dataset-mean",
    ]
    result = evaluate_methods(model, data, specs, ["conservation"], EvaluationSettings())
    target = M.predicted_class(model, x)
    for spec, (method, key) in zip(
        specs, [("integrated-gradients", "baseline"), ("deeplift", "reference"), ("occlusion", "value")], strict=True
    ):
        explained = relprop.explain(model, x, target, method=method, **{key: reference})
        expected = M.conservation_error(explained.relevance, explained.score)
        torch.testing.assert_close(result.values[spec]["conservation error"], expected.double(), equal_nan=True)


def test_the_command_reads_a_reference_from_the_data_file(tmp_path: Path) -> None:
    test = digits_test_set()
    path = tmp_path / "data.pt"
    reference = test.images.mean(0)
    torch.save({"images": test.images[:8], "labels": test.labels[:8], "reference": reference}, path)
    assert torch.equal(load_data(str(path)).reference, reference)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        evaluate,
        ["--data", str(path), "--methods", LRP, "--metrics", "selectivity", "--replacement", "dataset-mean,zeros",
         "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = [r["metric"] for r in csv.DictReader((out / "results.csv").open())]
    assert "ABPC (dataset-mean)" in metrics and "ABPC (zeros)" in metrics
    result = CliRunner().invoke(evaluate, ["--replacement", "black", "--out", str(out)])
    assert result.exit_code == 2
    assert "choose from zeros, mean, blur, uniform, inpaint, dataset-mean." in result.output
