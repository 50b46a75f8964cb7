r"""Conditional relevance (Concept Relevance Propagation, Achtibat et al. 2023, Nat. Mach. Intell.).

A *concept* is a channel of an inner layer. The relevance that reaches that layer's output,
:math:`R^{(l)}_{c,\cdot}`, says how much each channel :math:`c` contributed to the explained
score (summed over positions: the channel's relevance for the prediction). Propagating further
down only the relevance of channel :math:`c` — the relevance at the layer multiplied by the mask
:math:`\theta_c` that is 1 on channel :math:`c` and 0 elsewhere — gives the *conditional heatmap*
:math:`R(x \mid \theta_c)`: where in the input the concept is. Every LRP rule below the layer is
linear in the relevance handed to it (its ratios depend on the forward pass only), so

.. math:: \sum_c R(x \mid \theta_c) = R(x),

the conditional heatmaps of all channels add up to the unconditional heatmap.

Batching: the engine's ``conditions={layer: mask}`` applies one mask per sample, so k concepts of
one input are k copies of the input with k one-hot masks — one forward and one backward pass for
all of them, instead of one backward pass per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError

__all__ = ["ConceptRelevance", "channel_masks", "channel_relevance", "conditional_heatmaps", "top_channels"]


@dataclass
class ConceptRelevance:
    """The unconditional explanation of a batch and the per-channel relevance at one layer.

    Attributes
    ----------
    relevance
        ``(N, *input)`` the unconditional heatmaps.
    channels
        ``(N, C)`` relevance of each channel of ``layer`` for the explained score.
    target
        ``(N,)`` the explained class of each sample.
    layer_shape
        The layer output's shape without the batch dimension, ``(C, ...)``.
    """

    layer: str
    relevance: Tensor
    channels: Tensor
    target: Tensor
    layer_shape: tuple[int, ...]


def _per_sample_targets(target: Any, n: int) -> Tensor:
    if isinstance(target, Tensor) and target.dim() == 1 and target.shape[0] == n and not target.is_floating_point():
        return target
    raise ConfigurationError(
        f"concepts explain one class per sample; the target resolved to {target!r}, give a class index or one index "
        "per sample."
    )


def channel_relevance(explainer: Any, inputs: Tensor, target: Any, layer: str) -> ConceptRelevance:
    """Explain ``inputs`` once and return the relevance of every channel of ``layer`` (``layers=`` + sum).

    Parameters
    ----------
    explainer
        A :class:`relprop.Explainer` (its composite decides the rules).
    inputs
        ``(N, *input)`` batch.
    target
        A class index, one per sample, or ``None`` for the predicted class.
    layer
        Module path of the layer whose channels are the concepts (e.g. ``"features.5"``).
    """
    result = explainer(inputs, target, layers=[layer])
    arrived = result.layers[layer]
    per_channel = arrived.flatten(2).sum(2) if arrived.dim() > 2 else arrived
    targets = _per_sample_targets(result.target, len(inputs))
    return ConceptRelevance(layer, result.relevance, per_channel, targets, tuple(arrived.shape[1:]))


def top_channels(channels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` channels with the most relevance per sample: ``(values, indices)``, each ``(N, k)``, largest first."""
    if not 1 <= k <= channels.shape[1]:
        raise ConfigurationError(f"top must lie in [1, {channels.shape[1]}] (the layer's channels), got {k}.")
    return torch.topk(channels, k, dim=1)


def channel_masks(channels: Sequence[int], layer_shape: Sequence[int], like: Tensor) -> Tensor:
    """``(k, C, 1, ...)`` one-hot masks selecting each of ``channels`` of a layer output shaped ``layer_shape``."""
    n_channels = int(layer_shape[0])
    bad = [c for c in channels if not 0 <= int(c) < n_channels]
    if bad:
        raise ConfigurationError(f"channel {bad[0]} does not exist; the layer has channels 0 to {n_channels - 1}.")
    shape = (len(channels), n_channels, *[1] * (len(layer_shape) - 1))
    masks = torch.zeros(shape, dtype=like.dtype, device=like.device)
    masks[torch.arange(len(channels)), torch.as_tensor([int(c) for c in channels])] = 1
    return masks


def conditional_heatmaps(
    explainer: Any,
    inputs: Tensor,
    target: Any,
    layer: str,
    channels: Sequence[int] | Tensor,
    *,
    layer_shape: Sequence[int] | None = None,
    batch_size: int = 32,
) -> Tensor:
    """Input relevance conditioned on single channels of ``layer``: ``(N, k, *input)``.

    ``out[i, j]`` is the heatmap of sample ``i`` when only channel ``channels[j]`` passes its
    relevance down (``channels`` may also be ``(N, k)``: different channels per sample). Rows of
    ``batch_size`` (sample, channel) pairs go through the explainer at once.
    """
    n = len(inputs)
    chosen = torch.as_tensor(channels, dtype=torch.long)
    chosen = chosen.expand(n, -1) if chosen.dim() == 1 else chosen
    if chosen.shape[0] != n:
        raise ConfigurationError(f"channels has rows for {chosen.shape[0]} samples, the batch has {n}.")
    k = chosen.shape[1]
    if layer_shape is None or not isinstance(target, Tensor):
        probe = channel_relevance(explainer, inputs, target, layer)
        layer_shape, target = probe.layer_shape, probe.target
    targets = _per_sample_targets(target, n)
    sample = torch.arange(n).repeat_interleave(k)
    flat = chosen.reshape(-1)
    pieces = []
    for start in range(0, n * k, batch_size):
        rows, picked = sample[start : start + batch_size], flat[start : start + batch_size]
        masks = channel_masks(picked.tolist(), layer_shape, inputs)
        result = explainer(inputs[rows], targets[rows], conditions={layer: masks})
        pieces.append(result.relevance)
    return torch.cat(pieces).reshape(n, k, *inputs.shape[1:])
