"""Pearson, Spearman (average ranks of ties) and SSIM against SciPy and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from skimage.metrics import structural_similarity

import relprop
from relprop.metrics import average_ranks, pearson, spearman, ssim


def test_ranks_and_correlations_match_scipy_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 40), generator=generator).double()  # many ties, as zero relevance gives
    b = torch.randn(6, 40, generator=generator, dtype=torch.float64) + a
    for i in range(6):
        np.testing.assert_allclose(average_ranks(a)[i].numpy(), scipy.stats.rankdata(a[i].numpy()), rtol=0, atol=1e-12)
        assert float(spearman(a, b)[i]) == pytest.approx(scipy.stats.spearmanr(a[i], b[i])[0], abs=1e-12)
        assert float(pearson(a, b)[i]) == pytest.approx(scipy.stats.pearsonr(a[i], b[i])[0], abs=1e-12)
    assert torch.isnan(spearman(torch.ones(1, 5), torch.rand(1, 5))).all()


@pytest.mark.parametrize("shape", [(8, 8), (16, 11)])
def test_ssim_matches_scikit_image(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(4, 1, *shape, generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.randn(4, 1, *shape, generator=generator, dtype=torch.float64)
    ours = ssim(a, b)
    for i in range(4):
        x, y = a[i, 0].numpy(), b[i, 0].numpy()
        data_range = max(x.max(), y.max()) - min(x.min(), y.min())
        assert float(ours[i]) == pytest.approx(structural_similarity(x, y, data_range=data_range), abs=1e-12)
    torch.testing.assert_close(ssim(a, a), torch.ones(4, dtype=torch.float64))
    with pytest.raises(relprop.ConfigurationError, match="ssim window 9 must be odd and at most the image side 8"):
        ssim(a[:, :, :8, :8], b[:, :, :8, :8], window=9)
