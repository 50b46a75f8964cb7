"""``relprop spray``: Spectral Relevance Analysis of a relevance store (or a .npy/.npz file of heatmaps).

The command object :data:`spray` is registered on the ``relprop`` group by :mod:`relprop.cli`.
It clusters the heatmaps of one class (or of every sample), and writes ``report.html``,
``clusters.json`` and PNGs into ``--out`` (see :mod:`relprop.spray`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from .clitools import UserError, refuse_overwrite
from .errors import RelpropError

__all__ = ["spray"]

OUTPUTS = ("report.html", "clusters.json", "eigenvalues.png", "embedding.png")


def _clusters(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"--clusters must be 'auto' or a whole number of at least 2, got {value!r}") from None
    if number < 2:
        raise UserError(f"--clusters must be 'auto' or a whole number of at least 2, got {value!r}")
    return number


@click.command("spray")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--class", "class_", type=int, default=None, help="Analyse this class only (default: every sample).")
@click.option("--layer", default=None, help="Analyse relevance at this layer (module path), per channel.")
@click.option("--clusters", default="auto", show_default=True, help="auto (the eigengap) or a number.")
@click.option("--max-clusters", type=click.IntRange(2, 100), default=10, show_default=True)
@click.option("--neighbors", type=click.IntRange(1, 1000), default=10, show_default=True, help="k of the k-NN graph.")
@click.option("--size", type=click.IntRange(1, 4096), default=32, show_default=True, help="Pool maps to this side.")
@click.option(
    "--embedding",
    type=click.Choice(["auto", "tsne", "umap", "pca", "none"]),
    default="auto",
    show_default=True,
    help="2-D embedding for display (auto: UMAP if installed, else t-SNE).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--allow-incomplete", is_flag=True, help="Analyse a store that is still being written.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-spray"),
    show_default=True,
    help="Folder for report.html, clusters.json and the PNGs.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def spray(
    store: Path,
    class_: int | None,
    layer: str | None,
    clusters: str,
    max_clusters: int,
    neighbors: int,
    size: int,
    embedding: str,
    seed: int,
    allow_incomplete: bool,
    out_dir: Path,
    force: bool,
) -> None:
    """Cluster the heatmaps of a store (SpRAy) and rank the clusters by how unusual their relevance is."""
    from .spray import analyze, open_store, write_report

    chosen = _clusters(clusters)
    refuse_overwrite([out_dir / name for name in OUTPUTS], force)
    start = time.perf_counter()

    def progress(line: str) -> None:
        click.echo(f"[{time.perf_counter() - start:6.1f} s] {line}", err=True)

    try:
        result = analyze(
            open_store(store), class_, layer, clusters=chosen, max_clusters=max_clusters, neighbors=neighbors,
            size=size, embedding=embedding, seed=seed, allow_incomplete=allow_incomplete, progress=progress,
        )  # fmt: skip
        what = "every sample" if class_ is None else f"class {class_}"
        title = f"SpRAy: {what} of {store}" + (f", layer {layer}" if layer else "")
        write_report(result, out_dir, title=title)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted; nothing was written", err=True)
        sys.exit(130)
    _summary(result, out_dir)


def _summary(result: Any, out_dir: Path) -> None:
    click.echo(
        f"{len(result.indices)} heatmaps, {result.n_clusters} clusters ({result.chosen_by}); "
        f"eigenvalues {', '.join(f'{v:.3g}' for v in result.eigenvalues[: result.n_clusters + 1])}"
    )
    for cluster in result.clusters:
        click.echo(
            f"  cluster {cluster.id}: {cluster.size} samples, score {cluster.score:.4f} "
            f"(displaced {cluster.displaced:.3f} x concentration {cluster.concentration:.3f})"
        )
    click.echo(f"report: {out_dir / 'report.html'}")
