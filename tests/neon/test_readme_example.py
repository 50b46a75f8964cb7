"""The README's NEON example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_neon_example_runs() -> None:
    block = re.search(r"## Scikit-learn models \(NEON\)\n.*?```python\n(.*?)```", README, re.S)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README NEON example", "exec"), namespace)
    result = namespace["result"]
    assert result.relevance.shape == (178, 13)  # type: ignore[attr-defined]
    assert result.info["feature_names"][0] == "alcohol"  # type: ignore[attr-defined]
