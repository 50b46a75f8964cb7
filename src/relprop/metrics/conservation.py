r"""Conservation: the explained score shows up, whole, in the input relevance.

LRP redistributes the explained score :math:`f(x)` so that :math:`\sum_i R_i \approx f(x)`; what
biases and stabilisers absorb on the way is recorded in the :class:`~relprop.Ledger`. These
functions measure how far an explanation is from exact conservation, and where the gap went.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ledger import Ledger
from ._common import flat, safe_ratio

__all__ = ["absorbed_share", "conservation_error", "ledger_shares"]


def conservation_error(relevance: Tensor, score: Tensor) -> Tensor:
    r"""Relative conservation error per sample: :math:`|\sum_i R_i - f(x)| / |f(x)|`.

    Parameters
    ----------
    relevance
        Input relevance ``(N, ...)``.
    score
        The explained score :math:`f(x)` per sample ``(N,)`` (``Explanation.score``: the logit,
        log-odds or contrast that was explained).

    Returns
    -------
    Tensor
        ``(N,)`` float64; 0 for perfect conservation, NaN where :math:`f(x) = 0`.
    """
    total = flat(relevance).double().sum(1)
    explained = score.double().reshape(-1).to(total.device)
    return safe_ratio((total - explained).abs(), explained.abs())


def ledger_shares(ledger: Ledger) -> dict[str, Tensor]:
    r"""Where the explained score went, as shares of :math:`|f(x)|`, per sample.

    Returns
    -------
    dict
        ``"input"`` (:math:`\sum_i R_i / f(x)`), ``"bias"`` (absorbed by biases and other constant
        terms), ``"stabilizer"`` (absorbed by ε-stabilisers and non-conserving rules), ``"top"``
        (lost at the top layer, e.g. the soft-min of the log-odds), ``"residual"`` (rounding). All
        signed, divided by :math:`|f(x)|`; they sum to ``sign(f(x))``.
    """
    score = ledger.score.double()
    scale = score.abs()
    bias = ledger.bias_absorbed.double()
    absorbed = ledger.absorbed.double()
    top = torch.zeros_like(score) if ledger.top_absorbed is None else ledger.top_absorbed.double()
    return {
        "input": safe_ratio(ledger.input_relevance.double(), scale),
        "bias": safe_ratio(bias, scale),
        "stabilizer": safe_ratio(absorbed - bias, scale),
        "top": safe_ratio(top, scale),
        "residual": safe_ratio(ledger.residual.double(), scale),
    }


def absorbed_share(ledger: Ledger) -> Tensor:
    r"""Share of the explained score absorbed inside the network or at the top: :math:`|f(x) - \sum_i R_i| / |f(x)|`
    as the ledger books it (biases + stabilisers + top layer), per sample.

    Equals :func:`conservation_error` whenever the ledger closes; :func:`ledger_shares` splits it.
    """
    shares = ledger_shares(ledger)
    return (shares["bias"] + shares["stabilizer"] + shares["top"]).abs()
