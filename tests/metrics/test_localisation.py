"""Relevance mass and rank accuracy on perfect, random and inverted explanations."""

from __future__ import annotations

import math

import pytest
import torch

import relprop
from relprop.metrics import relevance_mass_accuracy, relevance_rank_accuracy


def masks_and_explanations() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(20, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 1:4, 2:6] = True  # 12 of 64 pixels
    magnitude = torch.rand(20, 1, 8, 8, generator=generator, dtype=torch.float64) + 0.1
    return mask, {
        "perfect": magnitude * mask,
        "random": torch.randn(20, 1, 8, 8, generator=generator, dtype=torch.float64),
        "inverted": magnitude * ~mask,
    }


def test_perfect_random_inverted_are_ordered() -> None:
    mask, explanations = masks_and_explanations()
    mass = {k: relevance_mass_accuracy(r, mask) for k, r in explanations.items()}
    rank = {k: relevance_rank_accuracy(r, mask) for k, r in explanations.items()}
    torch.testing.assert_close(mass["perfect"], torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(rank["perfect"], torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(mass["inverted"], torch.zeros(20, dtype=torch.float64))
    torch.testing.assert_close(rank["inverted"], torch.zeros(20, dtype=torch.float64))
    # A random map puts about |M| / D = 12 / 64 of its mass and top-K inside the mask.
    assert 0.05 < float(mass["random"].mean()) < 0.35 and 0.05 < float(rank["random"].mean()) < 0.35


def test_modes_by_hand() -> None:
    r = torch.tensor([[2.0, -1.0, 3.0, -2.0]], dtype=torch.float64)
    m = torch.tensor([[True, True, False, False]])
    assert float(relevance_mass_accuracy(r, m)) == pytest.approx(2 / 5)  # positive mass
    assert float(relevance_mass_accuracy(r, m, mode="absolute")) == pytest.approx(3 / 8)
    assert float(relevance_mass_accuracy(r, m, mode="signed")) == pytest.approx(1 / 2)
    # top-2 = features 2 and 0: one of them inside the mask.
    assert float(relevance_rank_accuracy(r, m)) == 0.5


def test_pixel_masks_sum_relevance_over_channels_and_empty_masks_are_nan() -> None:
    r = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    r[:, 0, 1, 1] = 1.0
    r[:, 2, 1, 1] = 2.0
    r[:, 1, 3, 3] = 1.0
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = True
    mass = relevance_mass_accuracy(r, mask)
    assert float(mass[0]) == pytest.approx(0.75) and math.isnan(float(mass[1]))
    assert float(relevance_rank_accuracy(r, mask.unsqueeze(1))[0]) == 1.0
    with pytest.raises(relprop.ConfigurationError, match="mask of shape \\(2, 5, 5\\) does not fit relevance"):
        relevance_mass_accuracy(r, torch.ones(2, 5, 5))
    with pytest.raises(relprop.ConfigurationError, match="mode must be one of positive, absolute, signed"):
        relevance_mass_accuracy(r, mask, mode="pos")
