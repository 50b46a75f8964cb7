"""ATen operators seen as the torch functions relprop has rules for.

Models that are not Python code — TorchScript archives, converted to an FX graph of ATen
operators (see :func:`relprop.models.loading.load_model`) — call ``torch.ops.aten.*``
overloads instead of ``torch.nn.functional``. This module rewrites those calls into the
equivalent functional calls (same arithmetic, the arguments reordered) so that every rule
applies to them unchanged. The ATen operators that are pure routing or linear without bias
(reshapes, concatenation, means) are declared with the ``exact`` kind in :mod:`relprop.kinds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["normalize"]

aten = torch.ops.aten
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _convolution(args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding", "groups")
    a = [_arg(args, kwargs, i, n) for i, n in enumerate(names)]
    x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = a
    dim = weight.dim() - 2
    if transposed:
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dim - 1]
        return fn, (x, weight, bias, stride, padding, output_padding, groups, dilation), {}
    fn = (F.conv1d, F.conv2d, F.conv3d)[dim - 1]
    return fn, (x, weight, bias, stride, padding, dilation, groups), {}


def _batch_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
    names = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
    x, weight, bias, mean, var, training, momentum, eps = (_arg(args, kwargs, i, n) for i, n in enumerate(names))
    return F.batch_norm, (x, mean, var, weight, bias, training, momentum, eps), {}


def _same(fn: Callable[..., Any]) -> Callable[[Sequence[Any], dict[str, Any]], Call]:
    def adapt(args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
        return fn, tuple(args), dict(kwargs)

    return adapt


def _dropout(args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
    return F.dropout, (args[0], _arg(args, kwargs, 1, "p", 0.5), _arg(args, kwargs, 2, "train", False)), {}


_ALIASES: dict[Any, Callable[[Sequence[Any], dict[str, Any]], Call]] = {
    aten.convolution.default: _convolution,
    aten.batch_norm.default: _batch_norm,
    aten.linear.default: _same(F.linear),
    aten.relu.default: _same(torch.relu),
    aten.relu_.default: _same(torch.relu_),
    aten.add.Tensor: _same(torch.add),
    aten.add_.Tensor: _same(torch.Tensor.add_),
    aten.sub.Tensor: _same(torch.sub),
    aten.mul.Tensor: _same(torch.mul),
    aten.max_pool1d.default: _same(F.max_pool1d),
    aten.max_pool2d.default: _same(F.max_pool2d),
    aten.max_pool3d.default: _same(F.max_pool3d),
    aten.avg_pool2d.default: _same(F.avg_pool2d),
    aten.adaptive_avg_pool2d.default: _same(F.adaptive_avg_pool2d),
    aten.dropout.default: _dropout,
    aten.hardtanh.default: _same(F.hardtanh),
    aten.hardtanh_.default: _same(F.hardtanh_),
    aten.silu.default: _same(F.silu),
    aten.silu_.default: _same(F.silu),
    aten.gelu.default: _same(F.gelu),
    aten.sigmoid.default: _same(torch.sigmoid),
    aten.tanh.default: _same(torch.tanh),
    aten.cat.default: _same(torch.cat),
    aten.flatten.using_ints: _same(torch.flatten),
}


def normalize(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Call:
    """The functional equivalent of an ATen overload call (or the call itself if there is none)."""
    adapt = _ALIASES.get(func)
    if adapt is None:
        return func, tuple(args), kwargs
    return adapt(args, kwargs)
