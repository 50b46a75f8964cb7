r"""Continuity: near-identical inputs with the same prediction get near-identical explanations.

For each input :math:`x` we draw perturbations :math:`x' = x + \delta` (Gaussian noise of standard
deviation ``sigma``, or noise you give), keep those that leave the predicted class unchanged,
explain them for the same target and report

* the local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018)
  :math:`\max_{x'} \lVert R(x) - R(x') \rVert_2 / \lVert x - x' \rVert_2` — lower is more continuous;
* the mean Pearson correlation of :math:`R(x)` and :math:`R(x')` — higher is more continuous.

Each perturbation round costs one explanation of the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ._common import ExplainFn, flat, predicted_class, target_indices
from .similarity import pearson

__all__ = ["ContinuityResult", "continuity", "local_lipschitz"]


@dataclass
class ContinuityResult:
    """Continuity of explanations under small perturbations, per sample.

    Attributes
    ----------
    ratios
        ``(S, N)``: :math:`\\lVert R(x) - R(x') \\rVert_2 / \\lVert x - x' \\rVert_2` for each perturbation,
        NaN where the perturbation changed the prediction (with ``keep_prediction``).
    correlations
        ``(S, N)``: Pearson correlation of :math:`R(x)` and :math:`R(x')`, NaN likewise.
    """

    ratios: Tensor
    correlations: Tensor

    @property
    def kept(self) -> Tensor:
        """Number of perturbations per sample that kept the prediction."""
        return (~self.ratios.isnan()).sum(0)

    @property
    def lipschitz(self) -> Tensor:
        """Local Lipschitz estimate per sample: the largest ratio (NaN if no perturbation was kept)."""
        filled = torch.where(self.ratios.isnan(), torch.full_like(self.ratios, -torch.inf), self.ratios)
        best = filled.max(0).values
        return torch.where(self.kept > 0, best, torch.nan)

    @property
    def correlation(self) -> Tensor:
        """Mean correlation per sample over the kept perturbations."""
        return self.correlations.nanmean(0)


def continuity(
    model: nn.Module,
    explain_fn: ExplainFn,
    inputs: Tensor,
    target: Any = None,
    *,
    n_samples: int = 10,
    sigma: float = 0.05,
    noise: Tensor | None = None,
    keep_prediction: bool = True,
    bounds: Sequence[float] | None = None,
    relevance: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ContinuityResult:
    r"""Explain perturbed copies of ``inputs`` and compare with the explanation of ``inputs``.

    Parameters
    ----------
    model
        The classifier (eval mode).
    explain_fn
        ``explain_fn(model, inputs, target) -> relevance`` shaped like ``inputs``.
    inputs
        ``(N, ...)``.
    target
        Explained class: ``None`` (the predicted class), an index or one per sample; the
        perturbed inputs are explained for the same class.
    n_samples
        Perturbations per input (ignored when ``noise`` is given).
    sigma
        Standard deviation of the Gaussian noise, in input units.
    noise
        ``(S, N, ...)`` perturbations :math:`\delta` to use instead of drawing them.
    keep_prediction
        Ignore perturbations that change the predicted class (the property is defined for
        near-identical *predictions*); with ``False`` every perturbation counts.
    bounds
        ``(low, high)``: clamp perturbed inputs to the data range (the denominator uses the
        clamped difference).
    relevance
        The explanation of ``inputs`` if already computed.
    generator
        Random generator for the noise.
    """
    n = inputs.shape[0]
    original_class = predicted_class(model, inputs)
    target = original_class if target is None else target_indices(target, n, inputs.device)
    if noise is None:
        if n_samples < 1 or sigma <= 0:
            raise ConfigurationError(f"continuity needs n_samples >= 1 and sigma > 0, got {n_samples} and {sigma}.")
        device = generator.device if generator is not None else None
        noise = torch.randn((n_samples, *inputs.shape), generator=generator, device=device) * sigma
    elif noise.shape[1:] != inputs.shape:
        raise ConfigurationError(f"noise must have shape (S, *inputs.shape), got {tuple(noise.shape)}.")
    base = (explain_fn(model, inputs, target) if relevance is None else relevance).detach()
    ratios, correlations = [], []
    for delta in noise.to(inputs):
        perturbed = inputs + delta
        if bounds is not None:
            perturbed = perturbed.clamp(float(bounds[0]), float(bounds[1]))
        explained = explain_fn(model, perturbed, target).detach()
        numerator = flat(explained - base).double().norm(dim=1)
        denominator = flat(perturbed - inputs).double().norm(dim=1)
        ratio = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.nan)
        correlation = pearson(base, explained)
        if keep_prediction:
            changed = predicted_class(model, perturbed) != original_class
            ratio = torch.where(changed, torch.nan, ratio)
            correlation = torch.where(changed, torch.nan, correlation)
        ratios.append(ratio)
        correlations.append(correlation)
    return ContinuityResult(torch.stack(ratios), torch.stack(correlations))


def local_lipschitz(
    model: nn.Module, explain_fn: ExplainFn, inputs: Tensor, target: Any = None, **options: Any
) -> Tensor:
    """The local Lipschitz estimate per sample (:attr:`ContinuityResult.lipschitz`, options as :func:`continuity`)."""
    return continuity(model, explain_fn, inputs, target, **options).lipschitz
