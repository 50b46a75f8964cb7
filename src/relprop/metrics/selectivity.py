r"""Selectivity: removing the most relevant features first should destroy the score fastest.

Pixel flipping (Bach et al., 2015) and region perturbation (Samek et al., 2017) remove the
input's features region by region in the order the explanation ranks them and record the
model's score after each step:

* **MoRF** (most relevant first): a good explanation makes the curve drop fast;
* **LeRF** (least relevant first): a good explanation keeps the curve high for long.

From the curve :math:`f(x^{(0)}), \dots, f(x^{(L)})` (:math:`x^{(0)} = x`, one step removes
``regions_per_step`` regions):

* AOPC (area over the perturbation curve, Samek et al.):
  :math:`\frac{1}{L+1} \sum_{k=0}^{L} \big(f(x^{(0)}) - f(x^{(k)})\big)` — high for MoRF is good;
* AUC: the trapezoidal area under the curve over the fraction of regions removed, in ``[0, 1]``;
* ABPC (area between the perturbation curves): :math:`\mathrm{AUC_{LeRF}} - \mathrm{AUC_{MoRF}}` — high is good.

Images ``(N, C, H, W)`` are perturbed per pixel (all channels together) in non-overlapping
``patch_size × patch_size`` regions on a grid from the top-left corner (regions at the right
and bottom border are smaller when the side is not a multiple); a region's relevance is the sum
over its pixels and channels. Other inputs ``(N, ...)`` are perturbed element by element.

Each step costs one forward pass of the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError
from ._common import flat, predicted_class, predicted_scores, target_indices

__all__ = [
    "ORDERS",
    "REPLACEMENTS",
    "PerturbationCurve",
    "SelectivityResult",
    "aopc",
    "area_under_curve",
    "gaussian_blur",
    "inpaint_neighbour_mean",
    "perturbation_curve",
    "selectivity",
]

ORDERS = ("morf", "lerf", "random")
#: Named replacements of removed features: zeros, the sample's per-channel mean, a Gaussian
#: blur of the input, uniform noise in ``[low, high]``, and inpainting by the mean of the
#: neighbours that are still present.
REPLACEMENTS = ("zeros", "mean", "blur", "uniform", "inpaint")

#: A replacement: a name from :data:`REPLACEMENTS`, a constant, a fixed reference tensor (broadcastable to
#: ``inputs``, e.g. the training set's per-feature mean), or ``fn(inputs, removed) -> perturbed`` where
#: ``removed`` is a boolean mask broadcastable to ``inputs``.
Replacement = str | float | Tensor | Callable[[Tensor, Tensor], Tensor]


@dataclass
class PerturbationCurve:
    """Model scores while features are removed.

    Attributes
    ----------
    scores
        ``(N, L + 1)``: the score of the explained class after ``k`` steps (column 0: the input).
    fractions
        ``(L + 1,)``: fraction of the regions removed after each step.
    order
        ``"morf"``, ``"lerf"`` or ``"random"``.
    """

    scores: Tensor
    fractions: Tensor
    order: str

    @property
    def aopc(self) -> Tensor:
        """Area over the perturbation curve per sample (see :func:`aopc`)."""
        return aopc(self.scores)

    @property
    def auc(self) -> Tensor:
        """Area under the curve per sample over the fraction removed (see :func:`area_under_curve`)."""
        return area_under_curve(self.scores, self.fractions)


@dataclass
class SelectivityResult:
    """MoRF and LeRF curves of one explanation, with their areas per sample."""

    morf: PerturbationCurve
    lerf: PerturbationCurve

    @property
    def aopc_morf(self) -> Tensor:
        """AOPC of the MoRF curve (higher: the explanation finds what the score needs)."""
        return self.morf.aopc

    @property
    def aopc_lerf(self) -> Tensor:
        """AOPC of the LeRF curve (lower: what it calls irrelevant is irrelevant)."""
        return self.lerf.aopc

    @property
    def abpc(self) -> Tensor:
        """Area between the curves, ``AUC(LeRF) - AUC(MoRF)`` (higher is better)."""
        return self.lerf.auc - self.morf.auc


def aopc(scores: Tensor) -> Tensor:
    r"""Area over the perturbation curve, :math:`\frac{1}{L+1}\sum_{k=0}^{L} (s_0 - s_k)`, per sample.

    Parameters
    ----------
    scores
        ``(N, L + 1)`` curve with the unperturbed score in column 0.
    """
    s = scores.double()
    return (s[:, :1] - s).mean(1)


def area_under_curve(scores: Tensor, fractions: Tensor) -> Tensor:
    r"""Trapezoidal area under the curve, :math:`\sum_k \frac{s_k + s_{k+1}}{2} (t_{k+1} - t_k)`.

    ``t`` is the fraction of regions removed (``fractions``), so the area is in score units.
    """
    s = scores.double()
    t = fractions.double().to(s.device)
    return ((s[:, 1:] + s[:, :-1]) / 2 * (t[1:] - t[:-1])).sum(1)


def gaussian_blur(images: Tensor, sigma: float = 1.0) -> Tensor:
    """Blur each channel of ``(N, C, *spatial)`` inputs with a separable Gaussian of std ``sigma`` pixels.

    The kernel reaches ``ceil(3σ)`` pixels (at least 1) to each side and sums to 1; edges are
    replicated, so a constant image stays constant (zero padding would darken the border).
    """
    if not sigma > 0:
        raise ConfigurationError(f"blur_sigma must be > 0, got {sigma!r}.")
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = images
    for dim in range(2, images.dim()):
        moved = out.movedim(dim, -1)
        shape = moved.shape
        rows = F.pad(moved.reshape(-1, 1, shape[-1]), (radius, radius), mode="replicate")
        out = F.conv1d(rows, kernel).reshape(shape).movedim(-1, dim)
    return out.contiguous()


def inpaint_neighbour_mean(images: Tensor, removed: Tensor) -> Tensor:
    r"""Fill removed pixels with the mean of their present 8-neighbours, ring by ring.

    Pixels next to present ones get the mean of those (a 3×3 normalised convolution); the
    next ring is then filled from the pixels filled before, until none is left. With every
    pixel removed, the image's per-channel mean is used.

    Parameters
    ----------
    images
        ``(N, C, H, W)``.
    removed
        Boolean ``(N, 1, H, W)`` (or ``(N, C, H, W)``) mask of the pixels to fill.
    """
    known = (~removed.bool()).to(images.dtype).expand_as(images).contiguous()
    values = images * known
    c = images.shape[1]
    ones = torch.ones(c, 1, 3, 3, device=images.device, dtype=images.dtype)
    for _ in range(sum(images.shape[2:])):
        if bool(known.all()):
            break
        total = F.conv2d(values, ones, padding=1, groups=c)
        count = F.conv2d(known, ones, padding=1, groups=c)
        fill = (known == 0) & (count > 0)
        if not bool(fill.any()):
            break
        values = torch.where(fill, total / count.clamp_min(1), values)
        known = torch.where(fill, torch.ones_like(known), known)
    channel_mean = images.mean((2, 3), keepdim=True).expand_as(images)
    return torch.where(known > 0, values, channel_mean)


def _replacer(
    replacement: Replacement,
    inputs: Tensor,
    low: float | None,
    high: float | None,
    blur_sigma: float,
    generator: torch.Generator | None,
) -> Callable[[Tensor], Tensor]:
    """``perturb(removed) -> inputs with the removed features replaced``."""
    image = inputs.dim() == 4
    if isinstance(replacement, Tensor):
        return _reference_replacer(replacement, inputs)
    if callable(replacement):
        fn = replacement
        return lambda removed: fn(inputs, removed)
    if isinstance(replacement, (int, float)) and not isinstance(replacement, bool):
        baseline = torch.full_like(inputs, float(replacement))
    elif replacement == "zeros":
        baseline = torch.zeros_like(inputs)
    elif replacement == "mean":
        dims = tuple(range(2, inputs.dim())) if image else tuple(range(1, inputs.dim()))
        baseline = inputs.mean(dims, keepdim=True).expand_as(inputs)
    elif replacement == "uniform":
        lo = float(inputs.min()) if low is None else low
        hi = float(inputs.max()) if high is None else high
        noise = torch.rand(inputs.shape, generator=generator, device=generator.device if generator else None)
        baseline = (lo + (hi - lo) * noise).to(inputs)
    elif replacement in ("blur", "inpaint"):
        if not image:
            raise ConfigurationError(
                f"replacement {replacement!r} needs images (N, C, H, W), got {tuple(inputs.shape)}."
            )
        if replacement == "inpaint":
            return lambda removed: inpaint_neighbour_mean(inputs, removed)
        baseline = gaussian_blur(inputs, blur_sigma)
    else:
        raise ConfigurationError(
            f"unknown replacement {replacement!r}; choose one of {', '.join(REPLACEMENTS)}, a number or a function."
        )
    return lambda removed: torch.where(removed, baseline, inputs)


def _reference_replacer(reference: Tensor, inputs: Tensor) -> Callable[[Tensor], Tensor]:
    """Removed features take the value of a fixed ``reference`` (one sample's shape, or broadcastable)."""
    try:
        baseline = torch.broadcast_to(reference.detach().to(inputs), inputs.shape)
    except RuntimeError:
        raise ConfigurationError(
            f"replacement tensor of shape {tuple(reference.shape)} does not fit inputs of shape "
            f"{tuple(inputs.shape)}; pass one shaped like one input or broadcastable to the batch."
        ) from None
    return lambda removed: torch.where(removed, baseline, inputs)


def _regions(inputs: Tensor, patch_size: int) -> tuple[Tensor, int, tuple[int, ...]]:
    """Region id of every feature, the number of regions, and the shape of the removal mask."""
    n = inputs.shape[0]
    if inputs.dim() == 4:
        h, w = inputs.shape[2:]
        rows = torch.arange(h, device=inputs.device) // patch_size
        cols = torch.arange(w, device=inputs.device) // patch_size
        per_row = math.ceil(w / patch_size)
        region = (rows.view(-1, 1) * per_row + cols.view(1, -1)).flatten()
        return region, math.ceil(h / patch_size) * per_row, (n, 1, h, w)
    if patch_size != 1:
        raise ConfigurationError(
            f"patch_size {patch_size} needs images (N, C, H, W); inputs of shape {tuple(inputs.shape)} are perturbed "
            "feature by feature, so use patch_size=1."
        )
    d = flat(inputs).shape[1]
    return torch.arange(d, device=inputs.device), d, tuple(inputs.shape)


def _feature_relevance(relevance: Tensor, inputs: Tensor) -> Tensor:
    """Relevance per perturbed feature ``(N, D)``: per pixel for images, per element otherwise."""
    if inputs.dim() == 4:
        n, _, h, w = inputs.shape
        if relevance.shape == inputs.shape or (relevance.dim() == 4 and relevance.shape[1] == 1):
            return relevance.sum(1).reshape(n, h * w)
        if relevance.shape == (n, h, w):
            return relevance.reshape(n, h * w)
    elif relevance.shape == inputs.shape:
        return flat(relevance)
    raise ConfigurationError(
        f"relevance of shape {tuple(relevance.shape)} does not fit inputs of shape {tuple(inputs.shape)}; pass "
        "relevance shaped like the inputs."
    )


def perturbation_curve(
    model: nn.Module,
    inputs: Tensor,
    relevance: Tensor,
    target: Any = None,
    *,
    order: str = "morf",
    patch_size: int = 1,
    regions_per_step: int = 1,
    steps: int | None = None,
    replacement: Replacement = "zeros",
    score: str = "logit",
    low: float | None = None,
    high: float | None = None,
    blur_sigma: float = 1.0,
    generator: torch.Generator | None = None,
) -> PerturbationCurve:
    """Remove features in the order of ``relevance`` and record the model's score after each step.

    Parameters
    ----------
    model
        The classifier (eval mode); called once per step on the whole batch, without gradients.
    inputs
        ``(N, C, H, W)`` images or ``(N, ...)`` features.
    relevance
        The explanation, shaped like ``inputs`` (or ``(N, H, W)`` per pixel).
    target
        Class whose score is tracked: ``None`` (the predicted class), an index, or one per sample.
    order
        ``"morf"`` (most relevant first), ``"lerf"`` (least relevant first) or ``"random"``.
        Ties keep the regions' positional order.
    patch_size
        Side of the square regions (images only).
    regions_per_step
        Regions removed per step (the ``features_in_step`` of Quantus' pixel flipping).
    steps
        Stop after this many steps (default: until everything is removed).
    replacement
        What removed features become: ``"zeros"``, ``"mean"`` (per sample and channel), ``"blur"``
        (Gaussian, ``blur_sigma``), ``"uniform"`` (noise in ``[low, high]``, default the batch's
        range), ``"inpaint"`` (mean of the present neighbours), a constant, a fixed reference tensor
        (shaped like one input or broadcastable to ``inputs``: e.g. the training set's mean), or a function.
    score
        ``"logit"`` or ``"probability"``.
    generator
        Random generator for ``order="random"`` and ``"uniform"`` noise.

    Returns
    -------
    PerturbationCurve
    """
    if order not in ORDERS:
        raise ConfigurationError(f"order must be one of {', '.join(ORDERS)}, got {order!r}.")
    if patch_size < 1 or regions_per_step < 1:
        raise ConfigurationError(
            f"patch_size and regions_per_step must be at least 1, got {patch_size} and {regions_per_step}."
        )
    n = inputs.shape[0]
    region_of_feature, n_regions, mask_shape = _regions(inputs, patch_size)
    feature_relevance = _feature_relevance(relevance.to(inputs.device), inputs).double()
    region_relevance = torch.zeros(n, n_regions, dtype=torch.float64, device=inputs.device)
    region_relevance.index_add_(1, region_of_feature, feature_relevance)
    if order == "random":
        keys = torch.rand(n, n_regions, generator=generator, device=generator.device if generator else None)
        ranking = keys.to(inputs.device).argsort(dim=1)
    else:
        ranking = region_relevance.argsort(dim=1, descending=order == "morf", stable=True)
    position = torch.empty_like(ranking).scatter_(
        1, ranking, torch.arange(n_regions, device=inputs.device).expand(n, -1).contiguous()
    )
    region_step = position // regions_per_step + 1
    feature_step = region_step[:, region_of_feature]  # (N, D): the step that removes each feature
    total_steps = math.ceil(n_regions / regions_per_step)
    if steps is not None:
        total_steps = min(total_steps, steps)

    target = predicted_class(model, inputs) if target is None else target_indices(target, n, inputs.device)
    perturb = _replacer(replacement, inputs, low, high, blur_sigma, generator)
    scores = [predicted_scores(model, inputs, target, score)]
    for step in range(1, total_steps + 1):
        removed = (feature_step <= step).view(mask_shape)
        scores.append(predicted_scores(model, perturb(removed), target, score))
    fractions = torch.clamp(torch.arange(total_steps + 1, dtype=torch.float64) * regions_per_step / n_regions, max=1.0)
    return PerturbationCurve(torch.stack(scores, 1).detach(), fractions, order)


def selectivity(
    model: nn.Module,
    inputs: Tensor,
    relevance: Tensor,
    target: Any = None,
    **options: Any,
) -> SelectivityResult:
    """MoRF and LeRF perturbation curves of one explanation (options as :func:`perturbation_curve`)."""
    if "order" in options:
        raise ConfigurationError("selectivity computes both orders; call perturbation_curve for one order.")
    return SelectivityResult(
        morf=perturbation_curve(model, inputs, relevance, target, order="morf", **options),
        lerf=perturbation_curve(model, inputs, relevance, target, order="lerf", **options),
    )
