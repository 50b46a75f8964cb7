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


Step = tuple[torch.Tensor, ...]


def lstm_forward(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, order: range
) -> tuple[torch.Tensor, list[Step]]:
    """One direction of one LSTM layer, step by step (rows i, f, g, o); returns the outputs and what each step saw."""
    n, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h, c = torch.zeros(n, hidden, dtype=x.dtype), torch.zeros(n, hidden, dtype=x.dtype)
    out = torch.zeros(n, steps, hidden, dtype=x.dtype)
    saved: list[Step] = [()] * steps
    for t in order:
        pre = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g_pre, o = pre.chunk(4, 1)
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        g = torch.tanh(g_pre)
        c_new = f * c + i * g
        saved[t] = (h, c, i, f, g, g_pre, c_new)
        h, c = o * torch.tanh(c_new), c_new
        out[:, t] = h
    return out, saved


def lstm_backward(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    saved: list[Step],
    order: range,
    relevance_out: torch.Tensor,
) -> torch.Tensor:
    """Arras et al. (2017) with ε = 0 back through one direction: relevance of the layer input."""
    hidden = w_hh.shape[1]
    w_ig, w_hg = w_ih[2 * hidden : 3 * hidden], w_hh[2 * hidden : 3 * hidden]
    relevance_x = torch.zeros_like(x)
    relevance_h_carried = torch.zeros_like(relevance_out[:, 0])
    relevance_c_next = torch.zeros_like(relevance_out[:, 0])
    for t in reversed(order):
        h_prev, c_prev, i, f, g, g_pre, c_t = saved[t]
        relevance_c = relevance_out[:, t] + relevance_h_carried + relevance_c_next  # o constant, tanh passes it
        relevance_c_next = ratio(f * c_prev, c_t) * relevance_c  # c = f ⊙ c_prev + i ⊙ g: proportional
        relevance_g = ratio(i * g, c_t) * relevance_c  # i constant: all to g, through tanh unchanged
        s = ratio(relevance_g, g_pre)  # LRP-0 on z_g = W_ig x + b + W_hg h + b'
        relevance_x[:, t] = x[:, t] * (s @ w_ig)
        relevance_h_carried = h_prev * (s @ w_hg)
    return relevance_x


def gru_forward(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, order: range
) -> tuple[torch.Tensor, list[Step]]:
    """One direction of one GRU layer, step by step (rows r, z, n)."""
    n, steps, _ = x.shape
    hidden = w_hh.shape[1]
    h = torch.zeros(n, hidden, dtype=x.dtype)
    out = torch.zeros(n, steps, hidden, dtype=x.dtype)
    saved: list[Step] = [()] * steps
    for t in order:
        x_r, x_z, x_n = (x[:, t] @ w_ih.T + b_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        a = x_n + r * h_n
        new = (1 - z) * torch.tanh(a) + z * h
        saved[t] = (h, r, z, x_n, h_n, a, new)
        h = new
        out[:, t] = h
    return out, saved


def gru_backward(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    saved: list[Step],
    order: range,
    relevance_out: torch.Tensor,
) -> torch.Tensor:
    """Signal-take-all for the GRU with ε = 0 (r, z and 1 - z constant) back through one direction."""
    hidden = w_hh.shape[1]
    w_in, w_hn = w_ih[2 * hidden :], w_hh[2 * hidden :]
    relevance_x = torch.zeros_like(x)
    relevance_h_carried = torch.zeros_like(relevance_out[:, 0])
    for t in reversed(order):
        h_prev, r, z, x_n, h_n, a, h_t = saved[t]
        relevance_h = relevance_out[:, t] + relevance_h_carried
        relevance_n = ratio((1 - z) * torch.tanh(a), h_t) * relevance_h  # then through tanh unchanged
        relevance_xn = ratio(x_n, a) * relevance_n
        relevance_hn = ratio(r * h_n, a) * relevance_n  # r constant
        relevance_x[:, t] = x[:, t] * (ratio(relevance_xn, x_n) @ w_in)
        relevance_h_carried = ratio(z * h_prev, h_t) * relevance_h + h_prev * (ratio(relevance_hn, h_n) @ w_hn)
    return relevance_x


def oracle(model: Last, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The unrolled float64 reference for every layer and direction; LRP-0 on the head at the last step."""
    rnn = model.rnn
    forward, backward = (lstm_forward, lstm_backward) if isinstance(rnn, nn.LSTM) else (gru_forward, gru_backward)
    steps = x.shape[1]
    orders = [range(steps), range(steps - 1, -1, -1)][: 2 if rnn.bidirectional else 1]
    inputs, runs = [x], []
    for layer in range(rnn.num_layers):
        outputs, per_direction = [], []
        for direction, order in enumerate(orders):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights = [getattr(rnn, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            out, saved = forward(inputs[-1], *weights, order)
            outputs.append(out)
            per_direction.append((weights[0], weights[1], saved, order))
        inputs.append(torch.cat(outputs, 2))
        runs.append(per_direction)
    top = inputs[-1]
    relevance = torch.zeros_like(top)
    relevance[:, -1] = top[:, -1] * model.head.weight[target]
    hidden = rnn.hidden_size
    for layer in reversed(range(rnn.num_layers)):
        below = torch.zeros_like(inputs[layer])
        for direction, (w_ih, w_hh, saved, order) in enumerate(runs[layer]):
            part = relevance[:, :, direction * hidden : (direction + 1) * hidden]
            below = below + backward(inputs[layer], w_ih, w_hh, saved, order, part)
        relevance = below
    return relevance


def build(cell: str, **kwargs: object) -> Last:
    model = Last(cell, **kwargs).double().eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("bidirectional", "layers"), [(False, 1), (True, 1), (False, 2), (True, 2)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_signal_take_all_matches_the_unrolled_oracle(
    cell: str, bidirectional: bool, layers: int, batch_first: bool
) -> None:
    model = build(cell, bidirectional=bidirectional, layers=layers, batch_first=batch_first)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="epsilon", **EXACT)
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
@pytest.mark.parametrize("rule", [rules.RecurrentRule("gradient"), rules.GradientRule()], ids=["recurrent", "gradient"])
def test_gradient_mode_is_the_gradient_with_a_closing_ledger(cell: str, rule: rules.Rule) -> None:
    """The layer as one operation: its tuple output is probed, so the ledger row shows what it absorbs."""
    model = build(cell, bidirectional=True)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0", rules=[(match.kind("recurrent"), rule)])
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).gather(1, result.target[:, None]).sum(), xx)
    torch.testing.assert_close(result.relevance, g * x, rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)
    (row,) = [e for e in result.ledger.entries if e.path == "rnn"]
    assert row.rule.startswith(rule.label)
    assert row.relevance_out is not None and float(row.absorbed.abs().max()) > 1e-6  # the LSTM is not conservative
    # what reached the layer's output is the head's LRP-0 relevance of the last step's hidden state
    out, _ = model.rnn(x)
    torch.testing.assert_close(
        row.relevance_out, (out[:, -1] * model.head.weight[result.target]).sum(1), rtol=1e-10, atol=1e-12
    )


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


class GivenState(nn.Module):
    """A learnt initial state, and an unbatched call (one sequence, no batch dimension) inside the model."""

    def __init__(self, cell: str, unbatched: bool) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(4, 5, bidirectional=True)
        self.h0 = nn.Parameter(torch.randn(2, 1, 5))
        self.head = nn.Linear(10, 3)
        self.unbatched = unbatched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x[0] if self.unbatched else x.transpose(0, 1)  # (T, I) or (T, N, I)
        h0 = self.h0[:, 0] if self.unbatched else self.h0.expand(-1, x.shape[0], -1).contiguous()
        out, _ = self.rnn(sequence, (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0)
        return self.head(out[-1:] if self.unbatched else out[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_initial_states_and_unbatched_calls(cell: str, unbatched: bool) -> None:
    model = GivenState(cell, unbatched).double().eval()
    x = torch.randn(1 if unbatched else 3, 6, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="epsilon", **EXACT)
    with torch.no_grad():
        torch.testing.assert_close(result.output, model(x), rtol=1e-12, atol=1e-12)
    assert result.ledger.closes(rtol=1e-9)
    # the initial state is a constant: it takes relevance, so the input gets less than the score
    assert float((result.score - result.relevance.flatten(1).sum(1)).abs().max()) > 1e-6


def test_projections_and_training_dropout_are_refused() -> None:
    projected = Last("lstm").eval()
    projected.rnn = nn.LSTM(4, 5, proj_size=3, batch_first=True)
    projected.head = nn.Linear(3, 3)
    message = r"^recurrent layer 'rnn' has 5 weight tensors, more than an LSTM or GRU without projections; relprop"
    with pytest.raises(relprop.UnsupportedOperationError, match=message):
        relprop.explain(projected.eval(), torch.randn(2, 5, 4))

    class Functional(nn.Module):
        """torch.lstm called directly in training mode with dropout between its two layers."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 5, num_layers=2, batch_first=True)
            self.head = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            zeros = torch.zeros(2, x.shape[0], 5)
            weights = self.rnn._flat_weights
            out = torch.lstm(x, (zeros, zeros), weights, True, 2, 0.5, True, False, True)[0]
            return self.head(out[:, -1])

    with pytest.raises(relprop.ModelStateError, match=r"^module '\(model\)' \(Functional\) applies dropout between"):
        relprop.explain(Functional().eval(), torch.randn(2, 5, 4))
