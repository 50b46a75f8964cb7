"""Conservation error and the ledger's shares on LRP explanations with known conservation."""

from __future__ import annotations

import math

import torch
from torch import nn

import relprop
from relprop.metrics import absorbed_share, conservation_error, ledger_shares


def bias_free_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3, bias=False)
    ).double()


def test_lrp0_without_biases_conserves_exactly() -> None:
    model = bias_free_net().eval()
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    explanation = relprop.explain(model, x, composite="lrp-0")
    error = conservation_error(explanation.relevance, explanation.score)
    assert float(error.max()) < 1e-12
    assert float(absorbed_share(explanation.ledger).max()) < 1e-12


def test_perfect_scaled_and_random_explanations_are_ordered() -> None:
    score = torch.tensor([2.0, -4.0], dtype=torch.float64)
    perfect = torch.tensor([[1.5, 0.5, 0.0], [-1.0, -2.0, -1.0]], dtype=torch.float64)
    half = perfect / 2
    opposite = -perfect
    torch.testing.assert_close(conservation_error(perfect, score), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(conservation_error(half, score), torch.full((2,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(conservation_error(opposite, score), torch.full((2,), 2.0, dtype=torch.float64))
    assert math.isnan(float(conservation_error(perfect[:1], torch.zeros(1))[0]))


def test_ledger_shares_sum_to_the_sign_of_the_score_and_explain_the_error(digits) -> None:
    model, x, _ = digits
    explanation = relprop.explain(model, x, composite="epsilon", epsilon=0.25, top="log-odds")
    shares = ledger_shares(explanation.ledger)
    total = sum(shares.values())
    # float32 relevance: the shares close to float32 rounding.
    torch.testing.assert_close(total, explanation.score.double().sign(), rtol=0, atol=1e-5)
    assert float(shares["bias"].abs().max()) > 0 and float(shares["stabilizer"].abs().max()) > 0
    assert float(shares["top"].abs().max()) > 0  # the log-odds soft-min absorbs
    # The ledger closes, so what it books as absorbed is the conservation error.
    torch.testing.assert_close(
        absorbed_share(explanation.ledger),
        conservation_error(explanation.relevance, explanation.score),
        rtol=1e-4,
        atol=1e-6,
    )
