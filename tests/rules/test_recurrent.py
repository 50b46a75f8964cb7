"""LSTM and GRU: Arras et al.'s signal-take-all rule against an unrolled float64 oracle, and the gradient option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop
from relprop import match, rules

EXACT = {"epsilon": 0.0, "stabilizer": 0.0}


class Last(nn.Module):
    """A recurrent layer and a dense head on the last time step's hidden state."""

    def __init__(self, cell: str, bidirectional: bool = False, layers: int = 1, batch_first: bool = True) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(4, 5, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        self.head = nn.Linear(5 * (2 if bidirectional else 1), 3)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        out = out if self.batch_first else out.transpose(0, 1)
        return self.head(out[:, -1])


def ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator == 0, torch.zeros_like(numerator), numerator / denominator)


def oracle_lstm(model: Last, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Arras et al. (2017) with ε = 0, written per time step and per gate (rows i, f, g, o)."""
    lstm = model.rnn
    w_ih, w_hh, b_ih, b_hh = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
    n, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h, c = torch.zeros(n, hidden, dtype=x.dtype), torch.zeros(n, hidden, dtype=x.dtype)
    saved = []
    for t in range(steps):
        pre = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g_pre, o = pre.chunk(4, 1)
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        g = torch.tanh(g_pre)
        c_new = f * c + i * g
        saved.append((h, c, i, f, g, g_pre, c_new))
        h, c = o * torch.tanh(c_new), c_new
    # the head: LRP-0 from the logit z_c
    relevance_h = h * model.head.weight[target]
    relevance_c_next = torch.zeros_like(h)
    relevance_x = torch.zeros_like(x)
    w_ig, w_hg = w_ih[2 * hidden : 3 * hidden], w_hh[2 * hidden : 3 * hidden]
    for t in reversed(range(steps)):
        h_prev, c_prev, i, f, g, g_pre, c_t = saved[t]
        relevance_c = relevance_h + relevance_c_next  # h = o ⊙ tanh(c): o constant, tanh passes relevance
        relevance_c_next = ratio(f * c_prev, c_t) * relevance_c  # c = f ⊙ c_prev + i ⊙ g: proportional
        relevance_g = ratio(i * g, c_t) * relevance_c  # i constant: all to g, through tanh unchanged
        s = ratio(relevance_g, g_pre)  # LRP-0 on z_g = W_ig x + b + W_hg h + b'
        relevance_x[:, t] = x[:, t] * (s @ w_ig)
        relevance_h = h_prev * (s @ w_hg)
    return relevance_x


def oracle_gru(model: Last, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Signal-take-all for the GRU with ε = 0: r, z and 1 - z constant (rows r, z, n)."""
    gru = model.rnn
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    n, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = torch.zeros(n, hidden, dtype=x.dtype)
    saved = []
    for t in range(steps):
        x_r, x_z, x_n = (x[:, t] @ w_ih.T + b_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        a = x_n + r * h_n
        new = (1 - z) * torch.tanh(a) + z * h
        saved.append((h, r, z, x_n, h_n, a, new))
        h = new
    relevance_h = h * model.head.weight[target]
    relevance_x = torch.zeros_like(x)
    w_in, w_hn = w_ih[2 * hidden :], w_hh[2 * hidden :]
    for t in reversed(range(steps)):
        h_prev, r, z, x_n, h_n, a, h_t = saved[t]
        relevance_n = ratio((1 - z) * torch.tanh(a), h_t) * relevance_h  # then through tanh unchanged
        relevance_h_prev = ratio(z * h_prev, h_t) * relevance_h
        relevance_xn = ratio(x_n, a) * relevance_n
        relevance_hn = ratio(r * h_n, a) * relevance_n  # r constant
        relevance_x[:, t] = x[:, t] * (ratio(relevance_xn, x_n) @ w_in)
        relevance_h = relevance_h_prev + h_prev * (ratio(relevance_hn, h_n) @ w_hn)
    return relevance_x


def build(cell: str, **kwargs: object) -> Last:
    model = Last(cell, **kwargs).double().eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_signal_take_all_matches_the_unrolled_oracle(cell: str) -> None:
    model = build(cell)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="epsilon", **EXACT)
    oracle = oracle_lstm if cell == "lstm" else oracle_gru
    with torch.no_grad():
        expected = oracle(model, x, result.target)
    torch.testing.assert_close(result.relevance, expected, rtol=1e-9, atol=1e-12)
    assert result.ledger.closes(rtol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
def test_signal_take_all_conserves_on_every_configuration(
    cell: str, bidirectional: bool, layers: int, batch_first: bool
) -> None:
    """Without biases, gates constant, ε = 0: the explained logit reaches the input whole."""
    model = Last(cell, bidirectional, layers, batch_first).double().eval()
    for name, p in model.named_parameters():
        if "bias" in name:
            torch.nn.init.zeros_(p)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="epsilon", **EXACT)
    torch.testing.assert_close(result.relevance.flatten(1).sum(1), result.score, rtol=1e-9, atol=1e-12)
    assert result.ledger.closes(rtol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradient_mode_is_the_gradient_with_a_closing_ledger(cell: str) -> None:
    model = build(cell, bidirectional=True)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    result = relprop.explain(
        model, x, composite="lrp-0", rules=[(match.kind("recurrent"), rules.RecurrentRule("gradient"))]
    )
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).gather(1, result.target[:, None]).sum(), xx)
    torch.testing.assert_close(result.relevance, g * x, rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)
    (row,) = [e for e in result.ledger.entries if e.rule.startswith("recurrent")]
    assert row.relevance_out is not None and float(row.absorbed.abs().max()) > 1e-6  # the LSTM is not conservative


def test_packed_sequences_are_refused() -> None:
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = nn.utils.rnn.pack_padded_sequence(x, [x.shape[1]] * x.shape[0], batch_first=True)
            _, (h, _) = self.rnn(packed)
            return self.head(h[-1])

    with pytest.raises(
        relprop.UnsupportedOperationError,
        match=r"module '\(model\)' \(Packed\) runs a recurrent layer on a packed sequence",
    ):
        relprop.explain(Packed().eval(), torch.randn(2, 3, 4))


class CRNN(nn.Module):
    """Text-recognition style: conv feature extractor → BiLSTM over the width → a classifier per step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d((2, 1)),
            nn.Conv2d(6, 8, 3, padding=1),
        )
        self.rnn = nn.LSTM(8 * 4, 10, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(20, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.conv(x))  # (N, 8, 4, W)
        sequence = features.flatten(1, 2).transpose(1, 2)  # (N, W, 32)
        out, _ = self.rnn(sequence)
        return self.classifier(out).transpose(1, 2)  # (N, classes, W): a score per class and time step


def test_crnn_explains_end_to_end_with_the_ledger_closing() -> None:
    model = CRNN().double().eval()
    x = torch.randn(2, 1, 8, 12, dtype=torch.float64)
    result = relprop.explain(model, x, target=3, composite="epsilon-gamma-box", low=-3.0, high=3.0)
    assert result.relevance.shape == x.shape and torch.isfinite(result.relevance).all()
    assert result.ledger.closes(rtol=1e-9)
    assert float(result.relevance.abs().sum()) > 0
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x), rtol=1e-12, atol=1e-12)
    table = relprop.Explainer(model, "epsilon-gamma-box", low=-3.0, high=3.0).rule_table(x)
    assert "rnn" in table and "epsilon" in table
