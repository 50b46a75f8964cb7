"""The README's "Explaining a data set" example runs as written and its numbers are the store's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from .support import ROOT


def test_readme_dataset_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Explaining a data set", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README dataset example", "exec"), namespace)
    store, sevens = namespace["store"], namespace["sevens"]
    assert store.counts() == {"pending": 0, "ok": 360, "failed": 0}  # type: ignore[attr-defined]
    assert len(sevens) > 20  # type: ignore[arg-type]
    np.testing.assert_allclose(namespace["mean_map"], store.relevance[sevens].mean(0))  # type: ignore[attr-defined]
    assert (tmp_path / "digits.zarr" / "zarr.json").is_file()
