r"""Positivity: a feature is either relevant (positive) or irrelevant (zero).

Measured as the share of the relevance mass that is negative,
:math:`\sum_i \max(-R_i, 0) / \sum_i |R_i|`: 0 for an all-positive explanation, 1 for an
all-negative one, 0.5 when positive and negative mass balance.
"""

from __future__ import annotations

from torch import Tensor

from ._common import flat, safe_ratio

__all__ = ["negative_share"]


def negative_share(relevance: Tensor) -> Tensor:
    r"""Share of negative relevance mass per sample, :math:`\sum_i R_i^- / \sum_i |R_i|` with :math:`R^- = \max(-R, 0)`.

    Returns
    -------
    Tensor
        ``(N,)`` float64 in ``[0, 1]``; NaN for an all-zero explanation.
    """
    r = flat(relevance).double()
    return safe_ratio((-r).clamp_min(0).sum(1), r.abs().sum(1))
