"""report.html, clusters.json and the PNGs: complete, consistent with the result, self-contained."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from relprop.spray import analyze_heatmaps, write_report

from .test_analysis import planted


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    heatmaps, _ = planted(120, seed=2)
    return analyze_heatmaps(heatmaps, indices=np.arange(500, 620), embedding="pca")


def test_files_and_json_agree_with_the_result(tmp_path: Path, result) -> None:  # type: ignore[no-untyped-def]
    written = write_report(result, tmp_path, title="planted <spot>", highlight=result.top.members[:3])
    names = {p.name for p in written}
    assert {"report.html", "clusters.json", "eigenvalues.png", "embedding.png"} <= names
    assert {f"cluster_{c.id}.png" for c in result.clusters} <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((tmp_path / "clusters.json").read_text())
    assert document["samples"]["index"] == result.indices.tolist()
    assert document["samples"]["cluster"] == result.labels.tolist()
    assert document["eigenvalues"] == pytest.approx(result.eigenvalues.tolist())
    assert [c["size"] for c in document["clusters"]] == [c.size for c in result.clusters]
    assert [c["rank"] for c in document["clusters"]] == list(range(result.n_clusters))
    assert document["clusters"][0]["typical"] == result.top.typical.tolist()
    assert np.allclose(np.array(document["clusters"][0]["mean_map"]), result.top.mean_map, atol=1e-7)
    assert len(document["embedding"]["xy"]) == len(document["embedding"]["index"]) == 120
    assert document["params"]["neighbors"] == 10 and document["n_clusters"] == result.n_clusters
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_html_is_self_contained(tmp_path: Path, result) -> None:  # type: ignore[no-untyped-def]
    write_report(result, tmp_path, title="planted <spot>")
    page = (tmp_path / "report.html").read_text()
    assert "<title>planted &lt;spot&gt;</title>" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 + result.n_clusters
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "href=" not in page and "<script" not in page
    assert f"{result.n_clusters} clusters (eigengap)" in page


def test_channel_relevance_gets_bar_charts(tmp_path: Path) -> None:
    relevance = np.random.default_rng(0).random((60, 12)).astype(np.float32)
    channels = analyze_heatmaps(relevance, view="channels", clusters=2, embedding="none")
    written = write_report(channels, tmp_path)
    assert not (tmp_path / "embedding.png").exists()
    assert (tmp_path / "cluster_0.png") in written
    assert "(no embedding)" in (tmp_path / "report.html").read_text()
