r"""Relevance maximisation over a relevance store: the reference samples of each concept.

Following CRP (Achtibat et al. 2023, "relevance maximisation"), a channel's reference samples
are the data-set samples in which that channel received the most relevance for the explained
class — the samples where the concept *mattered*, rather than where it merely fired (activation
maximisation). The store written by :func:`relprop.dataset.explain_dataset` with
``layers=[layer]`` holds exactly that per sample and channel, so the ranking is a streaming top-k
over the stored ``(N, C)`` array; nothing is recomputed.

A reference *patch* is the part of a reference sample where the concept is: the conditional
heatmap of the sample for that channel (:func:`~relprop.concepts.conditional_heatmaps`) is
smoothed with a square window and the window with the largest positive conditional relevance
is cut out of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import AnalysisError, StoreError
from .conditional import conditional_heatmaps

__all__ = ["ReferencePatch", "reference_patches", "reference_samples", "store_inputs"]


def _require_layer(store: Any, layer: str) -> Any:
    if layer not in store.layers:
        held = ", ".join(store.layers) or "none"
        raise AnalysisError(
            f"{store.path} holds no relevance for layer {layer!r} (it holds: {held}); explain the data set again "
            f"with --layers {layer} to find reference samples for its channels."
        )
    return store.layer(layer)


def _require_complete(store: Any, allow_incomplete: bool) -> None:
    if allow_incomplete:
        return
    try:
        store.require_complete()
    except StoreError as exc:
        raise AnalysisError(f"{exc}; or use what it holds so far (allow_incomplete=True).") from None


def reference_samples(
    store: Any,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    count: int = 8,
    class_: int | None = None,
    allow_incomplete: bool = False,
    batch_size: int = 4096,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each channel of ``layer``, the store samples where it received the most relevance.

    Parameters
    ----------
    store
        A :class:`relprop.dataset.RelevanceStore` holding ``layer`` (per channel, or whole maps:
        summed over positions here).
    channels
        The channels to rank (default: all).
    count
        Reference samples per channel.
    class_
        Only samples explained for this class (the store's ``target`` column).

    Returns
    -------
    ``{channel: (sample indices, relevance)}``, most relevant first.
    """
    _require_complete(store, allow_incomplete)
    array = _require_layer(store, layer)
    n_channels = int(array.shape[1])
    chosen = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < n_channels]
    if bad:
        raise AnalysisError(f"channel {bad[0]} does not exist; {layer} has channels 0 to {n_channels - 1}.")
    candidates = store.indices(class_=class_)
    if len(candidates) == 0:
        what = "no successfully explained sample" if class_ is None else f"no explained sample of class {class_}"
        raise AnalysisError(f"{store.path} holds {what}; nothing to take reference samples from.")
    best_index = np.empty((len(chosen), 0), dtype=np.int64)
    best_value = np.empty((len(chosen), 0), dtype=np.float64)
    for indices, values in array.batches(candidates, size=batch_size):
        relevance = values.reshape(len(values), n_channels, -1).sum(2, dtype=np.float64)[:, chosen].T
        best_index = np.concatenate([best_index, np.broadcast_to(indices, relevance.shape)], axis=1)
        best_value = np.concatenate([best_value, relevance], axis=1)
        keep = np.argsort(-best_value, axis=1, kind="stable")[:, :count]
        best_index = np.take_along_axis(best_index, keep, 1)
        best_value = np.take_along_axis(best_value, keep, 1)
    return {c: (best_index[j].copy(), best_value[j].copy()) for j, c in enumerate(chosen)}


def store_inputs(store: Any, indices: Sequence[int], preprocess: Any = None) -> Tensor:
    """The model inputs of store samples: the stored inputs, or the source opened again."""
    chosen = [int(i) for i in indices]
    if store.inputs is not None:
        return torch.from_numpy(np.asarray(store.inputs[np.asarray(chosen)], dtype=np.float32))
    source = store.source(preprocess)
    return torch.stack([source.load(i).x for i in chosen])


@dataclass
class ReferencePatch:
    """Where in a reference sample a concept is: the box ``(top, left, height, width)`` and the input cut out."""

    index: int
    box: tuple[int, int, int, int]
    patch: Tensor
    heatmap: Tensor


def _best_window(heatmap: Tensor, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the ``size`` window with the most positive relevance in a ``(H, W)`` map."""
    positive = heatmap.clamp(min=0).double()[None, None]
    sums = torch.nn.functional.avg_pool2d(positive, size, stride=1)[0, 0]
    flat = int(torch.argmax(sums))
    return divmod(flat, sums.shape[1])


def reference_patches(
    explainer: Any,
    inputs: Tensor,
    targets: Tensor,
    indices: Sequence[int],
    layer: str,
    channel: int,
    *,
    fraction: float = 0.5,
) -> list[ReferencePatch]:
    """Cut the part of each reference input where ``channel`` of ``layer`` is (its conditional heatmap).

    ``inputs`` ``(n, C, H, W)`` and ``targets`` ``(n,)`` are the reference samples and their
    explained classes; the patch side is ``fraction`` of the input's sides.
    """
    if not 0 < fraction <= 1:
        raise AnalysisError(f"fraction must lie in (0, 1], got {fraction}.")
    heatmaps = conditional_heatmaps(explainer, inputs, targets, layer, [channel])[:, 0].sum(1)
    height, width = heatmaps.shape[-2:]
    size = (max(1, round(height * fraction)), max(1, round(width * fraction)))
    patches = []
    for k, index in enumerate(indices):
        top, left = _best_window(heatmaps[k], size)
        patch = inputs[k, :, top : top + size[0], left : left + size[1]]
        patches.append(ReferencePatch(int(index), (top, left, *size), patch, heatmaps[k]))
    return patches
