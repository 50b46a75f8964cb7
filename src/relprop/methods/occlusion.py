r"""Occlusion (Zeiler & Fergus 2014): how much the score drops when a patch is covered.

A window of shape ``patch`` slides over each sample with step ``stride``; for every position
``w`` the features inside it are replaced by ``value`` and

.. math::

    R_i = \frac{1}{|\{w \ni i\}|} \sum_{w \ni i} \bigl(s(x) - s(x_{[w \leftarrow v]})\bigr),

the score drop averaged over the windows that cover feature ``i``. Window positions are
``0, stride, 2·stride, …`` along each dimension up to the first one that reaches the end;
that last window is cut at the border, so every feature is covered (Captum's ``Occlusion``
places windows the same way). Occluded copies are evaluated in batches of at most
``batch_size`` model inputs: ``windows × N / batch_size`` forward passes, no backward pass.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..explanation import Explanation
from . import _common, register

__all__ = ["occlusion", "window_slices"]


def _patch_dims(x: Tensor) -> int:
    """Number of trailing dimensions an integer patch size applies to (the spatial ones)."""
    return x.dim() - 2 if x.dim() >= 3 else x.dim() - 1


def window_slices(shape: tuple[int, ...], patch: tuple[int, ...], stride: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The window positions over a sample of ``shape`` (each a tuple of slices, one per dimension)."""
    starts_per_dim = []
    for size, p, s in zip(shape, patch, stride, strict=True):
        count = math.ceil((size - p) / s) + 1
        starts_per_dim.append([i * s for i in range(count)])
    return [
        tuple(slice(start, min(start + p, size)) for start, p, size in zip(starts, patch, shape, strict=True))
        for starts in itertools.product(*starts_per_dim)
    ]


@register("occlusion", "score drop when a sliding patch is replaced by a value (patch, stride, value)")
def occlusion(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    *,
    patch: int | tuple[int, ...] | None = None,
    stride: int | tuple[int, ...] | None = None,
    value: float | str | Tensor = 0.0,
    blur_sigma: float = 5.0,
    batch_size: int = 32,
) -> Explanation:
    r"""Occlusion: :math:`R_i` = mean over the windows covering ``i`` of :math:`s(x) - s(x_{[w \leftarrow v]})`.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.methods.gradient.gradient`.
    patch
        Window size: an int (a square window over the spatial dimensions, all channels at
        once; for ``(N, F)`` inputs a run of features), a tuple over the spatial dimensions, or
        a tuple over all dimensions of one sample (channels first, as Captum's sliding window
        shape). ``None``: one eighth of each spatial size (at least 1), an 8×8 grid of windows.
    stride
        Step between windows, shaped like ``patch``; at most the patch size, so that no
        feature is skipped. ``None``: the patch size (windows that tile the input).
    value
        What an occluded feature becomes: a number; ``"blurred"`` or ``"mean"`` (the feature
        of the blurred input or of its channel mean, as the baselines of
        :func:`relprop.methods._common.make_baseline`); or a tensor shaped like the inputs or
        like one input.
    blur_sigma
        Standard deviation in pixels of the ``"blurred"`` value.
    batch_size
        Model inputs per forward pass.

    Returns
    -------
    Explanation
        ``info`` holds ``windows`` (the number of window positions), ``patch`` and ``stride``
        (over all dimensions of one sample).
    """
    x = inputs  # checked, on the model's device and dtype: see methods.register
    sample_shape = tuple(x.shape[1:])
    n_patch = _patch_dims(x)
    lead = sample_shape[: len(sample_shape) - n_patch]  # dimensions a short patch covers whole (channels)
    if patch is None:
        patch = tuple(max(1, size // 8) for size in sample_shape[len(lead) :])
    full_patch = _full(patch, sample_shape, lead, n_patch, "patch")
    full_stride = full_patch if stride is None else _full(stride, sample_shape, lead, n_patch, "stride")
    for size, p, s in zip(sample_shape, full_patch, full_stride, strict=True):
        if p > size:
            raise ConfigurationError(
                f"occlusion patch {full_patch} does not fit inputs of shape {sample_shape} (per sample); "
                "choose a smaller patch."
            )
        if s > p and p < size:
            raise ConfigurationError(
                f"occlusion stride {full_stride} is larger than the patch {full_patch}, which would skip features; "
                "use a stride of at most the patch size."
            )
    if isinstance(value, bool) or not isinstance(value, (Tensor, str, int, float)):
        raise ConfigurationError(f"occlusion value must be a number, 'blurred', 'mean' or a tensor, got {value!r}.")
    fill = value if isinstance(value, (int, float)) else _common.make_baseline(value, x, "value", blur_sigma)

    batch = x.shape[0]
    with torch.no_grad():
        output = _common.forward(model, x)
    head = _common.resolve_target(output, target)
    windows = window_slices(sample_shape, full_patch, full_stride)
    total = torch.zeros_like(x)
    count = torch.zeros(sample_shape, dtype=x.dtype, device=x.device)
    per_pass = max(1, batch_size // batch)
    for part in _common.chunks(len(windows), per_pass):
        masks = torch.zeros((len(part), *sample_shape), dtype=torch.bool, device=x.device)
        for row, w in enumerate(part):
            masks[(row, *windows[w])] = True
        mask = masks.unsqueeze(1)  # (k, 1, *sample)
        occluded = torch.where(mask, fill if isinstance(fill, Tensor) else float(fill), x)
        k = len(part)
        occluded_scores = _common.scores(
            model, occluded.reshape(k * batch, *sample_shape), _common.expand_head(head.grad, k)
        )
        drop = head.score.unsqueeze(0) - occluded_scores.view(k, batch)  # (k, N)
        weights = mask.to(x.dtype)
        total += (drop.view(k, batch, *([1] * len(sample_shape))) * weights).sum(0)
        count += masks.to(x.dtype).sum(0)
    relevance = total / count
    info = {"method": "occlusion", "windows": len(windows), "patch": full_patch, "stride": full_stride}
    return _common.explanation(relevance, output, head.target, head.score, info)


def _full(value: Any, sample_shape: tuple[int, ...], lead: tuple[int, ...], n_patch: int, name: str) -> tuple[int, ...]:
    """A patch or stride over all dimensions of one sample (leading dimensions covered whole)."""
    if isinstance(value, (tuple, list)) and len(value) == len(sample_shape):
        return _common.as_tuple(tuple(value), len(sample_shape), name)
    return (*lead, *_common.as_tuple(value, n_patch, name))
