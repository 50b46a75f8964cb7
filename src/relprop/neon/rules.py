r"""The propagation rules of the NEON networks: small objects that own their formulas.

NEON (neuralization–propagation) rewrites a model that is not a neural network as an exact
network of distance or linear layers and (soft-)min pooling, and then explains it with rules
made for those layers. The rules below are the published ones; each conserves relevance
exactly except where a denominator is zero, and what it does not hand down is reported so
that the ledger closes.

* :class:`SoftMinPoolingRule` — the pooling layer :math:`f = \min_k h_k` (or its soft-min).
* :class:`MidpointRule` — the first layer of neuralized k-means.
* :class:`SquaredDistanceRule` — the distance layer of one-class SVMs and kernel density.

References
----------
J. Kauffmann, M. Esders, L. Ruff, G. Montavon, W. Samek, K.-R. Müller, "From clustering to
cluster explanations via neural networks", IEEE TNNLS 35(2), 2024 (arXiv:1906.07633).

J. Kauffmann, K.-R. Müller, G. Montavon, "Towards explaining anomalies: a deep Taylor
decomposition of one-class models", Pattern Recognition 101, 2020 (arXiv:1805.06230).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigurationError

__all__ = ["MidpointRule", "SoftMinPoolingRule", "SquaredDistanceRule", "check_beta", "soft_min"]

#: Elements per chunk when a rule builds an (N, J, D) tensor of per-feature terms.
_CHUNK_ELEMENTS = 1 << 22


def check_beta(beta: float | None, what: str = "beta") -> float | None:
    """``beta`` as a float (``inf`` allowed), ``None`` kept; anything else is refused."""
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or math.isnan(beta) or beta <= 0:
        raise ConfigurationError(f"{what} must be a positive number or inf (hard min), got {beta!r}.")
    return float(beta)


def soft_min(h: Tensor, beta: float | None, dim: int = -1) -> Tensor:
    r"""The soft-min :math:`-\beta^{-1}\log\sum_k e^{-\beta h_k}` over ``dim`` (the minimum for ``beta`` None/inf)."""
    if beta is None or math.isinf(beta):
        return h.min(dim).values
    return -torch.logsumexp(-beta * h, dim=dim) / beta


@dataclass(frozen=True)
class SoftMinPoolingRule:
    r"""Proportional soft-min redistribution on a (soft-)min pooling layer.

    The pooling output :math:`f = \min_k h_k` (or a soft-min of the :math:`h_k`) hands each
    input the share given by the soft-min probabilities of stiffness :math:`\beta`:

    .. math::

        R_k = \frac{e^{-\beta h_k}}{\sum_{k'} e^{-\beta h_{k'}}}\, R_f .

    The shares sum to one, so :math:`\sum_k R_k = R_f` exactly. For :math:`\beta \to \infty`
    the shares become winner-takes-all on the smallest :math:`h_k` (ties split evenly); for
    :math:`\beta \to 0` they become uniform. When :math:`\beta` equals the stiffness of a
    log-sum-exp pooling, :math:`R_k = R_f\, \partial f / \partial h_k` (the gradient shares).
    Kauffmann et al. (2024), Sec. 4 (k-means); Kauffmann et al. (2020), Sec. 3 (one-class SVM).

    Parameters
    ----------
    beta
        The stiffness :math:`\beta > 0`; ``None`` or ``inf`` for winner-takes-all.
    """

    beta: float | None = None

    def __post_init__(self) -> None:
        check_beta(self.beta)

    @property
    def label(self) -> str:
        """A short description for rule tables and ledgers."""
        if self.beta is None or math.isinf(self.beta):
            return "min-pool winner-takes-all"
        return f"soft-min pool beta={self.beta:g}"

    def shares(self, h: Tensor) -> Tensor:
        """The share of each pooled input (last dimension), summing to one."""
        if self.beta is None or math.isinf(self.beta):
            winners = (h == h.min(-1, keepdim=True).values).to(h.dtype)
            return winners / winners.sum(-1, keepdim=True)
        return torch.softmax(-self.beta * h, dim=-1)

    def __call__(self, h: Tensor, relevance: Tensor) -> Tensor:
        """Relevance of the pooled inputs ``h`` (shape ``(N, K)``) from the pooling output's ``(N,)``."""
        return self.shares(h) * relevance.unsqueeze(-1)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with 0 where the denominator is exactly 0."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, 1.0, denominator))


def _rounded_difference(a: Tensor, b: Tensor) -> Tensor:
    """``a - b``, with differences at the level of rounding set to exactly zero."""
    difference = a - b
    noise = 8 * torch.finfo(difference.dtype).eps * (a.abs() + b.abs())
    return torch.where(difference.abs() <= noise, torch.zeros_like(difference), difference)


@dataclass(frozen=True)
class MidpointRule:
    r"""The midpoint rule for the first layer of neuralized k-means.

    Unit :math:`k` of the linear layer computes :math:`h_k = w_k^\top x + b_k` with
    :math:`w_k = M(\mu_c - \mu_k)` and :math:`b_k` such that :math:`h_k` vanishes at the
    midpoint :math:`m_k = (\mu_c + \mu_k)/2` of the two centroids (``M`` the diagonal metric of a
    folded scaler, the identity otherwise), so :math:`h_k = w_k^\top (x - m_k)`. The rule takes
    :math:`m_k` as root point of a first-order Taylor expansion:

    .. math::

        R_i = \sum_k \frac{(x_i - m_{ki})\, w_{ki}}{w_k^\top (x - m_k)}\, R_k .

    Because the denominator is :math:`h_k` itself, :math:`\sum_i R_i = \sum_k R_k` exactly;
    a unit with :math:`h_k = 0` hands down nothing and its :math:`R_k` is reported as absorbed.
    Kauffmann et al. (2024), Sec. 4.
    """

    label: str = "midpoint"

    def __call__(self, x: Tensor, weight: Tensor, midpoint: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
        """Input relevance ``(N, D)`` and what was absorbed ``(N,)``.

        Parameters
        ----------
        x
            Inputs ``(N, D)``.
        weight, midpoint
            Per sample and unit ``(N, K, D)``: the weights ``w_k`` and midpoints ``m_k`` of the
            units the sample's relevance flows through.
        relevance
            Relevance of the units ``(N, K)``.
        """
        terms = (x.unsqueeze(1) - midpoint) * weight
        h = terms.sum(-1)
        scaled = _ratio(relevance, h)
        absorbed = torch.where(h == 0, relevance, torch.zeros_like(relevance)).sum(-1)
        return (terms * scaled.unsqueeze(-1)).sum(1), absorbed


@dataclass(frozen=True)
class SquaredDistanceRule:
    r"""Relevance of a (weighted, shifted) squared-distance unit, in proportion to squared differences.

    Unit :math:`j` computes :math:`d_j = \sum_i g_i (x_i - u_{ji})^2 + b_j` (``g`` the diagonal
    metric of a folded scaler, the ones otherwise; :math:`b_j` the log-weight shift of the
    one-class SVM's :math:`\alpha_j` or the KDE's sample weights). Its relevance goes to the
    features in proportion to their share of the distance:

    .. math::

        R_i = \sum_j \frac{g_i (x_i - u_{ji})^2}{\sum_{i'} g_{i'} (x_{i'} - u_{ji'})^2}\, R_j .

    The shares of each unit sum to one, so :math:`\sum_i R_i = \sum_j R_j`; a unit at zero
    distance (``x`` on a support vector) hands down nothing and its relevance is reported as
    absorbed. Differences at the level of rounding (``|x_i - u_ji| <= 8 eps (|x_i| + |u_ji|)``,
    e.g. a training row against its own support vector mapped back through a folded scaler)
    count as zero, so that rounding noise is never the direction relevance follows.
    Kauffmann et al. (2020), Sec. 3.
    """

    label: str = "squared-distance"

    def __call__(self, x: Tensor, centers: Tensor, metric: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
        """Input relevance ``(N, D)`` and what was absorbed ``(N,)`` from the units' relevance ``(N, J)``."""
        n, d = x.shape
        j = centers.shape[0]
        out = torch.zeros_like(x)
        absorbed = torch.zeros(n, dtype=x.dtype, device=x.device)
        step = max(1, _CHUNK_ELEMENTS // max(1, j * d))
        for start in range(0, n, step):
            rows = slice(start, start + step)
            terms = _rounded_difference(x[rows].unsqueeze(1), centers).square() * metric
            distance = terms.sum(-1)
            scaled = _ratio(relevance[rows], distance)
            out[rows] = (terms * scaled.unsqueeze(-1)).sum(1)
            absorbed[rows] = torch.where(distance == 0, relevance[rows], torch.zeros_like(distance)).sum(-1)
        return out, absorbed
