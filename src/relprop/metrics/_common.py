"""Shapes, types and small reductions shared by the metric families."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError

__all__ = [
    "ExplainFn",
    "check_same_shape",
    "flat",
    "pixel_map",
    "predicted_class",
    "predicted_scores",
    "safe_ratio",
    "target_indices",
]

#: An explanation method as the metrics call it: ``explain_fn(model, inputs, target) -> relevance``,
#: with ``target`` a ``LongTensor`` of one class per sample and ``relevance`` shaped like ``inputs``.
ExplainFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def flat(t: Tensor) -> Tensor:
    """``(N, ...)`` → ``(N, D)``: one row of features per sample."""
    return t.reshape(t.shape[0], -1)


def pixel_map(relevance: Tensor) -> Tensor:
    """Relevance per pixel: ``(N, C, H, W)`` → ``(N, H, W)`` summed over channels; other shapes unchanged.

    A pixel's relevance is the sum over its colour channels (relevance is additive), so that
    perturbation and localisation metrics act on pixels, as a person reads a heatmap.
    """
    return relevance.sum(1) if relevance.dim() == 4 else relevance


def safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with NaN where the denominator is 0 (the ratio is undefined there)."""
    nan = torch.full_like(numerator, float("nan"))
    return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1), nan)


def target_indices(target: Any, n: int, device: torch.device) -> Tensor:
    """One class index per sample as a ``LongTensor`` of shape ``(n,)`` (an int is broadcast)."""
    t = torch.as_tensor(target, device=device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ConfigurationError(f"target must hold class indices (integers), got dtype {t.dtype}.")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ConfigurationError(f"got {t.numel()} targets for {n} inputs; pass one class index or one per input.")
    return t


def predicted_class(model: nn.Module, inputs: Tensor) -> Tensor:
    """The model's predicted class per sample (arg-max over dim 1, summed over any further dims), ``(N,)``."""
    with torch.no_grad():
        output = model(inputs)
    return output.reshape(output.shape[0], output.shape[1], -1).sum(2).argmax(1)


def predicted_scores(model: nn.Module, inputs: Tensor, target: Tensor, score: str = "logit") -> Tensor:
    """The model's score for ``target`` on ``inputs``, without gradients: ``(N,)``.

    Parameters
    ----------
    score
        ``"logit"`` (the output itself, what LRP explains) or ``"probability"`` (softmax over dim 1).
    """
    if score not in ("logit", "probability"):
        raise ConfigurationError(f"score must be 'logit' or 'probability', got {score!r}.")
    with torch.no_grad():
        output = model(inputs)
        if score == "probability":
            output = torch.softmax(output, dim=1)
        return output.reshape(output.shape[0], output.shape[1], -1).sum(2).gather(1, target.view(-1, 1)).squeeze(1)


def check_same_shape(name: str, a: Tensor, b: Tensor) -> None:
    """Raise a :class:`ConfigurationError` naming ``name`` unless ``a`` and ``b`` have one shape."""
    if a.shape != b.shape:
        raise ConfigurationError(
            f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; pass tensors of one shape."
        )
