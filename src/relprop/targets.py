r"""What to explain: the target class and how relevance enters at the top of the network.

In the gradient form the initial relevance ``R = z ⊙ g`` is set by the initial gradient
``g`` at the model output ``z``:

* ``"logit"`` (default): ``g = e_c``, so the explained score is the logit ``z_c``.
* contrastive: ``g = e_c - e_k`` explains ``z_c - z_k`` (class c against class k), and
  ``contrast="rest"`` explains ``z_c - mean_{c'≠c} z_{c'}``.
* ``"log-odds"`` (Montavon et al., "Handling the top layer"): the explained score is
  :math:`\eta_c = \log\frac{P_c}{1 - P_c} = -\log\sum_{c' \ne c} e^{-(z_c - z_{c'})}`.
  It is propagated as an extra layer: the differences ``z_c - z_{c'}`` form a linear layer,
  topped by a soft-min. The soft-min hands each difference the relevance
  :math:`R_{c'} = (z_c - z_{c'})\,p_{c'}` with :math:`p = \mathrm{softmin}_{c' \ne c}(z_c - z_{c'})`,
  which in the gradient form is ``g = e_c - p``. What the soft-min does not conserve
  (``η_c - Σ R_{c'}``) is recorded as ``top_absorbed`` in the ledger.
* a tensor shaped like the output: the initial relevance itself.
* a :class:`TargetSpec` such as a region of a dense output (:func:`region`,
  :func:`class_region`, in :mod:`relprop.regions`): it builds its own initial gradient; the
  explained score is the region's score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .errors import TargetError
from .finite import first_non_finite
from .rules import per_sample_sum, safe_divide

# region, class_region, Region and RegionTarget are offered here too (see __getattr__ below).
__all__ = ["TOP_LAYERS", "TargetSpec", "TopLayer", "initial_relevance"]

TOP_LAYERS = ("logit", "log-odds")


@dataclass
class TopLayer:
    """The initial gradient at the model output and what it explains.

    ``target`` is the explained class per sample (``LongTensor``), or a description of what a
    :class:`TargetSpec` explained (e.g. a :class:`~relprop.regions.RegionTarget`).
    """

    grad: Tensor
    target: Any
    score: Tensor
    entering: Tensor

    @property
    def absorbed(self) -> Tensor:
        """Explained score that did not enter the network."""
        return self.score - self.entering


class TargetSpec(ABC):
    """A target that builds its own initial gradient at the model output (e.g. a region).

    Subclasses implement :meth:`resolve`; every place that takes ``target=`` (LRP, every method)
    accepts them, because all resolve targets through :func:`initial_relevance`.
    """

    @abstractmethod
    def resolve(self, output: Tensor, top: str = "logit", contrast: Any = None) -> TopLayer:
        """The initial gradient ``∂s/∂z`` at ``output``, the explained score ``s`` and a description."""


def _class_indices(target: Any, output: Tensor) -> Tensor:
    n, n_classes = output.shape[0], output.shape[1]
    if target is None:
        scores = output.detach().reshape(n, n_classes, -1).sum(2)
        return scores.argmax(1)
    if isinstance(target, bool):
        raise TargetError(f"target must be a class index, a list of indices or a tensor, got {target!r}.")
    _check_python_indices(target, n_classes)
    if isinstance(target, int):
        indices = torch.full((n,), target, dtype=torch.long, device=output.device)
    else:
        try:
            indices = torch.as_tensor(target, device=output.device)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise TargetError(
                f"target must be None, a class index, a list of class indices or a tensor, got {target!r}."
            ) from None
        if indices.dtype == torch.bool:
            raise TargetError(
                f"target is a boolean tensor of shape {tuple(indices.shape)}; to explain the score of a region of a "
                "dense output pass target=relprop.targets.region(mask)."
            )
        if indices.is_floating_point() or indices.is_complex():
            raise TargetError(
                f"target indices must be integers, got dtype {indices.dtype}; to give initial relevance pass "
                f"a tensor shaped like the output {tuple(output.shape)}."
            )
        if indices.dim() > 1:
            raise TargetError(
                f"target indices must be one index or a flat list of one index per sample, got shape "
                f"{tuple(indices.shape)}; flatten them (e.g. labels.reshape(-1))."
            )
        indices = indices.long().reshape(-1)
        if indices.numel() == 1:
            indices = indices.expand(n)
        elif indices.numel() != n:
            raise TargetError(
                f"got {indices.numel()} target indices for a batch of {n}; pass one index, or one per sample."
            )
    bad = (indices < 0) | (indices >= n_classes)
    if bool(bad.any()):
        first = int(indices[bad][0])
        raise TargetError(
            f"target {first} is out of range for a model with {n_classes} outputs; valid classes are "
            f"0..{n_classes - 1}."
        )
    return indices


def _check_python_indices(target: Any, n_classes: int) -> None:
    """Refuse Python ints beyond ``int64`` (and nested lists) before torch sees them."""
    items = target if isinstance(target, (list, tuple)) else [target]
    for item in items:
        if isinstance(item, (list, tuple)):
            raise TargetError(
                f"target must be one class index or a flat list of one index per sample, got the nested list "
                f"{target!r}; flatten it."
            )
        if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
            raise TargetError(
                f"target {item} is out of range for a model with {n_classes} outputs; valid classes are "
                f"0..{n_classes - 1}."
            )


def _one_hot(indices: Tensor, output: Tensor) -> Tensor:
    onehot = torch.zeros(output.shape[:2], dtype=output.dtype, device=output.device)
    onehot.scatter_(1, indices.view(-1, 1), 1.0)
    return onehot.view(*output.shape[:2], *([1] * (output.dim() - 2))).expand_as(output).contiguous()


def initial_relevance(
    output: Tensor,
    target: Any = None,
    top: str = "logit",
    contrast: Any = None,
) -> TopLayer:
    """Build the initial gradient for ``output`` (shape ``(N, C, ...)``) and the explained score.

    Parameters
    ----------
    output
        The model output (logits), batch first, classes on dimension 1.
    target
        ``None`` (the predicted class), a class index, one index per sample, a tensor shaped
        like ``output`` that is the initial relevance, or a :class:`TargetSpec` (a region).
    top
        ``"logit"`` or ``"log-odds"``.
    contrast
        ``None``; a class index (or one per sample) to explain ``z_c - z_k``; or ``"rest"`` to
        explain ``z_c`` against the mean of all other logits.
    """
    if isinstance(target, TargetSpec):
        return target.resolve(output.detach(), top, contrast)
    if output.dim() < 2:
        raise TargetError(
            f"the model output has shape {tuple(output.shape)}; relprop needs batch-first outputs with the "
            "classes on dimension 1, e.g. (N, C)."
        )
    if top not in TOP_LAYERS:
        raise TargetError(f"unknown top layer {top!r}; choose one of: {', '.join(TOP_LAYERS)}.")
    z = output.detach()
    n, n_classes = z.shape[0], z.shape[1]

    if isinstance(target, Tensor) and target.is_floating_point() and target.shape == z.shape:
        if top != "logit" or contrast is not None:
            raise TargetError("an initial-relevance tensor cannot be combined with top='log-odds' or contrast.")
        found = first_non_finite(target)
        if found is not None:
            raise TargetError(
                f"the initial-relevance target holds {found[1]} at {found[0]}; pass finite values (it is the "
                "relevance the explanation starts from)."
            )
        relevance = target.to(z)
        grad = safe_divide(relevance, z)
        indices = relevance.reshape(n, n_classes, -1).sum(2).argmax(1)
        return TopLayer(grad, indices, per_sample_sum(relevance), per_sample_sum(z * grad))
    if isinstance(target, Tensor) and target.is_floating_point() and target.dim() >= 2:
        raise TargetError(
            f"an initial-relevance tensor must have the output's shape {tuple(z.shape)}, got {tuple(target.shape)}; "
            "to explain a region's score pass target=relprop.targets.region(mask)."
        )

    indices = _class_indices(target, z)
    onehot = _one_hot(indices, z)

    if top == "log-odds":
        if contrast is not None:
            raise TargetError("top='log-odds' already contrasts against all other classes; drop contrast.")
        if z.dim() != 2 or n_classes < 2:
            raise TargetError(f"top='log-odds' needs an output of shape (N, C) with C >= 2, got {tuple(z.shape)}.")
        differences = z.gather(1, indices.view(-1, 1)) - z  # z_c - z_c'
        others = onehot == 0
        neg = torch.where(others, -differences, torch.full_like(differences, float("-inf")))
        softmin = torch.softmax(neg, dim=1)
        log_odds = -torch.logsumexp(neg, dim=1)
        grad = onehot - softmin
        return TopLayer(grad, indices, log_odds, per_sample_sum(z * grad))

    grad = onehot
    if contrast is not None:
        if n_classes < 2:
            raise TargetError("a contrastive explanation needs at least two outputs.")
        if isinstance(contrast, str):
            if contrast != "rest":
                raise TargetError(f"contrast must be a class index or 'rest', got {contrast!r}.")
            rest = (1.0 - onehot) / (n_classes - 1)
            grad = onehot - rest
        else:
            against = _class_indices(contrast, z)
            if bool((against == indices).any()):
                raise TargetError(
                    "contrast class equals the target class for at least one sample; choose a different class."
                )
            grad = onehot - _one_hot(against, z)
    score = per_sample_sum(z * grad)
    return TopLayer(grad, indices, score, score)


_REGION_NAMES = frozenset({"Region", "RegionTarget", "class_region", "region"})


def __getattr__(name: str) -> Any:
    # The region targets live in relprop.regions (which builds on this module); they are
    # offered here, where users look for targets, without a circular import.
    if name in _REGION_NAMES:
        from . import regions

        return getattr(regions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
