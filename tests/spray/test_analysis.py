"""analyze_heatmaps end to end on synthetic heatmaps with a planted spot, and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from relprop.errors import AnalysisError
from relprop.spray import analyze_heatmaps


def planted(n: int = 200, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of an 'object' (a blob that moves a little) and, in a fraction, a bright fixed spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    heatmaps = np.empty((n, 1, 16, 16), dtype=np.float32)
    for i in range(n):
        cy, cx = 8 + rng.normal(0, 1.2, 2)
        heatmaps[i, 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8) + rng.normal(0, 0.05, (16, 16))
    marked = rng.random(n) < fraction
    heatmaps[marked, 0, 13:15, 1:3] += 2.5
    return heatmaps, marked


def test_the_planted_spot_is_the_top_cluster() -> None:
    heatmaps, marked = planted()
    ids = np.arange(1000, 1000 + len(heatmaps))
    result = analyze_heatmaps(heatmaps, indices=ids, embedding="pca", seed=0)
    top = np.isin(ids, result.top.members)
    assert np.array_equal(top, marked)
    assert result.chosen_by == "eigengap"
    # The eigengap sits where the clusters end.
    assert np.argmax(result.eigengaps[1:10]) + 2 == result.n_clusters
    # Clusters are numbered by rank, labels agree with members, scores fall.
    assert [c.id for c in result.clusters] == list(range(result.n_clusters))
    assert all(a.score >= b.score for a, b in zip(result.clusters, result.clusters[1:], strict=False))
    for cluster in result.clusters:
        assert np.array_equal(np.sort(ids[result.labels == cluster.id]), np.sort(cluster.members))
        assert result.cluster_of(int(cluster.members[0])) is cluster
    assert sum(c.size for c in result.clusters) == len(heatmaps)


def test_means_and_typical_members() -> None:
    heatmaps, _ = planted(120)
    result = analyze_heatmaps(heatmaps, embedding="none", typical=5)
    flat = heatmaps.reshape(len(heatmaps), -1).astype(np.float64)
    normalised = flat / np.abs(flat).sum(1, keepdims=True)
    for cluster in result.clusters:
        members = normalised[cluster.members]
        np.testing.assert_allclose(cluster.mean_map.ravel(), members.mean(0), rtol=1e-5, atol=1e-9)
        distances = np.linalg.norm(members - members.mean(0), axis=1)
        expected = cluster.members[np.argsort(distances, kind="stable")[:5]]
        assert cluster.typical.tolist() == expected.tolist()
        np.testing.assert_allclose(cluster.typical_maps.reshape(5, -1), normalised[expected], rtol=1e-5, atol=1e-9)
    assert result.embedding_method == "none" and result.embedding.shape == (0, 2)


def test_given_number_of_clusters_and_embedding_subset() -> None:
    heatmaps, _ = planted(150)
    result = analyze_heatmaps(heatmaps, clusters=4, embedding="pca", embed_max=40, seed=3)
    assert result.n_clusters == 4 and result.chosen_by == "given" and len(result.clusters) == 4
    assert result.embedding.shape == (40, 2) and len(set(result.embedding_indices.tolist())) == 40
    assert set(result.embedding_indices.tolist()) <= set(range(150))


def test_layer_relevance_per_channel() -> None:
    rng = np.random.default_rng(2)
    relevance = rng.random((90, 16, 3, 3)).astype(np.float32)
    special = np.arange(90) % 3 == 0
    relevance[special, 5] += 3.0  # one channel carries the planted feature
    result = analyze_heatmaps(relevance, view="channels", embedding="none")
    assert result.map_shape == (16,)
    assert np.array_equal(np.isin(np.arange(90), result.top.members), special)
    assert int(np.argmax(result.top.mean_map)) == 5


def test_too_few_heatmaps_for_the_clusters() -> None:
    with pytest.raises(
        AnalysisError,
        match=r"^the selection has 4 heatmaps, too few for 5 clusters \(at least 5 are needed\); analyse more",
    ):
        analyze_heatmaps(np.ones((4, 8, 8), dtype=np.float32), clusters=5)
    with pytest.raises(AnalysisError, match=r"too few for 10 clusters \(at least 11 are needed\)"):
        analyze_heatmaps(np.ones((6, 8, 8), dtype=np.float32))


def test_empty_selection_and_bad_options() -> None:
    heatmaps = np.ones((30, 8, 8), dtype=np.float32)
    with pytest.raises(AnalysisError, match=r"^the selection is empty: there is no heatmap to analyse\.$"):
        analyze_heatmaps(heatmaps, rows=np.array([], dtype=np.int64))
    with pytest.raises(AnalysisError, match=r"^clusters must be 'auto' or a positive number, got 0\.$"):
        analyze_heatmaps(heatmaps, clusters=0)
    with pytest.raises(AnalysisError, match=r"^unknown embedding 'mds'; choose one of: auto, none, tsne, umap, pca\.$"):
        analyze_heatmaps(heatmaps, embedding="mds")
    with pytest.raises(AnalysisError, match=r"^indices has 3 entries for 30 heatmaps; give one sample id per heatmap"):
        analyze_heatmaps(heatmaps, indices=np.arange(3))
