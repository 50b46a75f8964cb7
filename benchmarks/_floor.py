"""A lower bound on epsilon-gamma-box's cost: Gradient×Input plus the convolutions its rules need.

Whatever its element-wise work, the ledger and Python cost, LRP with epsilon-gamma-box on a
convolutional net must run, beyond a gradient:

* one more forward convolution per LRP-γ layer (its denominators ``(W + γW⁺)a`` or ``|W|a``);
* one more transposed convolution per layer whose output has both signs (sign-aware LRP-γ needs
  ``Wᵀs`` and ``|W|ᵀd``): in a torchvision ResNet the last convolution of every block and the
  downsampling ones, whose outputs feed the residual sum rather than a ReLU;
* nothing more at the input layer (z^B): its transposed product onto 9 channels (``W``, ``W⁺``,
  ``W⁻`` stacked) costs what the gradient's product onto 3 channels costs (oneDNN's kernel for a
  3-channel output is no faster than for 9).

``floor_call`` runs exactly that and nothing else: Gradient×Input on a copy of the model with
its batch norms folded into the convolutions (as relprop folds them), hooks that run the extra
convolutions with cached modified weights and discard their results. Its time over
Gradient×Input's is the part of the epsilon-gamma-box ratio no implementation can remove.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from _timing import gradient_x_input_call


def _fold_batch_norms(model: Any) -> Any:
    """A copy of a torchvision ResNet or VGG with each batch norm folded into the convolution before it."""
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model)
    for module in list(folded.modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.BatchNorm2d):
                continue
            conv_name = {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3", "1": "0"}.get(child_name)
            conv = getattr(module, conv_name, None) if conv_name else None
            if isinstance(conv, nn.Conv2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, child))
                setattr(module, child_name, nn.Identity())
    return folded


def _signed_convolutions(model: Any) -> set[int]:
    """``id``s of the convolutions whose outputs feed a residual sum (ResNet blocks' last and downsampling)."""
    signed: set[int] = set()
    for module in model.modules():
        last = getattr(module, "conv3", None)
        if last is not None:
            signed.add(id(last))
        downsample = getattr(module, "downsample", None)
        if downsample is not None:
            signed.add(id(downsample[0]))
    return signed


def floor_call(model: Any, x: Any, gamma: float = 0.25) -> Callable[[], Any]:
    """Gradient×Input plus the extra convolutions of epsilon-gamma-box (see the module docstring)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    folded = _fold_batch_norms(model).eval()
    convolutions = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    gamma_layers = convolutions[1:]  # the first is the z^B input layer
    signed = _signed_convolutions(folded)
    with torch.no_grad():
        modified = {id(m): m.weight + gamma * m.weight.clamp(min=0) for m in gamma_layers}
        absolute = {id(m): m.weight.abs() for m in gamma_layers if id(m) in signed}

    def conv_args(m: nn.Conv2d) -> dict[str, Any]:
        return {"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups}

    def gamma_hook(m: nn.Conv2d, inputs: tuple[Any, ...], output: Any) -> None:
        (a,) = inputs
        F.conv2d(a.detach(), modified[id(m)], m.bias, **conv_args(m))  # the denominators
        if id(m) in signed:
            shape = a.shape

            def second_product(g: Any) -> None:
                torch.nn.grad.conv2d_input(shape, absolute[id(m)], g, **conv_args(m))  # |W|ᵀd

            output.register_hook(second_product)

    for m in gamma_layers:
        m.register_forward_hook(gamma_hook)
    return gradient_x_input_call(folded, x)
