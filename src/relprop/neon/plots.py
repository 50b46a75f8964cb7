"""Figures for tabular explanations: per-row bar charts of the top features and a beeswarm-like summary.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
Red is relevance for the explained score, blue against, as in relprop's heatmaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["row_bars", "save", "summary"]

_FOR, _AGAINST = "#c0392b", "#2e6fba"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def row_bars(relevance: np.ndarray, names: Sequence[str], titles: Sequence[str], top: int = 8) -> Any:
    """One horizontal bar chart per row: its ``top`` features by ``|relevance|``, largest on top."""
    rows = len(titles)
    columns = min(3, rows)
    lines = (rows + columns - 1) // columns
    k = min(top, relevance.shape[1])
    figure = _figure(4.4 * columns, 0.32 * k * lines + 0.9 * lines)
    axes = np.atleast_1d(figure.subplots(lines, columns, squeeze=False)).ravel()
    for ax, values, title in zip(axes, relevance, titles, strict=False):
        order = np.argsort(-np.abs(values))[:k][::-1]
        ax.barh(range(k), values[order], color=[_FOR if v >= 0 else _AGAINST for v in values[order]])
        ax.set_yticks(range(k), [names[i] for i in order], fontsize=8)
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[rows:]:
        ax.set_visible(False)
    return figure


def summary(relevance: np.ndarray, values: np.ndarray, names: Sequence[str], top: int = 15, seed: int = 0) -> Any:
    """Every row as a dot per feature (x: relevance; colour: the feature's value, low blue → high red).

    Features are sorted by mean ``|relevance|``, the ``top`` most relevant on top; dots are
    spread vertically within a feature's band so that dense regions show as wide swarms.
    """
    k = min(top, relevance.shape[1])
    order = np.argsort(-np.abs(relevance).mean(0))[:k][::-1]
    figure = _figure(7.0, 0.38 * k + 1.3)
    ax = figure.subplots()
    generator = np.random.default_rng(seed)
    scatter = None
    for position, feature in enumerate(order):
        column = values[:, feature]
        span = column.max() - column.min()
        colour = (column - column.min()) / span if span > 0 else np.full_like(column, 0.5)
        jitter = generator.uniform(-0.32, 0.32, len(column)) * _density(relevance[:, feature])
        scatter = ax.scatter(
            relevance[:, feature], position + jitter, c=colour, cmap="coolwarm", vmin=0, vmax=1, s=9, linewidths=0
        )
    ax.set_yticks(range(k), [names[i] for i in order], fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("relevance (red: for the explained score, blue: against)", fontsize=8)
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=ax, ticks=[0, 1], fraction=0.04)
        bar.ax.set_yticklabels(["low", "high"], fontsize=7)
        bar.set_label("feature value", fontsize=8)
    return figure


def _density(x: np.ndarray, bins: int = 30) -> np.ndarray:
    """Relative local density of each value (1 in the densest bin), the width of the swarm there."""
    if x.max() == x.min():
        return np.ones_like(x)
    counts, edges = np.histogram(x, bins=bins)
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    return counts[index] / counts.max()


def save(figure: Any, path: Path) -> None:
    """Write ``figure`` as PNG to ``path``."""
    figure.savefig(path, format="png")
