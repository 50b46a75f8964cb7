r"""Complexity and sparsity of an explanation (fewer, stronger features are easier to read).

Both act on the relevance magnitudes :math:`|R_i|` of all ``D`` features of a sample:

* :func:`entropy` (Bhatt et al., 2020, "complexity"): :math:`-\sum_i p_i \log p_i` with
  :math:`p_i = |R_i| / \sum_j |R_j|` — 0 for one feature, :math:`\log D` for a uniform map.
* :func:`gini` (Chalasani et al., 2020, "sparseness"): the Gini index of :math:`|R|` — 0 for a
  uniform map, :math:`1 - 1/D` for one feature.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import flat, safe_ratio

__all__ = ["entropy", "gini"]


def entropy(relevance: Tensor, normalize: bool = False) -> Tensor:
    r"""Shannon entropy (natural log) of the relevance distribution :math:`p_i = |R_i| / \sum_j |R_j|`.

    Parameters
    ----------
    normalize
        Divide by :math:`\log D` so that values lie in ``[0, 1]`` for any input size.

    Returns
    -------
    Tensor
        ``(N,)`` float64, lower is simpler; NaN for an all-zero explanation. :math:`0 \log 0 = 0`.
    """
    magnitude = flat(relevance).double().abs()
    p = safe_ratio(magnitude, magnitude.sum(1, keepdim=True).expand_as(magnitude))
    terms = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), torch.zeros_like(p))
    h = -terms.sum(1)
    h = torch.where(p.isnan().any(1), torch.nan, h)
    if normalize:
        d = magnitude.shape[1]
        h = h / math.log(d) if d > 1 else torch.zeros_like(h)
    return h


def gini(relevance: Tensor) -> Tensor:
    r"""Gini index of :math:`|R|` per sample.

    With the magnitudes sorted ascending, :math:`a_{(1)} \le \dots \le a_{(D)}`,

    .. math:: G = \frac{\sum_{k=1}^{D} (2k - D - 1)\, a_{(k)}}{D \sum_k a_{(k)}}.

    Returns
    -------
    Tensor
        ``(N,)`` float64 in ``[0, 1 - 1/D]``, higher is sparser; NaN for an all-zero explanation.
    """
    ordered = flat(relevance).double().abs().sort(1).values
    d = ordered.shape[1]
    weights = 2 * torch.arange(1, d + 1, dtype=torch.float64, device=ordered.device) - d - 1
    return safe_ratio((weights * ordered).sum(1), d * ordered.sum(1))
