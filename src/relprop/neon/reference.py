r"""Explaining ``f(x) − f(x̄)`` for the converted linear models and MLPs (a reference point ``x̄``).

The engine's LRP composites do not take a reference yet (issue 15); until they do, NEON
propagates *differences* itself, in one place (:func:`explain_difference`), so that this can
later delegate to the engine.

Both inputs run through the network; every layer is seen through the differences
:math:`\Delta a = a(x) - a(\bar x)`. The explained score is
:math:`s = \sum_k g_k\,(z_k(x) - z_k(\bar x))` (``g`` selects the target). Linear layers
redistribute with LRP-0 / LRP-ε on the differences (the bias cancels),

.. math::

    R_j = \sum_k \frac{w_{kj}\,\Delta a_j}{\Delta z_k + \epsilon\,\mathrm{sign}(\Delta z_k)}\, R_k,
    \qquad \Delta z_k = \sum_j w_{kj}\,\Delta a_j,

and element-wise activations hand their relevance through unchanged (the DeepLIFT rescale
rule: the multiplier :math:`\Delta y/\Delta z` times :math:`\Delta z` is :math:`\Delta y`). With
:math:`\epsilon = 0` this is exactly DeepLIFT-rescale (Shrikumar et al. 2017) and
:math:`\sum_i R_i = s` (summation to delta); for a linear model it is
:math:`R = w \odot (x - \bar x)`, the exact interventional SHAP values when :math:`\bar x` is the
mean of the background data. With :math:`\epsilon > 0` the layers absorb what the ledger shows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..explanation import Explanation
from ..ledger import Ledger, LedgerEntry
from .networks import TabularNetwork

__all__ = ["explain_difference"]


def _stabilized_ratio(relevance: Tensor, dz: Tensor, epsilon: float) -> Tensor:
    """``relevance / (dz + ε·sign(dz))`` with ``sign(0) = +1``, and 0 where the denominator is 0."""
    denominator = dz + epsilon * torch.where(dz >= 0, 1.0, -1.0).to(dz) if epsilon else dz
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(relevance), relevance / torch.where(zero, 1.0, denominator))


def explain_difference(
    network: TabularNetwork, x: Tensor, reference: Tensor, head: Tensor, target: Tensor, epsilon: float = 0.0
) -> Explanation:
    """Relevance of ``x − reference`` for ``Σ_k head_k (z_k(x) − z_k(reference))``.

    Parameters
    ----------
    network
        The converted model (``nn.Linear`` and element-wise activations).
    x, reference
        Inputs ``(N, D)`` and their references (same shape).
    head
        The initial gradient ``g`` at the output ``(N, outputs)`` (one-hot of the target, or ±1
        for a binary classifier's single output).
    target
        The explained class per sample (reported, not used).
    epsilon
        LRP-ε stabiliser on the differences (0: LRP-0, i.e. DeepLIFT-rescale).
    """
    n = x.shape[0]
    layers = list(network.layers)
    inputs: list[tuple[Tensor, Tensor]] = []
    a, a_ref = x, reference
    with torch.no_grad():
        for layer in layers:
            inputs.append((a, a_ref))
            a, a_ref = layer(a), layer(a_ref)
    output, reference_output = a, a_ref
    relevance = head * (output - reference_output)
    score = relevance.sum(1)
    label = "difference LRP-0 (DeepLIFT-rescale)" if epsilon == 0 else f"difference LRP-eps {epsilon:g}"
    entries: list[LedgerEntry] = []
    for index in reversed(range(len(layers))):
        layer = layers[index]
        if not isinstance(layer, nn.Linear):
            continue  # element-wise activation: relevance passes unchanged (rescale rule)
        delta = inputs[index][0] - inputs[index][1]
        weight = layer.weight.detach()
        dz = delta @ weight.T
        lower = delta * (_stabilized_ratio(relevance, dz, epsilon) @ weight)
        entry = LedgerEntry(index=index, path=f"layers.{index}", function="linear", rule=label, samples=n)
        entry.add(relevance.sum(1), lower.sum(1))
        entries.append(entry)
        relevance = lower
    entries.reverse()
    ledger = Ledger(score=score, input_relevance=relevance.sum(1), entries=entries)
    info = {
        "method": "neon-difference",
        "reference": reference,
        "reference_output": reference_output,
        "epsilon": epsilon,
    }
    return Explanation(relevance=relevance, output=output, target=target, ledger=ledger, info=info)
