"""The sparse spectral pipeline against a brute-force reference: dense affinity, numpy eigendecomposition."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from relprop.errors import AnalysisError
from relprop.spray import spectral
from relprop.spray.spectral import choose_clusters, knn_affinity, laplacian_spectrum, spectral_clusters


def dense_reference(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pairwise distance, the k nearest by sorting, self-tuning weights, the full Laplacian, eigh."""
    x = points.astype(np.float64)
    n = len(x)
    distances = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :k]
    sigma = np.take_along_axis(distances, nearest, 1)[:, -1]
    adjacency = np.zeros((n, n), dtype=bool)
    adjacency[np.repeat(np.arange(n), k), nearest.ravel()] = True
    adjacency |= adjacency.T
    finite = np.where(adjacency, distances, 0.0)
    weights = np.where(adjacency, np.exp(-(finite**2) / np.outer(sigma, sigma)), 0.0)
    inv_sqrt = 1.0 / np.sqrt(weights.sum(1))
    laplacian = np.eye(n) - inv_sqrt[:, None] * weights * inv_sqrt[None, :]
    values, vectors = np.linalg.eigh(laplacian)
    return values, vectors


def blobs(sizes: list[int], dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (len(sizes), dim))
    points = np.concatenate([c + spread * rng.normal(0, 1, (s, dim)) for c, s in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return points.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a relabelling: every label of ``a`` maps to exactly one of ``b`` and back."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def reference_clusters(vectors: np.ndarray, k: int) -> np.ndarray:
    embedding = vectors[:, :k] / np.linalg.norm(vectors[:, :k], axis=1, keepdims=True)
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(embedding)


@pytest.mark.parametrize(
    ("sizes", "spread", "k"),
    [
        ([40, 30, 20], 0.35, 8),  # small: every component is decomposed densely
        ([300, 250, 200], 0.45, 10),  # one connected component above DENSE_LIMIT: ARPACK
    ],
)
def test_eigenvalues_and_clusters_match_the_dense_reference(sizes: list[int], spread: float, k: int) -> None:
    points, _ = blobs(sizes, dim=12, spread=spread, seed=1)
    spectrum = laplacian_spectrum(knn_affinity(points, k), 12)
    values, vectors = dense_reference(points, k)
    np.testing.assert_allclose(spectrum.eigenvalues, values[:12], rtol=0, atol=1e-6)
    chosen, _ = choose_clusters(spectrum.eigenvalues, 2, 10)
    expected, _ = choose_clusters(values[:12], 2, 10)
    assert chosen == expected
    labels = spectral_clusters(spectrum.eigenvectors, chosen)
    assert same_partition(labels, reference_clusters(vectors, expected))


def test_sparse_path_is_taken_above_the_dense_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = spectral.eigsh

    def counting(matrix, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(matrix.shape[0])
        return original(matrix, **kwargs)

    monkeypatch.setattr(spectral, "eigsh", counting)
    points, _ = blobs([300, 250, 200], dim=12, spread=0.45, seed=1)
    laplacian_spectrum(knn_affinity(points, 10), 12)
    assert calls and all(n > spectral.DENSE_LIMIT for n in calls)


def test_disconnected_groups_give_one_zero_eigenvalue_each() -> None:
    # Three groups far apart: the k-NN graph has three components (one above DENSE_LIMIT, solved by ARPACK).
    points, truth = blobs([600, 60, 40], dim=6, spread=0.05, seed=3)
    points[truth == 1] += 50.0
    points[truth == 2] -= 50.0
    spectrum = laplacian_spectrum(knn_affinity(points, 10), 8)
    values, _ = dense_reference(points, 10)
    assert spectrum.n_components == 3
    np.testing.assert_allclose(spectrum.eigenvalues, values[:8], rtol=0, atol=1e-6)
    assert spectrum.eigenvalues[:3].tolist() == [0.0, 0.0, 0.0] and spectrum.eigenvalues[3] > 0.01
    k, gaps = choose_clusters(spectrum.eigenvalues, 2, 6)
    assert k == 3 and gaps[:3].tolist() == [0.0, 0.0, 1.0]
    assert same_partition(spectral_clusters(spectrum.eigenvectors, 3), truth)


def test_affinity_is_sparse_symmetric_and_uses_exact_distances() -> None:
    points, _ = blobs([50, 50], dim=5, spread=0.3, seed=4)
    affinity = knn_affinity(points, 6)
    assert affinity.nnz <= 2 * 6 * 100
    assert abs(affinity - affinity.T).max() == 0
    i, j = affinity.nonzero()
    assert np.all(affinity.data > 0) and np.all(affinity.data <= 1)
    assert not np.any(i == j)


def test_duplicated_heatmaps_keep_a_positive_bandwidth() -> None:
    points = np.repeat(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32), 6, axis=0)
    affinity = knn_affinity(points, 3)
    assert np.all(np.isfinite(affinity.data))
    spectrum = laplacian_spectrum(affinity, 6)
    assert np.all(np.isfinite(spectrum.eigenvalues))


def test_eigengap_choice_and_its_limits() -> None:
    eigenvalues = np.array([0.0, 0.01, 0.02, 0.5, 0.55, 0.6])
    k, gaps = choose_clusters(eigenvalues, 2, 5)
    np.testing.assert_allclose(gaps, [1.0, 0.5, 0.96, 0.05 / 0.55, 0.05 / 0.6])
    assert k == 3  # (0.5 - 0.02) / 0.5: three eigenvalues near 0, then a jump
    assert choose_clusters(eigenvalues, 4, 5)[0] == 4  # the largest relative gap allowed: (λ5 - λ4) / λ5
    with pytest.raises(AnalysisError, match=r"^the eigengap needs at least 7 eigenvalues, got 6"):
        choose_clusters(eigenvalues, 6, 10)


def test_relative_gap_ignores_a_smoothly_rising_spectrum() -> None:
    # Two groups, then eigenvalues rising by a constant step with one slightly larger absolute step at k = 9:
    # the absolute eigengap would pick 9, the relative one the jump after λ2.
    eigenvalues = np.array([0.0, 0.03, 0.11, 0.19, 0.27, 0.35, 0.43, 0.51, 0.59, 0.68, 0.76])
    assert int(np.argmax(np.diff(eigenvalues)[1:10])) + 2 == 9
    assert choose_clusters(eigenvalues, 2, 10)[0] == 2


def test_neighbors_out_of_range() -> None:
    with pytest.raises(AnalysisError, match=r"^neighbors must lie in \[1, 4\] for 5 heatmaps, got 5\.$"):
        knn_affinity(np.zeros((5, 2), dtype=np.float32), 5)
