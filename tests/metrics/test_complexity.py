"""Entropy (complexity) and Gini (sparseness) on maps with known values."""

from __future__ import annotations

import math

import torch

from relprop.metrics import entropy, gini


def test_one_feature_random_and_uniform_are_ordered() -> None:
    d = 64
    one = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    one[:, 0, 2, 5] = torch.tensor([1.0, -2.0, 0.1], dtype=torch.float64)
    random = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    uniform = torch.full((3, 1, 8, 8), -0.5, dtype=torch.float64)
    torch.testing.assert_close(entropy(one), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(entropy(uniform), torch.full((3,), math.log(d), dtype=torch.float64))
    torch.testing.assert_close(entropy(uniform, normalize=True), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(gini(one), torch.full((3,), 1 - 1 / d, dtype=torch.float64))
    torch.testing.assert_close(gini(uniform), torch.zeros(3, dtype=torch.float64), atol=1e-15, rtol=0)
    assert bool((entropy(one) < entropy(random)).all() and (entropy(random) < entropy(uniform)).all())
    assert bool((gini(one) > gini(random)).all() and (gini(random) > gini(uniform)).all())


def test_by_hand() -> None:
    r = torch.tensor([[1.0, -3.0, 0.0, 0.0]])
    p = torch.tensor([0.25, 0.75])
    torch.testing.assert_close(entropy(r), -(p * p.log()).sum().double().view(1))
    # sorted |R| = 0, 0, 1, 3 -> (2k - 5) = -3, -1, 1, 3 -> (1 + 9) / (4 * 4)
    torch.testing.assert_close(gini(r), torch.tensor([10 / 16], dtype=torch.float64))
    assert math.isnan(float(entropy(torch.zeros(1, 4))[0])) and math.isnan(float(gini(torch.zeros(1, 4))[0]))


def test_scale_invariant() -> None:
    r = torch.randn(4, 30, dtype=torch.float64)
    torch.testing.assert_close(entropy(7 * r), entropy(r))
    torch.testing.assert_close(gini(0.01 * r), gini(r))
