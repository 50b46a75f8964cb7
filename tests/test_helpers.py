"""The test helpers themselves: oracles are skipped locally when missing but fail in CI."""

from __future__ import annotations

import pytest

import helpers

MISSING = "relprop_no_such_oracle_module"


def test_missing_oracle_is_skipped_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        helpers.require(MISSING)


@pytest.mark.parametrize("value", ["true", "1", "True"])
def test_missing_oracle_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    outcome = "returned"
    try:
        helpers.require(MISSING)
    except pytest.skip.Exception:
        outcome = "skipped"  # caught here: a skip raised out of the test would pass unnoticed
    except pytest.fail.Exception as failure:
        outcome = str(failure)
    assert outcome.startswith(f"{MISSING} is required in CI"), outcome


@pytest.mark.parametrize("value", ["true", ""])
def test_installed_module_is_returned(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert helpers.require("json").dumps([1]) == "[1]"
