"""Positivity: share of negative relevance mass."""

from __future__ import annotations

import math

import torch

import relprop
from relprop.metrics import negative_share


def test_positive_random_inverted_are_ordered() -> None:
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(50, 3, 4, 4, generator=generator, dtype=torch.float64)
    random = torch.randn(50, 3, 4, 4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(negative_share(positive), torch.zeros(50, dtype=torch.float64))
    torch.testing.assert_close(negative_share(-positive), torch.ones(50, dtype=torch.float64))
    share = negative_share(random)
    assert 0.35 < float(share.mean()) < 0.65 and bool(((share > 0) & (share < 1)).all())


def test_by_hand_and_all_zero() -> None:
    r = torch.tensor([[3.0, -1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    share = negative_share(r)
    assert float(share[0]) == 0.5 and math.isnan(float(share[1]))


def test_z_plus_is_positive_and_lrp0_is_not(digits) -> None:
    """LRP-α1β0 (z⁺) propagates only positive contributions: no negative relevance at all."""
    model, x, _ = digits
    plus = relprop.explain(model, x, composite="alpha1-beta0").relevance
    zero = relprop.explain(model, x, composite="lrp-0").relevance
    assert float(negative_share(plus).max()) < 1e-6
    assert float(negative_share(zero).mean()) > 0.05
