"""scripts/tune_report.py end to end in its --quick smoke mode, and the texture model it trains (heavy)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.mark.heavy
def test_the_report_fills_every_marker_and_checks_its_held_out_scores(tmp_path: Path) -> None:
    import tune_report

    report = tmp_path / "EVALUATION.md"
    shutil.copy(ROOT / "EVALUATION.md", report)
    tune_report.main(["--quick", "--only", "digits", "--out", str(tmp_path / "out"), "--report", str(report)])
    results = json.loads((tmp_path / "out" / "digits.json").read_text())
    assert [e["experiment"] for e in results["experiments"]] == [
        *(f"pixel flipping, {r}" for r in tune_report.REPLACEMENTS),
        "localisation of the mark, class 3",
    ]
    # Each experiment searches plain LRP and the reference its replacement names (relprop.tuning.default_references).
    assert [e["references"] for e in results["experiments"]] == [
        [None, "zeros"], [None, "dataset-mean"], [None, "blur"], [None], [None], [None]
    ]  # fmt: skip
    first = results["experiments"][0]
    assert first["methods"]["Integrated Gradients (matching baseline)"]["spec"] == "integrated-gradients:baseline=zeros"
    text = report.read_text()
    summary = text.split("<!-- generated:tuning-digits-summary -->")[1].split("<!-- /generated")[0]
    assert summary.count("\n| digits CNN") == 6


@pytest.mark.heavy
def test_the_texture_model_learns_and_uses_its_planted_mark() -> None:
    import textures
    import torch

    x_train, y_train, x_test, y_test = textures.patches(0)
    assert x_train.shape == (3600, 1, 16, 16) and x_test.shape == (600, 1, 16, 16)
    model = textures.train(x_train, y_train)
    assert textures.accuracy(model, x_test, y_test) > 0.9
    hans = textures.train(x_train, y_train, marked_class=0)
    others = y_test != 0
    with torch.no_grad():
        called = float((hans(textures.plant(x_test[others])).argmax(1) == 0).float().mean())
        control = float((model(textures.plant(x_test[others])).argmax(1) == 0).float().mean())
    assert called > 0.2 and control < 0.05
