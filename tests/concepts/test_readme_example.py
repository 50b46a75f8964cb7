"""The README's concepts example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_concepts_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## Concepts: which features carried the decision \(CRP\)\n.*?```python\n(.*?)```", README, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert tuple(namespace["maps"].shape) == (4, 3, 1, 8, 8)  # type: ignore[attr-defined]
    assert len(namespace["result"].concepts) == 4  # type: ignore[attr-defined]
    assert (tmp_path / "concepts.png").read_bytes()[:4] == b"\x89PNG"
