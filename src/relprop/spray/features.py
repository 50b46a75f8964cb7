"""Heatmaps → feature vectors for clustering: reduce, pool, normalise, in batches.

SpRAy compares *where* relevance sits, not how much of it there is, so every heatmap is
reduced to one map (or one vector), average-pooled to a small resolution (small shifts of a
few pixels should not make two heatmaps look unrelated, and the neighbour search gets
cheaper), and normalised so that the size of the explained score does not drive the
clusters. The heatmaps are read in batches, so an array on disk (a NumPy memmap, a Zarr
array) is never loaded whole.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import AnalysisError

__all__ = ["NORMALIZATIONS", "VIEWS", "Features", "heatmap_features", "read_rows"]

Progress = Callable[[str], None]


def _sum_channels(batch: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H, W)``; ``(B, H, W)`` stays."""
    if batch.dim() == 4:
        return batch.sum(1)
    if batch.dim() == 3:
        return batch
    raise AnalysisError(
        f"view 'map' needs heatmaps shaped (N, H, W) or (N, C, H, W), got {tuple(batch.shape)}; use view "
        "'channels' or 'flat' for other shapes."
    )


def _sum_space(batch: torch.Tensor) -> torch.Tensor:
    """``(B, C, ...)`` → ``(B, C)``: per-channel relevance; ``(B, C)`` stays."""
    if batch.dim() < 2:
        raise AnalysisError(f"view 'channels' needs relevance shaped (N, C, ...), got {tuple(batch.shape)}.")
    return batch.flatten(2).sum(2) if batch.dim() > 2 else batch


def _flat(batch: torch.Tensor) -> torch.Tensor:
    return batch.flatten(1)


#: How one sample's relevance becomes what is compared: ``map`` sums the channels of an input
#: heatmap (where in the input), ``channels`` sums over space (which feature channels of a layer),
#: ``flat`` keeps every value.
VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "map": _sum_channels,
    "channels": _sum_space,
    "flat": _flat,
}


def _l1(x: torch.Tensor) -> torch.Tensor:
    return x / x.abs().sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _max(x: torch.Tensor) -> torch.Tensor:
    return x / x.abs().amax(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


#: Per-sample normalisations: ``l1`` (Σ|R| = 1, relevance as a share: the default), ``l2``,
#: ``max`` (max |R| = 1) or ``none``. A heatmap that is zero everywhere stays zero.
NORMALIZATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l1": _l1,
    "l2": _l2,
    "max": _max,
    "none": lambda x: x,
}


@dataclass
class Features:
    """What the clustering compares.

    Attributes
    ----------
    values
        ``(N, D)`` float32, one normalised (and, for maps, pooled) heatmap per row.
    shape
        The shape of one row as a map: ``(h, w)`` for view ``map``, ``(C,)`` for ``channels``,
        the sample's shape for ``flat``.
    source_shape
        The shape of one heatmap as read.
    zero
        Positions (rows) whose heatmap is zero everywhere.
    """

    values: np.ndarray
    shape: tuple[int, ...]
    source_shape: tuple[int, ...]
    zero: np.ndarray


def pooled_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """The map size after average pooling by one integer factor so that the longer side is ≤ ``size``."""
    if size is None or max(height, width) <= size:
        return height, width
    factor = math.ceil(max(height, width) / size)
    return math.ceil(height / factor), math.ceil(width / factor)


def read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted positions) of an array-like: NumPy, torch, or Zarr (orthogonal indexing)."""
    if isinstance(array, torch.Tensor):
        return array[torch.as_tensor(rows, dtype=torch.long)].detach().cpu().numpy()
    if len(rows) and np.all(np.diff(rows) == 1):
        return np.asarray(array[int(rows[0]) : int(rows[-1]) + 1])
    if hasattr(array, "oindex"):
        return np.asarray(array.oindex[rows])
    return np.asarray(array[rows])


def heatmap_features(
    heatmaps: Any,
    rows: np.ndarray | None = None,
    *,
    view: str = "map",
    size: int | None = 32,
    normalize: str = "l1",
    batch_size: int = 2048,
    progress: Progress | None = None,
) -> Features:
    """Read ``heatmaps[rows]`` in batches and turn each into a normalised feature vector.

    Parameters
    ----------
    heatmaps
        Array-like of shape ``(N, ...)`` (NumPy array or memmap, torch tensor, Zarr array).
    rows
        Which rows to use (all by default).
    view
        ``map``, ``channels`` or ``flat`` (:data:`VIEWS`).
    size
        For ``map``: average-pool by an integer factor until the longer side is at most ``size``
        (``None``: keep the resolution).
    normalize
        One of :data:`NORMALIZATIONS`.
    batch_size
        Heatmaps read and processed at once.
    progress
        Called with a line of text (rows done, rate, ETA) after each batch.

    Raises
    ------
    AnalysisError
        For an unknown view or normalisation, shapes the view cannot use, or a heatmap with NaN or Inf.
    """
    if view not in VIEWS:
        raise AnalysisError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}.")
    if normalize not in NORMALIZATIONS:
        raise AnalysisError(f"unknown normalisation {normalize!r}; choose one of: {', '.join(NORMALIZATIONS)}.")
    total = int(heatmaps.shape[0])
    positions = np.arange(total) if rows is None else np.asarray(rows, dtype=np.int64)
    source_shape = tuple(int(s) for s in heatmaps.shape[1:])
    reduce, scale = VIEWS[view], NORMALIZATIONS[normalize]
    out_shape = _row_shape(view, source_shape, size)
    values = np.empty((len(positions), math.prod(out_shape)), dtype=np.float32)
    zero: list[np.ndarray] = []
    start_time = time.perf_counter()
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        batch = torch.from_numpy(np.array(read_rows(heatmaps, chunk), dtype=np.float32))  # a writable copy
        bad = ~torch.isfinite(batch.flatten(1)).all(1)
        if bad.any():
            where = int(chunk[int(bad.nonzero()[0])])
            raise AnalysisError(
                f"the heatmap at row {where} contains NaN or Inf; recompute it or leave that sample out."
            )
        reduced = reduce(batch)
        if view == "map" and reduced.shape[-2:] != out_shape:
            pooled = (int(out_shape[0]), int(out_shape[1]))
            reduced = torch.nn.functional.adaptive_avg_pool2d(reduced.unsqueeze(1), pooled).squeeze(1)
        flat = scale(reduced.flatten(1))
        zero.append(start + np.flatnonzero((flat == 0).all(1).numpy()))
        values[start : start + len(chunk)] = flat.numpy()
        if progress is not None:
            done = start + len(chunk)
            rate = done / max(time.perf_counter() - start_time, 1e-9)
            progress(
                f"heatmaps read: {done}/{len(positions)} ({rate:.0f}/s, ETA {(len(positions) - done) / rate:.0f} s)"
            )
    return Features(values, out_shape, source_shape, np.concatenate(zero) if zero else np.empty(0, np.int64))


def _row_shape(view: str, source_shape: tuple[int, ...], size: int | None) -> tuple[int, ...]:
    if view == "map":
        if len(source_shape) not in (2, 3):
            raise AnalysisError(
                f"view 'map' needs heatmaps shaped (N, H, W) or (N, C, H, W), got one sample of shape "
                f"{source_shape}; use view 'channels' or 'flat' for other shapes."
            )
        return pooled_size(source_shape[-2], source_shape[-1], size)
    if view == "channels":
        if len(source_shape) < 1:
            raise AnalysisError("view 'channels' needs relevance shaped (N, C, ...), got one value per sample.")
        return (source_shape[0],)
    return source_shape
