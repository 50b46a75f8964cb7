"""The README's SpRAy example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_spray_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## Finding Clever Hans: SpRAy\n.*?```python\n(.*?)```", README, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    code = block.group(1).replace("analyze_heatmaps(relevance)", "analyze_heatmaps(relevance, embedding='pca')")
    exec(compile(code, "README SpRAy example", "exec"), namespace)  # (t-SNE would only add time)
    result = namespace["result"]
    assert len(result.indices) == 37  # type: ignore[attr-defined]
    assert (tmp_path / "spray-out" / "report.html").read_text().startswith("<!DOCTYPE html>")
