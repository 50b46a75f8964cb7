r"""SmoothGrad: the gradient averaged over noisy copies of the input (Smilkov et al. 2017).

.. math::

    R(x) = \frac{1}{n} \sum_{j=1}^{n} \nabla s(x + \varepsilon_j),\qquad
    \varepsilon_j \sim \mathcal{N}(0, \sigma^2 I),

with ``σ = sigma · (max(x) − min(x))`` per sample by default (the paper's noise level), or
``σ = sigma`` with ``sigma_mode="absolute"``. ``times_input=True`` multiplies the average
by the input (SmoothGrad × Input). The noisy copies are evaluated in batches of at most
``batch_size`` model inputs; ``s`` is always explained for the target resolved at ``x``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..explanation import Explanation
from . import _common, register

__all__ = ["smoothgrad"]

SIGMA_MODES = ("range", "absolute")


@register("smoothgrad", "the gradient averaged over n noisy copies of the input (noise level sigma)")
def smoothgrad(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    *,
    n: int = 25,
    sigma: float = 0.15,
    sigma_mode: str = "range",
    times_input: bool = False,
    seed: int | None = None,
    batch_size: int = 32,
) -> Explanation:
    r"""SmoothGrad: :math:`R = \frac1n \sum_j \nabla s(x + \varepsilon_j)` with Gaussian noise :math:`\varepsilon_j`.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.methods.gradient.gradient`.
    n
        Number of noisy copies per sample.
    sigma
        Noise level: a fraction of each sample's value range (``sigma_mode="range"``, as in the
        paper, which recommends 0.1–0.2), or the standard deviation itself (``"absolute"``).
    sigma_mode
        ``"range"`` or ``"absolute"``.
    times_input
        Multiply the averaged gradient by the input.
    seed
        Seed of the noise (a private generator: the global random state is not touched);
        ``None`` draws a fresh seed.
    batch_size
        Model inputs per forward pass.

    Returns
    -------
    Explanation
        ``info`` holds ``input_gradient`` (the averaged gradient), ``sigma`` (the standard
        deviation used, per sample) and ``n``.
    """
    if sigma_mode not in SIGMA_MODES:
        raise ConfigurationError(f"smoothgrad sigma_mode must be one of {', '.join(SIGMA_MODES)}, got {sigma_mode!r}.")
    x = inputs  # checked, on the model's device and dtype: see methods.register
    batch = x.shape[0]
    with torch.no_grad():
        output = _common.forward(model, x)
    head = _common.resolve_target(output, target)
    flat = x.reshape(batch, -1)
    if sigma_mode == "range":
        std = float(sigma) * (flat.max(1).values - flat.min(1).values)
    else:
        std = torch.full((batch,), float(sigma), dtype=x.dtype, device=x.device)
    std_view = std.view(-1, *([1] * (x.dim() - 1)))

    generator = torch.Generator(device=x.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    copies_per_pass = max(1, batch_size // batch)
    total = torch.zeros_like(x)
    for part in _common.chunks(n, copies_per_pass):
        k = len(part)
        noise = torch.randn((k, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        noisy = (x.unsqueeze(0) + noise * std_view.unsqueeze(0)).reshape(k * batch, *x.shape[1:])
        _, grads = _common.scores_and_gradients(model, noisy, _common.expand_head(head.grad, k))
        total += grads.reshape(k, *x.shape).sum(0)
    mean_gradient = total / n
    relevance = x * mean_gradient if times_input else mean_gradient
    info = {
        "method": "smoothgrad",
        "input_gradient": mean_gradient,
        "sigma": std,
        "n": n,
        "times_input": bool(times_input),
    }
    return _common.explanation(relevance, output, head.target, head.score, info)
