"""Rules for activations, products and sums, checked on small cases with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop import match, rules


class Gated(nn.Module):
    """Squeeze-and-excitation style gate: x * sigmoid(fc(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.gate = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.head(h * torch.sigmoid(self.gate(h)))


def test_product_with_a_gate_sends_all_relevance_to_the_signal() -> None:
    model = Gated().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    assert result.ledger.closes(rtol=1e-12)
    # no relevance reaches the gate branch (its layer never receives a backward step)
    gate_rows = [e for e in result.ledger.entries if e.path == "gate"]
    assert all(float(e.relevance_out.abs().max()) == 0 for e in gate_rows)
    assert any(e.path == "body" for e in result.ledger.entries)
    # LRP-0 with the gate held constant: exactly gradient×input of the function with the gate frozen
    xx = x.clone().requires_grad_(True)
    h = torch.relu(model.body(xx))
    out = model.head(h * torch.sigmoid(model.gate(h)).detach())
    (g,) = torch.autograd.grad(out.gather(1, result.target[:, None]).sum(), xx)
    assert torch.allclose(result.relevance, g * x, rtol=1e-10, atol=1e-14)


def test_uniform_product_splits_relevance_equally() -> None:
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.out = nn.Linear(3, 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.a(x) * self.b(x))

    model = Square().double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    rows = {e.path: e for e in result.ledger.entries}
    # each factor receives half of the product's relevance
    assert torch.allclose(rows["a"].relevance_out, rows["b"].relevance_out, rtol=1e-10)
    assert torch.allclose(rows["a"].relevance_out + rows["b"].relevance_out, rows["out"].relevance_in, rtol=1e-10)
    assert torch.allclose(result.relevance.sum(1), result.score, rtol=1e-10)


@pytest.mark.parametrize(
    "activation", [nn.GELU(), nn.SiLU(), nn.Tanh(), nn.ELU(), nn.Softplus()], ids=lambda m: type(m).__name__
)
def test_pass_rule_hands_relevance_through_activations_unchanged(activation: nn.Module) -> None:
    model = nn.Sequential(nn.Linear(5, 6, bias=False), activation, nn.Linear(6, 3, bias=False)).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    rows = [e for e in result.ledger.entries if e.rule.startswith("pass")]
    assert len(rows) == 1
    assert torch.allclose(rows[0].relevance_in, rows[0].relevance_out, rtol=1e-8)
    # bias-free and pass-through: the explained logit is conserved at the input
    assert torch.allclose(result.relevance.sum(1), result.score, rtol=1e-8)


def test_gradient_rule_on_an_activation_differs_and_the_ledger_shows_it() -> None:
    model = nn.Sequential(nn.Linear(5, 6, bias=False), nn.Tanh(), nn.Linear(6, 3, bias=False)).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64) * 3
    result = relprop.explain(model, x, composite="lrp-0", rules=[(match.kind("activation"), rules.GradientRule())])
    rows = [e for e in result.ledger.entries if e.rule == "gradient"]
    assert len(rows) == 1 and rows[0].absorbed.abs().max() > 1e-3  # tanh's gradient does not conserve
    assert result.ledger.closes(rtol=1e-10)


def test_residual_sum_is_proportional() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Linear(3, 3, bias=False)
            self.out = nn.Linear(3, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.f(x)
            h += x  # in-place residual, as torchvision writes it
            return self.out(h)

    model = Residual().double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    result = relprop.explain(model, x, composite="epsilon", epsilon=0.0, stabilizer=0.0)
    # proportional split of the sum, exact for LRP-0 on the linear parts: Σ R = f(x)
    assert torch.allclose(result.relevance.sum(1), result.output[:, 0], rtol=1e-10)
