"""Spectral Relevance Analysis (SpRAy): find groups of samples the model decides about in the same unusual way.

One heatmap at a time, a person finds a "Clever Hans" shortcut (a watermark, a frame, a
source tag) only if they already suspect it. SpRAy (Lapuschkin et al., 2019, "Unmasking Clever
Hans predictors and assessing what machines really learn") finds it without being told: explain
every sample of a class, cluster the heatmaps spectrally, and look at the clusters whose
relevance sits somewhere unusual.

* :func:`analyze_heatmaps` — the analysis of an array of heatmaps ``(N, ...)``;
* :func:`analyze` — the same on a relevance store (:mod:`relprop.dataset`), per class and layer;
  :func:`open_store` opens a store folder or a ``.npy``/``.npz`` file of heatmaps (:class:`ArrayStore`);
* :func:`write_report` — ``report.html``, ``clusters.json`` and PNGs.

The steps (each documented in its module): :mod:`~relprop.spray.features` (reduce, pool,
normalise), :mod:`~relprop.spray.spectral` (sparse k-NN graph, Laplacian spectrum, eigengap,
k-means), :mod:`~relprop.spray.ranking` (the unusualness score clusters are ranked by).
Needs the ``spray`` extra (scikit-learn, SciPy, matplotlib).
"""

from __future__ import annotations

from .analysis import EMBEDDINGS, SprayCluster, SprayResult, analyze_heatmaps
from .report import write_report
from .store import ArrayStore, analyze, open_store

__all__ = [
    "EMBEDDINGS",
    "ArrayStore",
    "SprayCluster",
    "SprayResult",
    "analyze",
    "analyze_heatmaps",
    "open_store",
    "write_report",
]
