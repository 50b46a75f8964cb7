r"""Similarity of two explanations, per sample: Pearson, Spearman and SSIM.

Used by the randomisation sanity check (how similar is the explanation of a randomised model
to the original one?) and by continuity (how similar are explanations of near-identical inputs?).
All three return one value per sample, NaN where the measure is undefined (a constant map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigurationError
from ._common import check_same_shape, flat, pixel_map

__all__ = ["average_ranks", "pearson", "spearman", "ssim"]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    r"""Pearson correlation of each pair of samples, over all their features.

    :math:`\rho = \frac{\sum_i (a_i - \bar a)(b_i - \bar b)}{\sqrt{\sum_i (a_i - \bar a)^2 \sum_i (b_i - \bar b)^2}}`,
    computed in float64; NaN when either sample is constant.

    Parameters
    ----------
    a, b
        Tensors of one shape ``(N, ...)``.

    Returns
    -------
    Tensor
        ``(N,)`` float64.
    """
    check_same_shape("pearson", a, b)
    x, y = flat(a).double(), flat(b).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    denominator = (x.square().sum(1) * y.square().sum(1)).sqrt()
    covariance = (x * y).sum(1)
    return torch.where(denominator > 0, covariance / denominator.clamp_min(1e-300), torch.nan)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..D`` of each row of ``values`` ``(N, D)``; tied values share the mean of their ranks.

    This is the ranking of Spearman's correlation (``scipy.stats.rankdata(method="average")``),
    which matters for explanations: many pixels carry exactly zero relevance.
    """
    n, d = values.shape
    ordered, order = values.double().sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # One id per run of equal values, unique across rows, so that one scatter handles the batch.
    group = starts.long().cumsum(1) - 1 + torch.arange(n, device=values.device).view(-1, 1) * d
    positions = torch.arange(1, d + 1, dtype=torch.float64, device=values.device).expand(n, d)
    sums = torch.zeros(n * d, dtype=torch.float64, device=values.device)
    sums.index_add_(0, group.flatten(), positions.flatten())
    counts = torch.zeros(n * d, dtype=torch.float64, device=values.device)
    counts.index_add_(0, group.flatten(), torch.ones_like(positions).flatten())
    mean_rank = (sums / counts.clamp_min(1))[group]
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of samples: the Pearson correlation of their average ranks.

    Returns
    -------
    Tensor
        ``(N,)`` float64; NaN when either sample is constant.
    """
    check_same_shape("spearman", a, b)
    return pearson(average_ranks(flat(a)), average_ranks(flat(b)))


def ssim(
    a: Tensor,
    b: Tensor,
    window: int = 7,
    data_range: float | Tensor | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""Structural similarity (Wang et al., 2004) of two heatmaps per sample, as scikit-image computes it.

    With local means :math:`\mu`, sample variances :math:`\sigma^2` and covariance :math:`\sigma_{ab}`
    over a ``window × window`` box,

    .. math::

        \mathrm{SSIM} = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
                             {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
        \quad C_1 = (k_1 L)^2,\; C_2 = (k_2 L)^2,

    averaged over the windows that lie inside the image (scikit-image's
    ``structural_similarity`` with its defaults: uniform window, sample covariance, border cropped).

    Parameters
    ----------
    a, b
        Relevance ``(N, C, H, W)`` (channels are summed to one map per pixel) or maps ``(N, H, W)``.
    window
        Odd side of the box window; at most the smaller image side.
    data_range
        :math:`L`; default per sample ``max − min`` over both maps (as Quantus passes it).

    Returns
    -------
    Tensor
        ``(N,)`` float64.
    """
    check_same_shape("ssim", a, b)
    x, y = pixel_map(a).double(), pixel_map(b).double()
    if x.dim() != 3:
        raise ConfigurationError(f"ssim needs image-shaped relevance (N, C, H, W) or (N, H, W), got {tuple(a.shape)}.")
    if window % 2 == 0 or window > min(x.shape[1:]):
        raise ConfigurationError(
            f"ssim window {window} must be odd and at most the image side {min(x.shape[1:])}; choose a smaller window."
        )
    n = x.shape[0]
    if data_range is None:
        both = torch.cat([flat(x), flat(y)], 1)
        value_range = (both.max(1).values - both.min(1).values).view(n, 1, 1)
    else:
        value_range = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
    x, y = x.unsqueeze(1), y.unsqueeze(1)

    def box(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, window, stride=1).squeeze(1)

    # Windows inside the image only: scikit-image filters with padding, then crops (window-1)/2
    # pixels at every border, which leaves exactly these.
    covariance_norm = window * window / (window * window - 1)
    mu_x, mu_y = box(x), box(y)
    var_x = covariance_norm * (box(x * x) - mu_x * mu_x)
    var_y = covariance_norm * (box(y * y) - mu_y * mu_y)
    cov_xy = covariance_norm * (box(x * y) - mu_x * mu_y)
    c1, c2 = (k1 * value_range) ** 2, (k2 * value_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.reshape(n, -1).mean(1)
