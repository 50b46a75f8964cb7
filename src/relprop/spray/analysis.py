"""SpRAy on an array of heatmaps: features → graph → spectrum → clusters → ranking → 2-D embedding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import AnalysisError
from .features import Progress, heatmap_features
from .ranking import ClusterScore, positive_shares, unusualness
from .spectral import choose_clusters, knn_affinity, laplacian_spectrum, relative_gaps, spectral_clusters

__all__ = ["EMBEDDINGS", "SprayCluster", "SprayResult", "analyze_heatmaps"]


@dataclass
class SprayCluster:
    """One cluster of heatmaps.

    Attributes
    ----------
    id
        Its rank: 0 is the most unusual cluster (highest ``score``).
    members
        Sample ids (``SprayResult.indices`` values) of its members.
    typical
        Sample ids of its most typical members: closest to its mean heatmap first.
    mean_map
        Mean of the members' normalised heatmaps, shaped ``SprayResult.map_shape``.
    typical_maps
        The normalised heatmaps of ``typical``, ``(len(typical), *map_shape)``.
    score, displaced, concentration
        The ranking score and its factors (:mod:`relprop.spray.ranking`).
    """

    id: int
    members: np.ndarray
    typical: np.ndarray
    mean_map: np.ndarray
    typical_maps: np.ndarray
    score: float
    displaced: float
    concentration: float

    @property
    def size(self) -> int:
        """Number of members."""
        return len(self.members)


@dataclass
class SprayResult:
    """What :func:`analyze_heatmaps` found.

    Attributes
    ----------
    indices
        ``(N,)`` sample ids of the analysed heatmaps (positions, or store indices).
    labels
        ``(N,)`` cluster id of every sample (clusters are numbered by rank, 0 = most unusual).
    clusters
        The clusters, by rank.
    eigenvalues
        The smallest eigenvalues of the graph's normalised Laplacian, ascending.
    eigengaps
        Relative eigengaps ``eigengaps[k - 1] = (λ_{k+1} - λ_k) / λ_{k+1}`` (the eigengap choice maximises them).
    n_clusters, chosen_by
        How many clusters, and whether the eigengap (``"eigengap"``) or the caller (``"given"``) chose.
    n_components
        Connected components of the neighbour graph (perfectly separated groups).
    map_shape
        Shape of one normalised heatmap as compared (``(h, w)``, or ``(C,)`` per channel).
    embedding, embedding_indices, embedding_method
        2-D coordinates for display, the sample ids they belong to (all samples, or a random subset
        of at most ``embed_max``), and the method that made them (``tsne``, ``umap``, ``pca``, or
        ``none``).
    params
        The settings of the run.
    timings
        Seconds per stage.
    zero_heatmaps
        Sample ids whose heatmap is zero everywhere (they cannot say where relevance sits).
    """

    indices: np.ndarray
    labels: np.ndarray
    clusters: list[SprayCluster]
    eigenvalues: np.ndarray
    eigengaps: np.ndarray
    n_clusters: int
    chosen_by: str
    n_components: int
    map_shape: tuple[int, ...]
    embedding: np.ndarray
    embedding_indices: np.ndarray
    embedding_method: str
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    zero_heatmaps: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def cluster_of(self, sample: int) -> SprayCluster:
        """The cluster sample id ``sample`` belongs to."""
        where = np.flatnonzero(self.indices == sample)
        if not len(where):
            raise AnalysisError(f"sample {sample} was not part of this analysis.")
        return self.clusters[int(self.labels[where[0]])]

    @property
    def top(self) -> SprayCluster:
        """The top-ranked (most unusual) cluster."""
        return self.clusters[0]


def _embed_tsne(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def _embed_umap(points: np.ndarray, seed: int) -> np.ndarray:
    import umap  # optional: pip install umap-learn

    return umap.UMAP(n_components=2, n_neighbors=min(15, len(points) - 1), random_state=seed).fit_transform(points)


def _embed_pca(points: np.ndarray, seed: int) -> np.ndarray:
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))) if coords.shape[1] < 2 else coords


#: 2-D embeddings for display. ``auto`` is ``umap`` when umap-learn is installed, else ``tsne``.
EMBEDDINGS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "tsne": _embed_tsne,
    "umap": _embed_umap,
    "pca": _embed_pca,
}


def _resolve_embedding(name: str) -> str:
    if name == "auto":
        try:
            import umap  # noqa: F401
        except ImportError:
            return "tsne"
        return "umap"
    if name != "none" and name not in EMBEDDINGS:
        raise AnalysisError(f"unknown embedding {name!r}; choose one of: auto, none, {', '.join(EMBEDDINGS)}.")
    return name


def _reduce_dimensions(values: np.ndarray, components: int | None, seed: int) -> np.ndarray:
    """PCA to ``components`` dimensions when the heatmaps have more (the neighbour search's cost is ∝ D)."""
    if components is None or values.shape[1] <= components or len(values) <= components:
        return values
    from sklearn.decomposition import PCA

    return PCA(components, svd_solver="randomized", random_state=seed).fit_transform(values).astype(np.float32)


def _check_counts(
    n: int, clusters: int | str, neighbors: int, min_clusters: int, max_clusters: int, subject: str
) -> None:
    if n == 0:
        raise AnalysisError(f"{subject} is empty: there is no heatmap to analyse.")
    if clusters != "auto" and (not isinstance(clusters, int) or clusters < 1):
        raise AnalysisError(f"clusters must be 'auto' or a positive number, got {clusters!r}.")
    wanted = max_clusters if clusters == "auto" else int(clusters)
    if clusters == "auto" and not 1 <= min_clusters <= max_clusters:
        raise AnalysisError(f"min_clusters ({min_clusters}) must lie in [1, max_clusters = {max_clusters}].")
    needed = max(wanted + 1, 3) if clusters == "auto" else max(wanted, 2)
    if n < needed:
        raise AnalysisError(
            f"{subject} has {n} heatmaps, too few for {wanted} clusters (at least {needed} are needed); analyse "
            "more samples or ask for fewer clusters."
        )
    if neighbors < 1:
        raise AnalysisError(f"neighbors must be at least 1, got {neighbors}.")


def analyze_heatmaps(
    heatmaps: Any,
    *,
    indices: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    clusters: int | str = "auto",
    min_clusters: int = 2,
    max_clusters: int = 10,
    n_eigenvalues: int | None = None,
    neighbors: int = 10,
    view: str = "map",
    size: int | None = 32,
    normalize: str = "l1",
    pca_components: int | None = 128,
    typical: int = 8,
    embedding: str = "auto",
    embed_max: int = 2000,
    seed: int = 0,
    batch_size: int = 2048,
    progress: Progress | None = None,
    subject: str = "the selection",
) -> SprayResult:
    """Spectral Relevance Analysis (Lapuschkin et al., 2019) of an array of heatmaps.

    Parameters
    ----------
    heatmaps
        ``(N, ...)`` array-like (NumPy, memmap, torch, Zarr): input relevance ``(N, C, H, W)`` or
        ``(N, H, W)``, or a layer's relevance ``(N, C, ...)`` / ``(N, C)`` with ``view="channels"``.
    indices
        Sample ids to report for the analysed rows (default: the row numbers).
    rows
        Analyse only these rows of ``heatmaps``.
    clusters
        ``"auto"`` (the eigengap, between ``min_clusters`` and ``max_clusters``) or a number.
    n_eigenvalues
        Eigenvalues computed and reported (default and minimum: the largest number of clusters
        allowed + 2; each one more costs the eigensolver time on large graphs).
    neighbors
        ``k`` of the nearest-neighbour graph (capped at ``N - 1``).
    view, size, normalize
        How heatmaps become features (:func:`relprop.spray.features.heatmap_features`).
    pca_components
        Reduce features to this many principal components before the neighbour search when they
        have more (``None``: never). Only the graph uses the reduction; means and scores use the
        full normalised heatmaps.
    typical
        Most typical members kept per cluster.
    embedding, embed_max
        2-D display embedding (``auto``, ``tsne``, ``umap``, ``pca``, ``none``) of at most
        ``embed_max`` samples (a seeded random subset beyond that).
    seed
        Seeds the eigensolver's start vector, k-means, the embedding and the subset.
    progress
        Called with a line of text at each stage.
    subject
        What the heatmaps are, for error messages (e.g. ``"class 3 of store.zarr"``).

    Raises
    ------
    AnalysisError
        Fewer heatmaps than the clusters need, an unknown option, heatmaps with NaN or Inf.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str, message: str | None = None, following: str | None = None) -> None:
        """Close stage ``name`` (its time, and ``message``); announce the long stage ``following``."""
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now
        if progress is not None:
            for line in (message, following):
                if line is not None:
                    progress(line)

    n = int(heatmaps.shape[0]) if rows is None else len(rows)
    _check_counts(n, clusters, neighbors, min_clusters, max_clusters, subject)
    method = _resolve_embedding(embedding)
    ids = np.arange(n) if indices is None else np.asarray(indices)
    if len(ids) != n:
        raise AnalysisError(f"indices has {len(ids)} entries for {n} heatmaps; give one sample id per heatmap.")
    features = heatmap_features(
        heatmaps, rows, view=view, size=size, normalize=normalize, batch_size=batch_size, progress=progress
    )
    stage("features", f"features: {n} heatmaps as {features.values.shape[1]} values each")
    points = _reduce_dimensions(features.values, pca_components, seed)
    k_graph = min(neighbors, n - 1)
    stage("pca", following=f"searching {k_graph} nearest neighbours of {n} heatmaps ...")
    affinity = knn_affinity(points, k_graph)
    wanted = (max_clusters if clusters == "auto" else int(clusters)) + 2
    count = min(max(n_eigenvalues or wanted, wanted), n)
    stage("graph", f"neighbour graph: {affinity.nnz} edges", f"computing the {count} smallest eigenvalues ...")
    spectrum = laplacian_spectrum(affinity, count, seed)
    stage("spectrum", f"spectrum: {count} eigenvalues, {spectrum.n_components} connected component(s)")
    if clusters == "auto":
        k, gaps = choose_clusters(spectrum.eigenvalues, min_clusters, max_clusters)
        chosen_by = "eigengap"
    else:
        k, gaps, chosen_by = int(clusters), relative_gaps(spectrum.eigenvalues), "given"
    raw = spectral_clusters(spectrum.eigenvectors, k, seed)
    stage("clustering", f"clusters: {k} ({chosen_by})")
    cluster_list, labels = _ranked_clusters(raw, k, features.values, ids, typical, features.shape)
    stage("ranking", following=f"{method} embedding of {min(n, embed_max)} samples ..." if method != "none" else None)
    coords, coord_ids = _embedding(method, points, ids, embed_max, seed)
    stage("embedding")
    params = {
        "clusters": clusters,
        "min_clusters": min_clusters,
        "max_clusters": max_clusters,
        "n_eigenvalues": count,
        "neighbors": k_graph,
        "view": view,
        "size": size,
        "normalize": normalize,
        "pca_components": pca_components if points is not features.values else None,
        "typical": typical,
        "embedding": method,
        "embed_max": embed_max,
        "seed": seed,
        "affinity": "self-tuning Gaussian on the symmetric k-NN graph",
        "laplacian": "symmetric normalised",
        "source_shape": list(features.source_shape),
    }
    return SprayResult(
        indices=ids,
        labels=labels,
        clusters=cluster_list,
        eigenvalues=spectrum.eigenvalues,
        eigengaps=gaps,
        n_clusters=k,
        chosen_by=chosen_by,
        n_components=spectrum.n_components,
        map_shape=features.shape,
        embedding=coords,
        embedding_indices=coord_ids,
        embedding_method=method,
        params=params,
        timings=timings,
        zero_heatmaps=ids[features.zero],
    )


def _cluster_share_sums(raw: np.ndarray, k: int, values: np.ndarray, batch: int = 8192) -> np.ndarray:
    """``(k, D)``: per cluster, the sum of its members' positive share maps (in batches: no ``N × D`` float64)."""
    sums = np.zeros((k, values.shape[1]))
    for start in range(0, len(values), batch):
        shares = positive_shares(values[start : start + batch])
        labels = raw[start : start + batch]
        for c in np.unique(labels):
            sums[c] += shares[labels == c].sum(0)
    return sums


def _ranked_clusters(
    raw: np.ndarray,
    k: int,
    values: np.ndarray,
    ids: np.ndarray,
    typical: int,
    shape: tuple[int, ...],
) -> tuple[list[SprayCluster], np.ndarray]:
    """Score every cluster, number them by rank (ties: larger first), and pick their typical members."""
    sums = _cluster_share_sums(raw, k, values)
    totals = sums.sum(0)
    sizes = np.bincount(raw, minlength=k)
    scores: list[ClusterScore] = []
    for c in range(k):
        rest = len(raw) - sizes[c]
        member_mean = sums[c] / sizes[c] if sizes[c] else np.zeros(values.shape[1])
        rest_mean = (totals - sums[c]) / rest if rest else member_mean
        scores.append(unusualness(member_mean, rest_mean))
    order = sorted(range(k), key=lambda c: (-scores[c].score, -sizes[c], c))
    new_id = np.empty(k, dtype=np.int64)
    new_id[order] = np.arange(k)
    labels = new_id[raw]
    result = []
    for rank, c in enumerate(order):
        positions = np.flatnonzero(raw == c)
        mean = values[positions].astype(np.float64).mean(0)
        distances = np.linalg.norm(values[positions] - mean, axis=1)
        closest = positions[np.argsort(distances, kind="stable")[:typical]]
        result.append(
            SprayCluster(
                id=rank,
                members=ids[positions],
                typical=ids[closest],
                mean_map=mean.reshape(shape),
                typical_maps=values[closest].reshape(len(closest), *shape),
                score=scores[c].score,
                displaced=scores[c].displaced,
                concentration=scores[c].concentration,
            )
        )
    return result, labels


def _embedding(
    method: str, points: np.ndarray, ids: np.ndarray, embed_max: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if method == "none" or len(points) < 3:
        return np.empty((0, 2)), np.empty(0, dtype=ids.dtype)
    chosen = np.arange(len(points))
    if len(points) > embed_max:
        chosen = np.sort(np.random.default_rng(seed).choice(len(points), embed_max, replace=False))
    coords = EMBEDDINGS[method](np.asarray(points[chosen], dtype=np.float64), seed)
    return np.asarray(coords, dtype=np.float64), ids[chosen]
