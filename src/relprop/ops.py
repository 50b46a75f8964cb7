"""The linear-layer arithmetic the rules need, and how torch functions and modules are named.

The parametric linear layers (convolutions, transposed convolutions, dense layers) share one
interface, :class:`LinearOp`: a forward with arbitrary weights and the vector-Jacobian product
with respect to the input, ``ρ(W)ᵀ s``, that every LRP rule needs. Which torch functions are of
which kind is declared in :mod:`relprop.kinds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .kinds import CONV_FUNCS, CONV_TRANSPOSE_FUNCS

__all__ = [
    "ELEMENTWISE_MODULE_TYPES",
    "LinearOp",
    "describe_function",
    "is_elementwise_module",
]


# Modules that apply an element-wise function written with several torch calls (GPT-2's
# ``0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))``). They are explained as one element-wise operation
# (pass-through by default) instead of call by call. Add your own types to this set.
ELEMENTWISE_MODULE_TYPES: set[type] = set()
# Every activation module of these packages is element-wise.
ELEMENTWISE_MODULE_PACKAGES: tuple[str, ...] = ("transformers.activations",)
_elementwise_cache: dict[type, bool] = {}


def is_elementwise_module(module: Any) -> bool:
    """Whether ``module`` applies an element-wise function to its input (see ``ELEMENTWISE_MODULE_TYPES``)."""
    module_type = type(module)
    if module_type in ELEMENTWISE_MODULE_TYPES:
        return True
    known = _elementwise_cache.get(module_type)
    if known is None:
        known = _elementwise_cache[module_type] = module_type.__module__ in ELEMENTWISE_MODULE_PACKAGES
    return known


def describe_function(func: Callable[..., Any]) -> str:
    """Return a readable dotted name such as ``torch.nn.functional.conv2d`` for a torch function."""
    if func in CONV_FUNCS or func in CONV_TRANSPOSE_FUNCS:
        return f"torch.nn.functional.{func.__name__}"
    if isinstance(func, torch._ops.OpOverload):
        return f"torch.ops.{func.name().replace('::', '.')}"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    name = getattr(func, "__name__", qualname)
    module = getattr(func, "__module__", None)
    if func is F.linear:
        return "torch.nn.functional.linear"
    if qualname.startswith(("TensorBase.", "Tensor.")):
        return "torch.Tensor." + qualname.split(".", 1)[1]
    if qualname.startswith("_VariableFunctionsClass."):
        return "torch." + name
    if "boolean_dispatch" in qualname or module == "torch._C._nn":
        return f"torch.nn.functional.{name}"
    if module:
        return f"{module}.{name}"
    return qualname


def _tuple(value: int | Sequence[int], dim: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dim
    out = tuple(int(v) for v in value)
    return out * dim if len(out) == 1 else out


@dataclass(frozen=True)
class LinearOp:
    """A parametric linear layer (convolution, transposed convolution or dense) in functional form.

    It evaluates the layer with any weights, ``y = W ⋆ x + b``, and the vector-Jacobian
    product with respect to the input, ``Wᵀ ⋆ s``, which is the backward step of every LRP
    rule (step 3 of the four-step recipe).
    """

    kind: str
    dim: int = 0
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    output_padding: tuple[int, ...] = ()

    @classmethod
    def from_call(cls, kind: str, func: Callable[..., Any], bound: dict[str, Any]) -> LinearOp:
        """Build the op description from a bound functional call."""
        if kind == "linear":
            return cls(kind="linear")
        dim = CONV_FUNCS.get(func) or CONV_TRANSPOSE_FUNCS[func]
        padding = bound["padding"]
        return cls(
            kind=kind,
            dim=dim,
            stride=_tuple(bound["stride"], dim),
            padding=padding if isinstance(padding, str) else _tuple(padding, dim),
            dilation=_tuple(bound["dilation"], dim),
            groups=int(bound["groups"]),
            output_padding=_tuple(bound.get("output_padding", 0), dim),
        )

    # The weight dimension that indexes output channels (used to fold batch norm and biases).
    @property
    def out_channel_dim(self) -> int:
        return 1 if self.kind == "conv_transpose" else 0

    def bias_view(self, bias: Tensor, output: Tensor) -> Tensor:
        """Reshape a per-output-channel vector so that it broadcasts against the output."""
        if self.kind == "linear":
            return bias
        return bias.view(1, -1, *([1] * (output.dim() - 2)))

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """Evaluate the layer with the given weights."""
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        if self.kind == "conv":
            conv = (F.conv1d, F.conv2d, F.conv3d)[self.dim - 1]
            return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dim - 1]
        return conv_t(
            x,
            weight,
            bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )

    def _explicit_padding(self, weight: Tensor) -> tuple[int, ...] | None:
        if not isinstance(self.padding, str):
            return self.padding
        if self.padding == "valid":
            return (0,) * self.dim
        # "same": symmetric only when every total padding is even.
        totals = [d * (k - 1) for d, k in zip(self.dilation, weight.shape[2:], strict=True)]
        if any(t % 2 for t in totals):
            return None
        return tuple(t // 2 for t in totals)

    def vjp(self, grad: Tensor, weight: Tensor, x: Tensor) -> Tensor:
        """Return ``Wᵀ ⋆ grad``: the gradient of ``Σ grad ⊙ (W ⋆ x)`` with respect to ``x``."""
        if self.kind == "linear":
            return grad.matmul(weight)
        padding = self._explicit_padding(weight)
        if padding is None:
            # Asymmetric "same" padding: fall back to autograd on the (linear) layer itself.
            with torch.enable_grad():
                probe = torch.zeros_like(x, requires_grad=True)
                out = self.apply(probe, weight)
                (result,) = torch.autograd.grad(out, probe, grad)
            return result
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad.contiguous(),
            x,
            weight,
            None,
            list(self.stride),
            list(padding),
            list(self.dilation),
            self.kind == "conv_transpose",
            list(self.output_padding) if self.kind == "conv_transpose" else [0] * self.dim,
            self.groups,
            [True, False, False],
        )
        return grad_input
