r"""Randomisation sanity check (Adebayo et al., 2018): an explanation must depend on the model.

Cascading layer randomisation re-initialises the model's layers one after another, from the
output towards the input, and explains the same inputs for the same target after each stage.
The similarity of each stage's explanation to the original one should fall quickly: an
explanation that stays the same once the weights are random (an edge detector, say) does not
explain the model.

Similarity per stage and sample: Spearman rank correlation and SSIM, computed on
:math:`|R|` by default (as Adebayo et al. and Quantus do), each map divided by its largest
magnitude before SSIM.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ._common import ExplainFn, flat, predicted_class, target_indices
from .similarity import spearman, ssim

__all__ = ["SIMILARITIES", "RandomisationResult", "cascading_randomisation", "randomisable_layers"]

SIMILARITIES = ("spearman", "ssim")


@dataclass
class RandomisationResult:
    """Similarity of the explanation after each randomisation stage to the original explanation.

    Attributes
    ----------
    layers
        Module paths in the order they were randomised (stage ``k`` has layers ``0..k`` random).
    similarity
        ``{"spearman": (K, N), "ssim": (K, N)}``: one row per stage.
    """

    layers: list[str]
    similarity: dict[str, Tensor] = field(default_factory=dict)

    def final(self, name: str) -> Tensor:
        """Similarity to the original explanation once every layer is random, per sample."""
        return self.similarity[name][-1]


def randomisable_layers(model: nn.Module) -> list[str]:
    """Paths of the modules that own parameters and can re-initialise them (``reset_parameters``),
    from the output side to the input side (reverse registration order, as Quantus orders them)."""
    layers = [
        name
        for name, module in model.named_modules()
        if callable(getattr(module, "reset_parameters", None)) and any(True for _ in module.parameters(recurse=False))
    ]
    return layers[::-1]


def _normalise_by_max(r: Tensor) -> Tensor:
    scale = flat(r).abs().max(1).values.clamp_min(torch.finfo(r.dtype).tiny)
    return r / scale.view(-1, *([1] * (r.dim() - 1)))


def cascading_randomisation(
    model: nn.Module,
    explain_fn: ExplainFn,
    inputs: Tensor,
    target: Any = None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = True,
    similarities: Sequence[str] = SIMILARITIES,
    relevance: Tensor | None = None,
) -> RandomisationResult:
    r"""Randomise ``layers`` cumulatively on a copy of ``model`` and compare explanations after each stage.

    Parameters
    ----------
    model
        The classifier; it is deep-copied, never modified.
    explain_fn
        ``explain_fn(model, inputs, target) -> relevance``; called with the randomised copies.
    inputs
        ``(N, ...)``; ``(N, C, H, W)`` images for SSIM.
    target
        Explained class (``None``: the original model's prediction); the same at every stage.
    layers
        Module paths to randomise, in order (default :func:`randomisable_layers`: top down).
    seed
        Each layer is re-initialised by its ``reset_parameters()`` with torch's generators
        seeded to ``seed`` (Quantus seeds every layer alike, with its ``seed + 1``); the
        caller's random state is restored afterwards.
    absolute
        Compare :math:`|R|` (default) rather than signed relevance.
    similarities
        Any of ``"spearman"``, ``"ssim"``.
    relevance
        The original model's explanation of ``inputs`` if already computed.
    """
    unknown = [s for s in similarities if s not in SIMILARITIES]
    if unknown:
        raise ConfigurationError(f"unknown similarity {unknown[0]!r}; choose from {', '.join(SIMILARITIES)}.")
    n = inputs.shape[0]
    target = predicted_class(model, inputs) if target is None else target_indices(target, n, inputs.device)
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    order = list(randomisable_layers(model) if layers is None else layers)
    for name in order:
        if name not in modules or not callable(getattr(modules[name], "reset_parameters", None)):
            raise ConfigurationError(
                f"layer {name!r} is not a module of the model with reset_parameters(); choose from "
                f"{', '.join(randomisable_layers(model))}."
            )

    def prepare(r: Tensor) -> Tensor:
        r = r.detach()
        return r.abs() if absolute else r

    original = prepare(explain_fn(model, inputs, target) if relevance is None else relevance)
    rows: dict[str, list[Tensor]] = {s: [] for s in similarities}
    devices = [p.device for p in randomised.parameters() if p.device.type == "cuda"]
    for name in order:
        with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
            torch.manual_seed(seed)
            with torch.no_grad():
                modules[name].reset_parameters()  # type: ignore[operator]
        stage = prepare(explain_fn(randomised, inputs, target))
        if "spearman" in rows:
            rows["spearman"].append(spearman(original, stage))
        if "ssim" in rows:
            rows["ssim"].append(ssim(_normalise_by_max(original), _normalise_by_max(stage)))
    return RandomisationResult(order, {s: torch.stack(v) for s, v in rows.items()})
