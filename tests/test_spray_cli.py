"""``relprop spray`` through click's test runner, on a .npz file of heatmaps with a planted spot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relprop.cli import main
from spray.test_analysis import planted


@pytest.fixture
def heatmap_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    heatmaps, marked = planted(160, seed=11)
    labels = np.where(np.arange(160) % 2 == 0, 3, 8)
    path = tmp_path / "heatmaps.npz"
    np.savez(path, relevance=heatmaps, labels=labels)
    return path, marked & (labels == 3)


def test_spray_writes_the_report_and_finds_the_spot(tmp_path: Path, heatmap_file: tuple[Path, np.ndarray]) -> None:
    path, marked = heatmap_file
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["spray", str(path), "--class", "3", "--embedding", "pca", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "80 heatmaps" in result.stdout and f"report: {out / 'report.html'}" in result.stdout
    assert "features: 80 heatmaps" in result.stderr  # progress goes to stderr
    document = json.loads((out / "clusters.json").read_text())
    top = [i for i, c in zip(document["samples"]["index"], document["samples"]["cluster"], strict=True) if c == 0]
    assert sorted(top) == np.flatnonzero(marked).tolist()
    assert (out / "eigenvalues.png").read_bytes()[:4] == b"\x89PNG"
    # Existing outputs are kept unless --force.
    again = runner.invoke(main, ["spray", str(path), "--class", "3", "--out", str(out)])
    assert again.exit_code == 2
    assert again.stderr.startswith(f"error: {out / 'report.html'} already exists; pass --force")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "5"], "error: class 5 has no explained sample in {path} (classes present: 3, 8); choose another"),
        (["--layer", "features.0"], "error: {path} holds no relevance for layer 'features.0' (it holds: none);"),
        (["--clusters", "1"], "error: --clusters must be 'auto' or a whole number of at least 2, got '1'"),
        (["--clusters", "200"], "error: class 3 of {path} has 80 heatmaps, too few for 200 clusters"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    tmp_path: Path, heatmap_file: tuple[Path, np.ndarray], args: list[str], message: str
) -> None:
    path, _ = heatmap_file
    base = ["spray", str(path), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, base + (args if "--class" in args else ["--class", "3", *args]))
    assert result.exit_code == 2
    assert result.stderr.startswith(message.format(path=path)), result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "o" / "report.html").exists()


def test_a_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["spray", str(tmp_path / "nothing.npz")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'nothing.npz'} does not exist; give a relevance store folder")


def test_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["spray", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path} is not a relevance store")
    assert len(result.stderr.strip().splitlines()) == 1
