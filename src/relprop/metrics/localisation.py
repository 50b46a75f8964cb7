r"""Localisation: does the relevance fall on the region known to matter (a ground-truth mask)?

Arras, Osman & Samek (2022, CLEVR-XAI) define two scores on a binary mask :math:`M` of the
ground-truth region:

* relevance mass accuracy :math:`\sum_{i \in M} R_i / \sum_i R_i` — the share of the relevance
  that lies inside the mask (with positive relevance by default, as in the paper);
* relevance rank accuracy :math:`|\mathrm{top}_K(R) \cap M| / K` with :math:`K = |M|` — the share
  of the :math:`K` most relevant features that lie inside the mask.

Masks may be shaped like the relevance, or per pixel ``(N, H, W)`` / ``(N, 1, H, W)`` for
relevance ``(N, C, H, W)``: a pixel's relevance is then the sum over its channels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ._common import flat, safe_ratio

__all__ = ["MASS_MODES", "relevance_mass_accuracy", "relevance_rank_accuracy"]

MASS_MODES = ("positive", "absolute", "signed")


def _align(relevance: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Relevance and a boolean mask of one shape, flattened per sample."""
    m = mask.to(relevance.device).bool()
    r = relevance
    if m.shape != r.shape:
        if r.dim() == 4 and m.dim() == 3 and m.shape == (r.shape[0], *r.shape[2:]):
            m = m.unsqueeze(1)
        if r.dim() == 4 and m.dim() == 4 and m.shape[1] == 1 and m.shape[2:] == r.shape[2:]:
            r = r.sum(1, keepdim=True)
        if m.shape != r.shape:
            raise ConfigurationError(
                f"mask of shape {tuple(mask.shape)} does not fit relevance of shape {tuple(relevance.shape)}; pass a "
                "mask shaped like the relevance or one per pixel, (N, H, W) or (N, 1, H, W)."
            )
    return flat(r).double(), flat(m)


def relevance_mass_accuracy(relevance: Tensor, mask: Tensor, mode: str = "positive") -> Tensor:
    r"""Share of the relevance inside the mask, :math:`\sum_{i \in M} \tilde R_i / \sum_i \tilde R_i`.

    Parameters
    ----------
    relevance
        ``(N, ...)``.
    mask
        Ground-truth region (bool or 0/1), see the module docstring for shapes.
    mode
        :math:`\tilde R`: ``"positive"`` (:math:`\max(R, 0)`, Arras et al.), ``"absolute"`` (:math:`|R|`)
        or ``"signed"`` (:math:`R`; Quantus' default, not bounded to ``[0, 1]``).

    Returns
    -------
    Tensor
        ``(N,)`` float64; 1 when all (positive) relevance lies in the mask. NaN for an empty mask or
        zero total.
    """
    if mode not in MASS_MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MASS_MODES)}, got {mode!r}.")
    r, m = _align(relevance, mask)
    if mode == "positive":
        r = r.clamp_min(0)
    elif mode == "absolute":
        r = r.abs()
    inside = (r * m).sum(1)
    result = safe_ratio(inside, r.sum(1))
    return torch.where(m.any(1), result, torch.nan)


def relevance_rank_accuracy(relevance: Tensor, mask: Tensor) -> Tensor:
    r"""Share of the :math:`K = |M|` most relevant features that lie inside the mask.

    Ties in relevance are broken by feature position (a stable sort), so an all-equal map is
    scored by the position of the mask, not by chance.

    Returns
    -------
    Tensor
        ``(N,)`` float64 in ``[0, 1]``; NaN for an empty mask.
    """
    r, m = _align(relevance, mask)
    k = m.sum(1)
    order = r.argsort(dim=1, descending=True, stable=True)
    rank_of_feature = torch.empty_like(order).scatter_(
        1, order, torch.arange(r.shape[1], device=r.device).expand_as(order).contiguous()
    )
    hits = ((rank_of_feature < k.view(-1, 1)) & m).sum(1).double()
    return safe_ratio(hits, k.double())
