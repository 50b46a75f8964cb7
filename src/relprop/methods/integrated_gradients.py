r"""Integrated Gradients (Sundararajan et al. 2017).

.. math::

    R_i = (x_i - \bar x_i) \int_0^1 \partial_i s\bigl(\bar x + \alpha (x - \bar x)\bigr)\, d\alpha
        \approx (x_i - \bar x_i) \sum_{j=1}^{m} w_j\, \partial_i s\bigl(\bar x + \alpha_j (x - \bar x)\bigr)

from a baseline :math:`\bar x`, with the nodes :math:`\alpha_j` and weights :math:`w_j` of a
quadrature rule on ``[0, 1]`` with ``m = steps`` points:

* ``"gauss-legendre"`` (default): Gauss–Legendre nodes and weights mapped to ``[0, 1]``;
* ``"riemann-left"``, ``"riemann-right"``, ``"riemann-middle"``: ``α_j = (j-1)/m``, ``j/m``,
  ``(j-½)/m`` with ``w_j = 1/m``;
* ``"riemann-trapezoid"``: ``α_j = (j-1)/(m-1)`` with the trapezoid weights ``1/(m-1)``
  (halved at both ends), which sum to one. (Captum's ``"riemann_trapezoid"`` uses the same
  nodes with weights ``1/m``, which sum to ``(m-1)/m``: its attributions are ours times
  ``(m-1)/m``.)

Completeness says :math:`\sum_i R_i = s(x) - s(\bar x)`; the quadrature error is reported per
sample as ``info["completeness_gap"] = s(x) - s(x̄) - Σ R`` and is also the ledger's residual
(the ledger's score is ``s(x) - s(x̄)``). The interpolated inputs are evaluated in batches of at
most ``batch_size`` model inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..explanation import Explanation
from . import _common, register

__all__ = ["QUADRATURES", "integrated_gradients", "quadrature_points"]

QUADRATURES = ("gauss-legendre", "riemann-left", "riemann-right", "riemann-middle", "riemann-trapezoid")
_ALIASES = {"gausslegendre": "gauss-legendre"}


def quadrature_points(rule: str, steps: int) -> tuple[list[float], list[float]]:
    """Nodes ``α_j`` in ``[0, 1]`` and weights ``w_j`` of a quadrature rule with ``steps`` points.

    Parameters
    ----------
    rule
        One of :data:`QUADRATURES` (Captum's spellings such as ``"riemann_left"`` and
        ``"gausslegendre"`` are accepted too).
    steps
        Number of points (at least 2 for the trapezoid rule).
    """
    name = _ALIASES.get(rule, rule.replace("_", "-") if isinstance(rule, str) else rule)
    if name not in QUADRATURES:
        raise ConfigurationError(
            f"integrated-gradients quadrature must be one of {', '.join(QUADRATURES)}, got {rule!r}."
        )
    minimum = 2 if name == "riemann-trapezoid" else 1
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        raise ConfigurationError(
            f"integrated-gradients steps must be an integer >= {minimum} for {name}, got {steps!r}."
        )
    m = steps
    if name == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return [float(v) for v in 0.5 * (nodes + 1.0)], [float(v) for v in 0.5 * weights]
    if name == "riemann-trapezoid":
        alphas = [j / (m - 1) for j in range(m)]
        w = [1.0 / (m - 1)] * m
        w[0] /= 2
        w[-1] /= 2
        return alphas, w
    offset = {"riemann-left": 0.0, "riemann-right": 1.0, "riemann-middle": 0.5}[name]
    return [(j + offset) / m for j in range(m)], [1.0 / m] * m


@register(
    "integrated-gradients",
    "path integral of the gradient from a baseline (zeros, blurred, mean or a tensor) to the input",
)
def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    *,
    baseline: Any = "zeros",
    steps: int = 32,
    quadrature: str = "gauss-legendre",
    blur_sigma: float = 5.0,
    batch_size: int = 32,
) -> Explanation:
    r"""Integrated Gradients: :math:`R = (x - \bar x) \odot \sum_j w_j \nabla s(\bar x + \alpha_j (x - \bar x))`.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.methods.gradient.gradient`; the target is resolved at ``inputs``
        and the same score is integrated along the whole path.
    baseline
        ``"zeros"``, ``"blurred"`` (Gaussian blur of each input, ``blur_sigma`` pixels),
        ``"mean"`` (each channel's mean), a number, or a tensor shaped like the inputs or like
        one input.
    steps
        Number of quadrature points.
    quadrature
        One of :data:`QUADRATURES`.
    blur_sigma
        Standard deviation in pixels of the ``"blurred"`` baseline.
    batch_size
        Model inputs per forward pass (interpolation points × samples).

    Returns
    -------
    Explanation
        ``score`` is ``s(x) - s(x̄)``; ``info`` holds ``completeness_gap``, ``baseline``,
        ``baseline_score``, ``input_score`` (``s(x)``), ``input_gradient`` (the path-averaged
        gradient ``Σ_j w_j ∇s``), ``steps`` and ``quadrature``.
    """
    alphas, weights = quadrature_points(quadrature, steps)
    x = inputs  # checked, on the model's device and dtype: see methods.register
    reference = _common.make_baseline(baseline, x, "baseline", blur_sigma)
    batch = x.shape[0]
    with torch.no_grad():
        output = _common.forward(model, x)
    head = _common.resolve_target(output, target)
    input_score = head.score
    baseline_score = _common.scores(model, reference, head.grad)

    difference = x - reference
    points_per_pass = max(1, batch_size // batch)
    averaged = torch.zeros_like(x)
    for part in _common.chunks(len(alphas), points_per_pass):
        k = len(part)
        alpha = torch.tensor([alphas[j] for j in part], dtype=x.dtype, device=x.device)
        weight = torch.tensor([weights[j] for j in part], dtype=x.dtype, device=x.device)
        shape = (k, *([1] * x.dim()))
        path = (reference.unsqueeze(0) + alpha.view(shape) * difference.unsqueeze(0)).reshape(k * batch, *x.shape[1:])
        _, grads = _common.scores_and_gradients(model, path, _common.expand_head(head.grad, k))
        averaged += (grads.reshape(k, *x.shape) * weight.view(shape)).sum(0)
    relevance = difference * averaged
    explained = input_score - baseline_score
    gap = explained - relevance.reshape(batch, -1).sum(1)
    info = {
        "method": "integrated-gradients",
        "completeness_gap": gap.detach(),
        "baseline": reference,
        "baseline_score": baseline_score,
        "input_score": input_score,
        "input_gradient": averaged,
        "steps": steps,
        "quadrature": _ALIASES.get(quadrature, quadrature.replace("_", "-")),
    }
    return _common.explanation(relevance, output, head.target, explained, info)
