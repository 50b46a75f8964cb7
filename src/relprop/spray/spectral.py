"""The spectral part of SpRAy: a sparse nearest-neighbour graph, its Laplacian spectrum, the eigengap, clusters.

Graph
    Every heatmap is joined to its ``k`` nearest neighbours (Euclidean distance between the
    normalised heatmaps); the edge weight is the self-tuning Gaussian of Zelnik-Manor & Perona
    (2004), ``w_ij = exp(-d_ij² / (σ_i σ_j))`` with ``σ_i`` the distance from ``i`` to its
    ``k``-th neighbour, so that dense and sparse regions of the heatmap space get comparable
    weights without a global bandwidth to tune. The formula is symmetric in ``i`` and ``j``; an
    edge exists when either end lists the other among its neighbours. The matrix is sparse
    (at most ``2 k N`` entries): nothing of size ``N × N`` is ever formed.

Spectrum
    The symmetric normalised Laplacian ``L = I - D^{-1/2} W D^{-1/2}`` (eigenvalues in [0, 2]).
    Its smallest eigenvalues come from the largest of ``A = D^{-1/2} W D^{-1/2}``
    (``λ = 1 - μ``), per connected component of the graph: a component is a perfectly
    separated group (eigenvalue 0 once per component), which a Krylov solver started from one
    vector cannot resolve, but the spectrum of a block-diagonal matrix is the union of its
    blocks' spectra. Components up to :data:`DENSE_LIMIT` nodes are solved densely, larger
    ones with ARPACK (``scipy.sparse.linalg.eigsh``, relative accuracy :data:`EIGSH_TOLERANCE`).

Number of clusters
    The eigengap heuristic (von Luxburg 2007, §8.1), as in the SpRAy paper (Lapuschkin et al.,
    2019): ``k`` groups that are well separated give ``k`` eigenvalues close to 0 and then a jump.
    The jump is measured relative to the eigenvalue after it, ``g_k = (λ_{k+1} - λ_k) / λ_{k+1}``
    (1 when ``λ_k = 0``), and ``k = argmax g_k`` over ``[min_clusters, max_clusters]``. Without
    cluster structure the spectrum of a neighbour graph rises smoothly, every absolute gap is about
    as large as the next, and ``argmax (λ_{k+1} - λ_k)`` lands on whichever ``k`` the noise favours
    — often the largest allowed; the relative gap is scale-free, so such a spectrum gives no ``k``
    an advantage from its position, while ``k`` eigenvalues near 0 followed by a larger one still
    stand out (``k`` disconnected groups: exactly ``g_k = 1``).

Clusters
    k-means on the rows of the first ``k`` eigenvectors, each row scaled to unit length (Ng,
    Jordan & Weiss 2001).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

from ..errors import AnalysisError

__all__ = [
    "DENSE_LIMIT",
    "ZERO_TOLERANCE",
    "Spectrum",
    "choose_clusters",
    "knn_affinity",
    "laplacian_spectrum",
    "relative_gaps",
    "spectral_clusters",
]

#: Connected components up to this many nodes are decomposed densely (``numpy.linalg.eigh``).
DENSE_LIMIT = 512
#: Relative accuracy asked of ARPACK (its Ritz values; machine precision costs half again as much time on large
#: graphs for digits nobody reads).
EIGSH_TOLERANCE = 1e-10
#: Eigenvalues below this are rounding errors of an exact 0 and are reported as 0.
ZERO_TOLERANCE = 1e-10


def knn_affinity(features: np.ndarray, neighbors: int) -> sparse.csr_matrix:
    """The symmetric ``(N, N)`` sparse affinity matrix of the ``neighbors``-nearest-neighbour graph.

    Parameters
    ----------
    features
        ``(N, D)`` points.
    neighbors
        ``k``: neighbours per point (not counting the point itself); at most ``N - 1``.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(features)
    if not 1 <= neighbors < n:
        raise AnalysisError(f"neighbors must lie in [1, {n - 1}] for {n} heatmaps, got {neighbors}.")
    index = NearestNeighbors(n_neighbors=neighbors, algorithm="brute").fit(features)
    columns = index.kneighbors(return_distance=False)  # without the query point itself
    distances = _pair_distances(features, columns)
    sigma = distances.max(1)
    # Duplicated heatmaps can put the k-th neighbour at distance 0: keep the bandwidth positive.
    positive = sigma[sigma > 0]
    floor = 1e-12 * (float(np.median(positive)) if positive.size else 1.0)
    sigma = np.maximum(sigma, floor if floor > 0 else 1e-300)
    rows = np.repeat(np.arange(n), neighbors)
    cols = columns.ravel()
    values = np.exp(-(distances.ravel() ** 2) / (sigma[rows] * sigma[cols]))
    directed = sparse.csr_matrix((values, (rows, cols)), shape=(n, n))
    # Same weight from both ends: the union of the two directions is the element-wise maximum.
    return directed.maximum(directed.T).tocsr()


def _pair_distances(features: np.ndarray, columns: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Exact float64 distances from every point to its listed neighbours (the search's own are float32-rounded)."""
    out = np.empty(columns.shape)
    for start in range(0, len(features), batch):
        rows = features[start : start + batch].astype(np.float64)
        neighbours = features[columns[start : start + batch]].astype(np.float64)
        out[start : start + batch] = np.linalg.norm(neighbours - rows[:, None, :], axis=2)
    return out


@dataclass
class Spectrum:
    """The smallest eigenvalues of the normalised Laplacian and their eigenvectors.

    Attributes
    ----------
    eigenvalues
        ``(m,)`` ascending.
    eigenvectors
        ``(N, m)``, orthonormal columns.
    components
        Component id of every node (``(N,)``) and their number.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    component: np.ndarray
    n_components: int


def laplacian_spectrum(affinity: sparse.spmatrix, count: int, seed: int = 0) -> Spectrum:
    """The ``count`` smallest eigenpairs of ``L = I - D^{-1/2} W D^{-1/2}`` (see the module notes)."""
    n = affinity.shape[0]
    count = min(count, n)
    degree = np.asarray(affinity.sum(1)).ravel()
    if np.any(degree <= 0):
        raise AnalysisError("the affinity graph has an isolated node (no neighbour with positive weight).")
    scale = sparse.diags(1.0 / np.sqrt(degree))
    normalized = (scale @ affinity @ scale).tocsr()
    n_components, component = connected_components(normalized, directed=False)
    values: list[np.ndarray] = []
    vectors: list[tuple[np.ndarray, np.ndarray]] = []  # (nodes, eigenvectors on those nodes)
    rng = np.random.default_rng(seed)
    for c in range(n_components):
        nodes = np.flatnonzero(component == c)
        block = normalized[nodes][:, nodes]
        wanted = min(count, len(nodes))
        if len(nodes) <= DENSE_LIMIT or wanted >= len(nodes) - 1:
            mu, u = np.linalg.eigh(block.toarray())
            mu, u = mu[::-1][:wanted], u[:, ::-1][:, :wanted]
        else:
            start = rng.standard_normal(len(nodes))
            ncv = min(len(nodes), max(2 * wanted + 1, 20))
            mu, u = eigsh(block, k=wanted, which="LA", tol=EIGSH_TOLERANCE, v0=start, ncv=ncv)
            order = np.argsort(mu)[::-1]
            mu, u = mu[order], u[:, order]
        for j in range(wanted):
            values.append(np.array(1.0 - mu[j]))
            vectors.append((nodes, u[:, j]))
    eigenvalues = np.array([float(v) for v in values])
    order = np.argsort(eigenvalues, kind="stable")[:count]
    eigenvectors = np.zeros((n, len(order)))
    for column, k in enumerate(order):
        nodes, u = vectors[k]
        eigenvectors[nodes, column] = u
    # The Laplacian is positive semi-definite; rounding puts its zero eigenvalues (one per component) a hair
    # off 0, which the relative eigengap would read as structure.
    chosen = np.clip(eigenvalues[order], 0.0, 2.0)
    chosen[chosen < ZERO_TOLERANCE] = 0.0
    return Spectrum(chosen, eigenvectors, component, int(n_components))


def relative_gaps(eigenvalues: np.ndarray) -> np.ndarray:
    """``gaps[k - 1] = (λ_{k+1} - λ_k) / λ_{k+1}`` (1-based ``k``; 0 where both are 0), for ``k = 1 … m - 1``."""
    upper = eigenvalues[1:]
    return np.divide(np.diff(eigenvalues), upper, out=np.zeros(len(upper)), where=upper > 0)


def choose_clusters(eigenvalues: np.ndarray, min_clusters: int, max_clusters: int) -> tuple[int, np.ndarray]:
    """The eigengap choice ``argmax_k g_k`` over ``k ∈ [min_clusters, max_clusters]``, and all relative gaps
    ``g`` (:func:`relative_gaps`; see the module notes)."""
    gaps = relative_gaps(eigenvalues)
    upper = min(max_clusters, len(eigenvalues) - 1)
    if upper < min_clusters:
        raise AnalysisError(
            f"the eigengap needs at least {min_clusters + 1} eigenvalues, got {len(eigenvalues)}; lower min_clusters "
            "or analyse more heatmaps."
        )
    k = min_clusters + int(np.argmax(gaps[min_clusters - 1 : upper]))
    return k, gaps


def spectral_clusters(eigenvectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster labels ``(N,)`` in ``[0, k)``: k-means on the unit-length rows of the first ``k`` eigenvectors."""
    from sklearn.cluster import KMeans

    embedding = eigenvectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding / np.where(norms > 0, norms, 1.0)
    if k == 1:
        return np.zeros(len(embedding), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding).astype(np.int64)
