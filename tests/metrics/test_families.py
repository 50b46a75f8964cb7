"""The metric-family registry behind ``relprop evaluate``: built-ins in report order, and a family
registered by a user is measured like a built-in one, without touching ``relprop.evaluate``."""

from __future__ import annotations

import pytest
import torch

import relprop
from relprop.evaluate import METRICS, EvaluationData, evaluate_methods
from relprop.metrics import families
from relprop.metrics.families import Measurement, MetricBatch
from relprop.models import digits_test_set, load_digits_model

LRP = "lrp:epsilon,epsilon=0.25"


def test_builtin_families_are_listed_in_report_order() -> None:
    assert families.names()[: len(METRICS)] == list(METRICS) == [
        "conservation", "positivity", "continuity", "selectivity", "localisation", "randomisation", "complexity",
    ]  # fmt: skip
    assert all(description for _, description in families.describe())
    assert [c.title for c in families.get("selectivity").columns(relprop.evaluate.EvaluationSettings(
        replacements=("zeros", "blur")))] == [
        "AOPC MoRF (zeros)", "AOPC LeRF (zeros)", "ABPC (zeros)", "AOPC MoRF (blur)", "AOPC LeRF (blur)", "ABPC (blur)",
    ]  # fmt: skip
    with pytest.raises(relprop.ConfigurationError, match=r"unknown metric 'beauty'; choose from conservation, "):
        families.get("beauty")


def test_a_registered_family_is_measured_per_input(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def peak(batch: MetricBatch) -> Measurement:
        seen.append(len(batch.inputs))
        return Measurement({"peak |R|": batch.relevance.flatten(1).abs().amax(1)})

    family = families.MetricFamily("peak", "largest |R|", [("peak |R|", None)], peak)
    monkeypatch.setitem(families._REGISTRY, "peak", family)
    test = digits_test_set()
    data = EvaluationData(test.images[:5], test.labels[:5])
    model = load_digits_model()
    settings = relprop.evaluate.EvaluationSettings(batch_size=2)
    result = evaluate_methods(model, data, [LRP], ["peak", "positivity"], settings)
    assert [c.title for c in result.columns] == ["negative share", "peak |R|"]  # registration order
    assert seen == [2, 2, 1]  # once per batch, after the probe
    direct = relprop.explain(model, data.images, composite="epsilon", epsilon=0.25).relevance
    torch.testing.assert_close(
        result.values[LRP]["peak |R|"], direct.flatten(1).abs().amax(1).double(), rtol=1e-5, atol=0
    )


def test_a_family_that_needs_masks_is_refused_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    def inside(batch: MetricBatch) -> Measurement:
        raise AssertionError("never measured without masks")

    monkeypatch.setitem(families._REGISTRY, "inside", families.MetricFamily("inside", "x", [("x", True)], inside, True))
    test = digits_test_set()
    with pytest.raises(relprop.ConfigurationError, match="metric 'inside' needs ground-truth masks, and data 'd'"):
        evaluate_methods(
            load_digits_model(), EvaluationData(test.images[:2], test.labels[:2], name="d"), [LRP], ["inside"]
        )
