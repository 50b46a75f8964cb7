r"""Rules for recurrent layers: LSTM and GRU (``nn.LSTM``, ``nn.GRU``, ``torch.lstm``, ``torch.gru``).

:class:`RecurrentRule` with ``mode="signal-take-all"`` (the default) is the rule of Arras et al.
(2017, "Explaining recurrent neural network predictions in sentiment analysis"): the layer is
unrolled into its time steps, and in each step

* the gates (sigmoids) are constants — a product of a gate and a signal hands all of its relevance
  to the signal ("signal-take-all");
* the linear maps ``W x + U h + b`` pass relevance with LRP-ε (the composite's rule for dense
  layers), and the sum of the input and hidden projections splits it in proportion;
* the cell update ``c_t = f ⊙ c_{t-1} + i ⊙ g`` splits relevance in proportion to its two terms,
  and ``h_t = o ⊙ tanh(c_t)`` hands it to ``c_t`` through the tanh unchanged (pass-through).

For the GRU, ``r``, ``z`` and ``1 - z`` are the gates: ``n = tanh(W_n x + b + r ⊙ (U_n h + b'))`` and
``h' = (1 - z) ⊙ n + z ⊙ h``. Because the unrolled steps are ordinary operations, each gets its
rule and its ledger row, and the relevance of every time step is visible to ``layers=``.

``mode="gradient"`` keeps the layer as one operation with its ordinary gradient (the ledger
shows what it creates or absorbs). Packed sequences (``pack_padded_sequence``) and LSTMs with
projections are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigurationError, UnsupportedOperationError, display_path
from .base import Rule, register

__all__ = ["RecurrentRule", "unrolled_gru", "unrolled_lstm"]

MODES = ("signal-take-all", "gradient")


def _layer_params(
    params: Sequence[Tensor], has_biases: bool, index: int
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    per = 4 if has_biases else 2
    group = params[index * per : (index + 1) * per]
    if has_biases:
        return group[0], group[1], group[2], group[3]
    return group[0], group[1], None, None


def _check_params(params: Sequence[Tensor], has_biases: bool, layers: int, directions: int, path: str) -> None:
    if len(params) != (4 if has_biases else 2) * layers * directions:
        raise UnsupportedOperationError(
            f"recurrent layer '{display_path(path)}' has {len(params)} weight tensors, more than an LSTM or GRU "
            "without projections; relprop explains LSTMs with proj_size=0 and GRUs, so drop the projection or give "
            "the layer RecurrentRule('gradient')."
        )


def _run_layers(
    step: Callable[..., tuple[Tensor, ...]],
    x: Tensor,
    states: list[tuple[Tensor, ...]],
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    bidirectional: bool,
) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
    """Run ``step`` over time for every layer and direction; ``x`` is batch first ``(N, T, I)``."""
    directions = 2 if bidirectional else 1
    finals: list[tuple[Tensor, ...]] = []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh = _layer_params(params, has_biases, index)
            projected = F.linear(layer_input, w_ih, b_ih)  # all time steps at once: (N, T, gates · H)
            state = states[index]
            steps = range(x.shape[1]) if direction == 0 else range(x.shape[1] - 1, -1, -1)
            hidden: list[Tensor | None] = [None] * x.shape[1]
            for t in steps:
                state = step(projected[:, t], state, w_hh, b_hh)
                hidden[t] = state[0]
            outputs.append(torch.stack(hidden, 1))  # type: ignore[arg-type]
            finals.append(state)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, 2)
    return layer_input, finals


def _lstm_step(gates_x: Tensor, state: tuple[Tensor, ...], w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    h, c = state
    i, f, g, o = (gates_x + F.linear(h, w_hh, b_hh)).chunk(4, 1)
    # The gates are constants (signal-take-all): products with them hand all relevance to the signal.
    i, f, o = torch.sigmoid(i).detach(), torch.sigmoid(f).detach(), torch.sigmoid(o).detach()
    c = f * c + i * torch.tanh(g)
    return o * torch.tanh(c), c


def _gru_step(gates_x: Tensor, state: tuple[Tensor, ...], w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor]:
    (h,) = state
    x_r, x_z, x_n = gates_x.chunk(3, 1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
    r = torch.sigmoid(x_r + h_r).detach()
    z = torch.sigmoid(x_z + h_z).detach()
    n = torch.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)


def _initial(hx: Tensor | None, count: int, batch: int, hidden: int, like: Tensor) -> list[Tensor]:
    if hx is None:
        zero = torch.zeros(batch, hidden, dtype=like.dtype, device=like.device)
        return [zero] * count
    return list(hx.unbind(0))


def unrolled_lstm(
    path: str,
    input: Tensor,
    hx: Sequence[Tensor],
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.lstm`` as time steps of plain operations, with the gates held constant."""
    directions = 2 if bidirectional else 1
    _check_params(params, has_biases, num_layers, directions, path)
    unbatched = input.dim() == 2
    x = input.unsqueeze(0 if batch_first else 1) if unbatched else input
    x = x if batch_first else x.transpose(0, 1)
    h0, c0 = hx
    if unbatched:
        h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    hidden = params[1].shape[1]
    states = list(zip(h0.unbind(0), c0.unbind(0), strict=True))
    out, finals = _run_layers(_lstm_step, x, states, params, has_biases, num_layers, bidirectional)  # type: ignore[arg-type]
    assert out.shape[-1] == hidden * directions
    h_n = torch.stack([s[0] for s in finals])
    c_n = torch.stack([s[1] for s in finals])
    out = out if batch_first else out.transpose(0, 1)
    if unbatched:
        out, h_n, c_n = out.squeeze(0 if batch_first else 1), h_n.squeeze(1), c_n.squeeze(1)
    return out, h_n, c_n


def unrolled_gru(
    path: str,
    input: Tensor,
    hx: Tensor,
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """``torch.gru`` as time steps of plain operations, with the gates held constant."""
    directions = 2 if bidirectional else 1
    _check_params(params, has_biases, num_layers, directions, path)
    unbatched = input.dim() == 2
    x = input.unsqueeze(0 if batch_first else 1) if unbatched else input
    x = x if batch_first else x.transpose(0, 1)
    h0 = hx.unsqueeze(1) if unbatched else hx
    states = [(h,) for h in h0.unbind(0)]
    out, finals = _run_layers(_gru_step, x, states, params, has_biases, num_layers, bidirectional)  # type: ignore[arg-type]
    h_n = torch.stack([s[0] for s in finals])
    out = out if batch_first else out.transpose(0, 1)
    if unbatched:
        out, h_n = out.squeeze(0 if batch_first else 1), h_n.squeeze(1)
    return out, h_n


UNROLLED: dict[Callable[..., Any], Callable[..., Any]] = {torch.lstm: unrolled_lstm, torch.gru: unrolled_gru}


@register
class RecurrentRule(Rule):
    r"""LSTM and GRU layers: Arras et al.'s signal-take-all rule (default), or the gradient.

    See :mod:`relprop.rules.recurrent`. With ``mode="signal-take-all"`` the layer is explained
    through its unrolled time steps (gates constant, ε on the linear maps — the composite's dense
    rule —, proportional splits of the sums, identity through ``tanh``). ``mode="gradient"`` keeps
    the layer as one operation with its ordinary gradient.

    Parameters
    ----------
    mode
        ``"signal-take-all"`` or ``"gradient"``.
    """

    applies_to = ("recurrent",)
    label = "recurrent"

    def __init__(self, mode: str = "signal-take-all") -> None:
        if mode not in MODES:
            raise ConfigurationError(f"RecurrentRule mode must be one of {', '.join(MODES)}, got {mode!r}.")
        self.mode = mode

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def decomposition(self, func: Callable[..., Any]) -> Callable[..., Any] | None:
        # mode="gradient": no decomposition; the layer runs as one operation (Rule.forward: the
        # ordinary gradient between ledger probes).
        return UNROLLED.get(func) if self.mode == "signal-take-all" else None
