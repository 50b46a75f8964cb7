"""SpRAy's outputs: ``report.html`` (self-contained), ``clusters.json`` and PNG figures.

``clusters.json`` holds everything a viewer needs: per-sample cluster ids, the cluster table
(rank, size, score and its factors, typical members), the eigenvalues and eigengaps, the 2-D
embedding and the parameters. The PNGs are ``eigenvalues.png``, ``embedding.png`` and
``cluster_<rank>.png`` (mean heatmap and most typical members); ``report.html`` embeds them all
(base64), so it can be mailed or archived as one file. Every file is written to a temporary name
and renamed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..clitools import write_atomic
from .analysis import SprayCluster, SprayResult

__all__ = ["CLUSTER_COLOURS", "result_document", "write_report"]

#: Colours of the clusters by rank (rank 0, the most unusual, is red); more clusters cycle.
CLUSTER_COLOURS = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip

Images = Callable[[np.ndarray], Sequence[Any]]


def _colour(rank: int) -> str:
    return CLUSTER_COLOURS[rank % len(CLUSTER_COLOURS)]


def result_document(result: SprayResult) -> dict[str, Any]:
    """``clusters.json``'s content: plain JSON types only."""
    return {
        "n_samples": len(result.indices),
        "n_clusters": result.n_clusters,
        "chosen_by": result.chosen_by,
        "n_components": result.n_components,
        "eigenvalues": [float(v) for v in result.eigenvalues],
        "eigengaps": [float(v) for v in result.eigengaps],
        "map_shape": list(result.map_shape),
        "clusters": [
            {
                "rank": c.id,
                "size": c.size,
                "share": c.size / len(result.indices),
                "score": c.score,
                "displaced": c.displaced,
                "concentration": c.concentration,
                "typical": [int(i) for i in c.typical],
                "mean_map": np.asarray(c.mean_map, dtype=float).round(8).tolist(),
            }
            for c in result.clusters
        ],
        "samples": {"index": [int(i) for i in result.indices], "cluster": [int(c) for c in result.labels]},
        "embedding": {
            "method": result.embedding_method,
            "index": [int(i) for i in result.embedding_indices],
            "xy": np.asarray(result.embedding, dtype=float).round(5).tolist(),
        },
        "zero_heatmaps": [int(i) for i in result.zero_heatmaps],
        "params": result.params,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
    }


def _bytes_writer(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def eigenvalue_figure(result: SprayResult) -> bytes:
    """The spectrum with the chosen number of clusters and its gap marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2), layout="constrained")
    ax = fig.subplots()
    k = result.n_clusters
    positions = np.arange(1, len(result.eigenvalues) + 1)
    ax.plot(positions, result.eigenvalues, "o-", color="#34495e", markersize=4)
    ax.plot(positions[:k], result.eigenvalues[:k], "o", color="#d62728", markersize=6, label=f"{k} clusters")
    if k < len(result.eigenvalues):
        ax.axvspan(k + 0.1, k + 0.9, color="#f1c40f", alpha=0.3, label=f"relative gap {result.eigengaps[k - 1]:.3g}")
    ax.set_xlabel("k")
    ax.set_ylabel("eigenvalue λ_k of the normalised Laplacian")
    ax.set_title(f"Spectrum ({result.chosen_by}: {k} clusters)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def embedding_figure(result: SprayResult, highlight: np.ndarray | None = None) -> bytes | None:
    """The 2-D embedding coloured by cluster (``highlight``: sample ids drawn with a black ring)."""
    if not len(result.embedding_indices):
        return None
    from matplotlib.figure import Figure

    sorter = np.argsort(result.indices, kind="stable")
    positions = sorter[np.searchsorted(result.indices, result.embedding_indices, sorter=sorter)]
    labels = result.labels[positions]
    fig = Figure(figsize=(5.5, 4.6), layout="constrained")
    ax = fig.subplots()
    size = 14 if len(positions) < 2000 else 4
    for cluster in result.clusters:
        chosen = labels == cluster.id
        x, y = result.embedding[chosen].T
        ax.scatter(x, y, s=size, color=_colour(cluster.id), label=f"{cluster.id} ({cluster.size})")
    if highlight is not None:
        ringed = np.isin(result.embedding_indices, highlight)
        x, y = result.embedding[ringed].T
        ax.scatter(x, y, s=size * 2.5, facecolors="none", edgecolors="black", linewidths=0.6, label="highlighted")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{result.embedding_method} embedding, coloured by cluster rank (size)", fontsize=10)
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return _png(fig)


def _map_image(values: np.ndarray, size: int = 96) -> Any:
    from .. import viz

    return viz.heatmap(values, size=size)


def cluster_figure(result: SprayResult, cluster: SprayCluster, images: Images | None = None) -> bytes:
    """Mean heatmap and the most typical members (their heatmaps, and inputs when ``images`` is given)."""
    if len(result.map_shape) != 2:
        return _channel_figure(cluster)
    from .. import viz

    rows = [[_map_image(cluster.mean_map)] + [_map_image(m) for m in cluster.typical_maps]]
    titles = ["mean", *[str(int(i)) for i in cluster.typical]]
    if images is not None:
        rows.append([viz.heatmap(np.zeros((2, 2)))] + [viz.to_image(img) for img in images(cluster.typical)])
    sheet = viz.grid(rows, column_titles=titles, cell_size=72)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _channel_figure(cluster: SprayCluster, top: int = 12) -> bytes:
    from matplotlib.figure import Figure

    mean = np.asarray(cluster.mean_map, dtype=float).ravel()
    chosen = np.argsort(-np.abs(mean), kind="stable")[:top]
    fig = Figure(figsize=(5.5, 2.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(chosen)), mean[chosen], color=["#c0392b" if v > 0 else "#2e86c1" for v in mean[chosen]])
    ax.set_xticks(range(len(chosen)), [str(int(c)) for c in chosen], fontsize=7)
    ax.set_xlabel("channel")
    ax.set_ylabel("mean relevance share")
    ax.set_title(f"cluster {cluster.id}: the {len(chosen)} channels with the most relevance", fontsize=9)
    return _png(fig)


def _img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _html(result: SprayResult, title: str, figures: dict[str, bytes | None], notes: Sequence[str]) -> str:
    rows = "\n".join(
        f'<tr><td><span class="dot" style="background:{_colour(c.id)}"></span>{c.id}</td><td>{c.size}</td>'
        f"<td>{c.size / len(result.indices):.1%}</td><td>{c.score:.4f}</td><td>{c.displaced:.4f}</td>"
        f"<td>{c.concentration:.4f}</td><td>{html.escape(', '.join(str(int(i)) for i in c.typical[:8]))}</td></tr>"
        for c in result.clusters
    )
    spectrum = ", ".join(f"{v:.4g}" for v in result.eigenvalues)
    sections = "\n".join(
        f"<section><h3>Cluster {c.id} <small>({c.size} samples, score {c.score:.4f})</small></h3>"
        f"{_img_tag(figures[f'cluster_{c.id}.png'] or b'', f'cluster {c.id}')}</section>"
        for c in result.clusters
    )
    embedding = figures.get("embedding.png")
    params = html.escape(json.dumps(result.params, default=str))
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
.dot {{ display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.4em; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 1em; }} section {{ margin: 1em 0; }} code {{ font-size: 0.85em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(result.indices)} heatmaps, {result.n_clusters} clusters ({result.chosen_by}), neighbour graph with
{result.n_components} connected component(s). Clusters are numbered by rank: 0 is the most unusual.</p>
<ul>{note_items}</ul>
<div class="figs">{_img_tag(figures["eigenvalues.png"] or b"", "eigenvalues")}
{_img_tag(embedding, "embedding") if embedding else "<p>(no embedding)</p>"}</div>
<h2>Ranking</h2>
<p>score = displaced × concentration: the share of the cluster's positive relevance that sits where the rest
of the class puts less (total variation distance of the mean share maps), times how concentrated that
surplus is (1 − its entropy / log of the number of positions). An artefact moves much relevance onto a small
place.</p>
<table><tr><th>rank</th><th>size</th><th>share</th><th>score</th><th>displaced</th><th>concentration</th>
<th>most typical members</th></tr>
{rows}</table>
<h2>Clusters</h2>
<p>Mean normalised heatmap (red: evidence for, blue: against) and the most typical members, closest to the
mean first.</p>
{sections}
<h2>Spectrum</h2><p><code>{spectrum}</code></p>
<h2>Parameters</h2><p><code>{params}</code></p>
</body></html>
"""


def write_report(
    result: SprayResult,
    out: str | Path,
    *,
    title: str = "Spectral Relevance Analysis",
    images: Images | None = None,
    highlight: np.ndarray | None = None,
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write ``report.html``, ``clusters.json`` and the PNGs into folder ``out``; return their paths.

    Parameters
    ----------
    images
        Sample ids → displayable inputs (``(C, H, W)`` in [0, 1]), drawn under the typical members' heatmaps.
    highlight
        Sample ids ringed in the embedding (e.g. samples known to carry a planted mark).
    notes
        Lines shown at the top of the report.
    """
    out = Path(out)
    figures: dict[str, bytes | None] = {
        "eigenvalues.png": eigenvalue_figure(result),
        "embedding.png": embedding_figure(result, highlight),
    }
    for cluster in result.clusters:
        figures[f"cluster_{cluster.id}.png"] = cluster_figure(result, cluster, images)
    written = []
    for name, data in figures.items():
        if data is not None:
            write_atomic(out / name, _bytes_writer(data))
            written.append(out / name)
    document = json.dumps(result_document(result), default=str)
    write_atomic(out / "clusters.json", lambda p: p.write_text(document, encoding="utf-8"))
    page = _html(result, title, figures, notes)
    write_atomic(out / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    return [*written, out / "clusters.json", out / "report.html"]
