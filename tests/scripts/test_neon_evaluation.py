"""scripts/neon_evaluation.py runs end to end on a tiny setting and rewrites only its own report sections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

pytest.importorskip("sklearn")
pytest.importorskip("shap")
pytest.importorskip("matplotlib")


def test_tiny_run_writes_results_curves_and_report_sections(tmp_path: Path) -> None:
    import neon_evaluation

    report = tmp_path / "EVALUATION.md"
    before = "# Evaluation\n\nkept text\n"
    markers = "<!-- generated:neon-faithfulness -->\nold\n<!-- /generated:neon-faithfulness -->\n\n"
    markers += "<!-- generated:neon-kmeans -->\nold\n<!-- /generated:neon-kmeans -->\n"
    markers += "<!-- generated:neon-svm -->\nold\n<!-- /generated:neon-svm -->\n"
    report.write_text(before + markers, encoding="utf-8")
    # Permutation SHAP is left out here: shap compiles its numba kernels on first use (~20 s).
    args = ["--rows", "2", "--datasets", "wine", "--nsamples", "60", "--draws", "3"]
    args += ["--comparators", "kernel-shap,occlusion,permutation"]
    results = neon_evaluation.main([*args, "--out", str(tmp_path / "out"), "--report", str(report)])
    names = [ev["setup"] for ev in results["faithfulness"]]
    assert names == ["wine · k-means (3 clusters)", "wine · logistic regression"]
    methods = results["faithfulness"][1]["methods"]
    # With the training mean as reference, NEON on a linear model gives w ⊙ (x - mean), which is also what
    # occlusion by the mean measures there: the same order, the same curve.
    assert methods["neon (vs mean)"]["mean_curve"] == pytest.approx(methods["occlusion"]["mean_curve"])
    assert methods["neon (vs mean)"]["pearson_with_kernel_shap"] > 0.9
    assert set(methods) == {"neon", "neon (vs mean)", "kernel-shap", "occlusion", "permutation", "random"}
    uses = results["uses"]
    assert sum(c["rows"] for c in uses["kmeans_wine"]["clusters"]) == 178
    assert uses["kmeans_wine"]["ledger_closes"] and uses["svm_cancer"]["ledger_closes"]
    assert uses["svm_cancer"]["outliers"] > 0
    text = report.read_text(encoding="utf-8")
    assert text.startswith(before) and "old" not in text
    assert "| `neon (vs mean)` |" in text and "| cluster | rows (wine cultivars) |" in text
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["faithfulness"][0]["rows"] == 2
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"
