"""The Clever-Hans experiment end to end (trains a model: about a minute, hence heavy)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


@pytest.mark.heavy
def test_the_planted_mark_is_used_and_found(tmp_path: Path) -> None:
    import clever_hans

    clever_hans.main(["--out", str(tmp_path)])
    summary = json.loads((tmp_path / "results.json").read_text())
    hans, control = summary["reliance"]["Clever-Hans model"], summary["reliance"]["clean model (control)"]
    called = "other digits called 3 (with mark)"
    assert hans[called] > 0.3 and control[called] < 0.05
    assert hans["accuracy (no mark)"] > 0.97
    mass = summary["relevance_on_mark"]
    for spec in clever_hans.LRP_METHODS:
        found = mass["Clever-Hans model"][spec]["mass accuracy"][0]
        ignored = mass["clean model (control)"][spec]["mass accuracy"][0]
        assert found > 2 * ignored and found > 0.25, spec
    random = mass["Clever-Hans model"]["random"]["mass accuracy"][0]
    assert abs(random - 4 / 64) < 0.02
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
