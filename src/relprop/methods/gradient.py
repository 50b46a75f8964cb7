r"""Gradient (saliency) and Gradient×Input.

Both take one forward and one backward pass of the unmodified model.

* ``"gradient"``: :math:`R_i = \partial s / \partial x_i` (Simonyan et al. 2014), or its
  magnitude :math:`|\partial s / \partial x_i|` with ``absolute=True`` (the saliency map).
* ``"gradient-x-input"``: :math:`R_i = x_i\, \partial s / \partial x_i`; on a ReLU network
  without biases it equals LRP-0 applied to every layer.

``s`` is the explained score (see :mod:`relprop.methods._common`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..explanation import Explanation
from . import _common, register

__all__ = ["gradient", "gradient_x_input"]


def _gradient(model: nn.Module, inputs: Tensor, target: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x = inputs  # checked, on the model's device and dtype: see methods.register
    leaf = x.requires_grad_(True)
    with torch.enable_grad():
        out = _common.forward(model, leaf)
        head = _common.resolve_target(out.detach(), target)
        (grad,) = torch.autograd.grad(out, leaf, head.grad.to(out.dtype), allow_unused=True)
    grad = torch.zeros_like(leaf) if grad is None else grad
    return x.detach(), out.detach(), head.target, head.score, grad


@register("gradient", "the gradient of the score (saliency); absolute=True for its magnitude")
def gradient(model: nn.Module, inputs: Tensor, target: Any = None, *, absolute: bool = False) -> Explanation:
    r"""Gradient (saliency) map: :math:`R = \nabla_x s(x)`, or :math:`|\nabla_x s(x)|` with ``absolute``.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` in eval mode (never modified).
    inputs
        A batch of inputs, batch first.
    target
        As for LRP: ``None`` (predicted class), a class index, one per sample, or an
        initial-relevance tensor shaped like the output.
    absolute
        Return the magnitude of the gradient (the saliency map of Simonyan et al.).

    Returns
    -------
    Explanation
        ``relevance`` is the (absolute) gradient; ``info["input_gradient"]`` the signed gradient.
    """
    _, output, target_index, score, grad = _gradient(model, inputs, target)
    relevance = grad.abs() if absolute else grad
    info = {"method": "gradient", "absolute": bool(absolute), "input_gradient": grad.detach()}
    return _common.explanation(relevance, output, target_index, score, info)


@register("gradient-x-input", "input times the gradient of the score")
def gradient_x_input(model: nn.Module, inputs: Tensor, target: Any = None) -> Explanation:
    r"""Gradient×Input: :math:`R_i = x_i\,\partial s / \partial x_i`.

    Parameters
    ----------
    model, inputs, target
        As for :func:`gradient`.

    Returns
    -------
    Explanation
        ``relevance`` is ``inputs ⊙ gradient``; ``info["input_gradient"]`` the gradient.
    """
    x, output, target_index, score, grad = _gradient(model, inputs, target)
    info = {"method": "gradient-x-input", "input_gradient": grad.detach()}
    return _common.explanation(x * grad, output, target_index, score, info)
