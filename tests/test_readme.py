"""The README's commands and quick start are true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    head = README.split("---", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_readme_starts_with_exactly_two_setup_commands_into_dot_venv() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    main_job, tests = commands
    for command in commands:
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert "relprop demo" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci


def test_quick_start_runs_as_written() -> None:
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12
    namespace: dict[str, object] = {}
    exec(compile(code, "README quick start", "exec"), namespace)
    result = namespace["result"]
    assert result.relevance.shape == (4, 1, 8, 8)  # type: ignore[attr-defined]
