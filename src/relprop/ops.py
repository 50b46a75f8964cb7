"""The operations relprop understands, and the linear-layer arithmetic the rules need.

The engine sees a model as the sequence of torch functions it calls (``F.conv2d``,
``F.relu``, ``Tensor.add_``, ``torch.cat`` ...), whether a module or the user's own
``forward`` calls them. This module sorts those functions into *kinds* that rules
are written for, and gives the parametric linear layers (convolutions, transposed
convolutions, dense layers) a common interface: a forward with arbitrary weights
and the vector-Jacobian product with respect to the input, ``ρ(W)ᵀ s``, that
every LRP rule needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ELEMENTWISE_MODULE_TYPES",
    "LinearOp",
    "bind_arguments",
    "classify",
    "describe_function",
    "is_elementwise_module",
]

Tensor_ = torch.Tensor

# --- kinds -----------------------------------------------------------------------------------
# Parametric linear layers: rules with modified weights apply here.
CONV_FUNCS: dict[Callable[..., Any], int] = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
CONV_TRANSPOSE_FUNCS: dict[Callable[..., Any], int] = {
    torch.conv_transpose1d: 1,
    torch.conv_transpose2d: 2,
    torch.conv_transpose3d: 3,
}
LINEAR_FUNCS: set[Callable[..., Any]] = {F.linear}
BATCHNORM_FUNCS: set[Callable[..., Any]] = {F.batch_norm}

# ReLU: its gradient already passes relevance unchanged (R_in = R_out), so it runs natively.
RELU_FUNCS: set[Callable[..., Any]] = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    Tensor_.relu,
    Tensor_.relu_,
}

# Other element-wise activations: (out-of-place function, is piecewise-linear through 0).
# For piecewise-linear activations through the origin (leaky ReLU, PReLU) f(x)/x equals the
# derivative, so pass-through relevance is again the plain gradient.
_ACTIVATIONS: list[tuple[Callable[..., Any], Callable[..., Any], bool]] = [
    (F.leaky_relu, F.leaky_relu, True),
    (F.leaky_relu_, F.leaky_relu, True),
    (F.prelu, F.prelu, True),
    (F.gelu, F.gelu, False),
    (F.silu, F.silu, False),
    (F.mish, F.mish, False),
    (F.elu, F.elu, False),
    (F.elu_, F.elu, False),
    (F.selu, F.selu, False),
    (F.celu, F.celu, False),
    (F.hardtanh, F.hardtanh, False),
    (F.hardtanh_, F.hardtanh, False),
    (F.relu6, F.relu6, False),
    (F.hardswish, F.hardswish, False),
    (F.softplus, F.softplus, False),
    (F.softsign, F.softsign, False),
    (F.tanh, torch.tanh, False),
    (torch.tanh, torch.tanh, False),
    (Tensor_.tanh, torch.tanh, False),
    (F.sigmoid, torch.sigmoid, False),
    (torch.sigmoid, torch.sigmoid, False),
    (Tensor_.sigmoid, torch.sigmoid, False),
    (F.hardsigmoid, F.hardsigmoid, False),
    (F.logsigmoid, F.logsigmoid, False),
    (F.tanhshrink, F.tanhshrink, False),
    (F.softshrink, F.softshrink, False),
    (F.hardshrink, F.hardshrink, False),
]
ACTIVATION_FUNCS: dict[Callable[..., Any], tuple[Callable[..., Any], bool]] = {
    f: (g, linear) for f, g, linear in _ACTIVATIONS
}
# Functions whose output is a multiplicative gate in (0, 1): a product with such a tensor is
# treated as a gated signal by the product rule.
GATE_FUNCS: set[Callable[..., Any]] = {
    F.sigmoid,
    torch.sigmoid,
    Tensor_.sigmoid,
    F.hardsigmoid,
    F.softmax,
    torch.softmax,
    Tensor_.softmax,
}

MAXPOOL_FUNCS: set[Callable[..., Any]] = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}
AVGPOOL_FUNCS: set[Callable[..., Any]] = {
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
}
ADD_FUNCS: set[Callable[..., Any]] = {
    torch.add,
    Tensor_.add,
    Tensor_.add_,
    Tensor_.__add__,
    Tensor_.__radd__,
    Tensor_.__iadd__,
    torch.sub,
    torch.subtract,
    Tensor_.sub,
    Tensor_.sub_,
    Tensor_.subtract,
    Tensor_.__sub__,
    Tensor_.__rsub__,
    Tensor_.__isub__,
}
MUL_FUNCS: set[Callable[..., Any]] = {
    torch.mul,
    torch.multiply,
    Tensor_.mul,
    Tensor_.mul_,
    Tensor_.multiply,
    Tensor_.__mul__,
    Tensor_.__rmul__,
    Tensor_.__imul__,
}
DIV_FUNCS: set[Callable[..., Any]] = {
    torch.div,
    torch.divide,
    torch.true_divide,
    Tensor_.div,
    Tensor_.div_,
    Tensor_.divide,
    Tensor_.true_divide,
    Tensor_.__truediv__,
    Tensor_.__itruediv__,
    Tensor_.__rtruediv__,
}
MATMUL_FUNCS: set[Callable[..., Any]] = {
    torch.matmul,
    torch.mm,
    torch.bmm,
    Tensor_.matmul,
    Tensor_.mm,
    Tensor_.bmm,
    Tensor_.__matmul__,
    Tensor_.__rmatmul__,
    torch.einsum,
}
# Transformer operations (AttnLRP / CP-LRP): softmax, fused attention, normalisations.
SOFTMAX_FUNCS: set[Callable[..., Any]] = {F.softmax, torch.softmax, Tensor_.softmax}
ATTENTION_FUNCS: set[Callable[..., Any]] = {F.scaled_dot_product_attention}
LAYER_NORM_FUNCS: set[Callable[..., Any]] = {F.layer_norm}
RMS_NORM_FUNCS: set[Callable[..., Any]] = {F.rms_norm} if hasattr(F, "rms_norm") else set()
NORMALIZE_FUNCS: set[Callable[..., Any]] = {F.normalize}
# Statistics of a tensor that normalisations divide by (x², √·, 1/√·, variance, norms). A hand-written
# LayerNorm or RMSNorm computes them from the input; AttnLRP's identity rule treats them as constants.
_STATISTIC_NAMES = (
    "pow",
    "pow_",
    "__pow__",
    "__ipow__",
    "square",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "norm",
)
STATISTIC_FUNCS: set[Callable[..., Any]] = {
    obj for name in _STATISTIC_NAMES for owner in (torch, Tensor_) if callable(obj := getattr(owner, name, None))
} | {torch.linalg.vector_norm, torch.linalg.norm}
# Routing operations that may merge relevance-carrying tensors with constant ones (a class token
# concatenated to the patch tokens, a masked fill): the constant parts take relevance.
MERGE_FUNCS: set[Callable[..., Any]] = {
    obj
    for name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "where", "masked_fill")
    for owner in (torch, Tensor_)
    if callable(obj := getattr(owner, name, None))
}
# Functions whose scalar arguments are values written into the output (not dimensions).
SCALAR_VALUE_FUNCS: set[Callable[..., Any]] = {torch.where, Tensor_.where, torch.masked_fill, Tensor_.masked_fill}
DROPOUT_FUNCS: set[Callable[..., Any]] = {
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
}

# Linear operations without bias, and pure routing (reshape, index, concatenate): their
# gradient is exact LRP-0, which conserves relevance (Σ x ⊙ Aᵀg = Σ (Ax) ⊙ g).
_EXACT_NAMES = (
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "unsqueeze_",
    "permute",
    "transpose",
    "transpose_",
    "swapaxes",
    "swapdims",
    "movedim",
    "moveaxis",
    "t",
    "contiguous",
    "clone",
    "expand",
    "expand_as",
    "repeat",
    "repeat_interleave",
    "tile",
    "narrow",
    "select",
    "split",
    "split_with_sizes",
    "chunk",
    "unbind",
    "tensor_split",
    "hsplit",
    "vsplit",
    "dsplit",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "dstack",
    "masked_fill",
    "where",
    "flip",
    "fliplr",
    "flipud",
    "roll",
    "rot90",
    "__getitem__",
    "__setitem__",
    "index_select",
    "gather",
    "take_along_dim",
    "diagonal",
    "tril",
    "triu",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "channel_shuffle",
    "native_channel_shuffle",
    "unfold",
    "fold",
    "to",
    "type",
    "type_as",
    "float",
    "double",
    "half",
    "bfloat16",
    "cpu",
    "cuda",
    "sum",
    "mean",
    "nansum",
    "cumsum",
    "neg",
    "negative",
    "__neg__",
    "positive",
    "__pos__",
    "interpolate",
    "upsample",
    "upsample_nearest",
    "upsample_bilinear",
    "max",
    "min",
    "amax",
    "amin",
    "sort",
    "topk",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices",
    "identity",
)


def _collect(names: Sequence[str]) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    for name in names:
        for owner in (torch, Tensor_, F):
            obj = getattr(owner, name, None)
            if obj is not None and callable(obj):
                found.add(obj)
    for prop in ("T", "mT", "H", "mH"):
        found.add(getattr(Tensor_, prop).__get__)
    return found


EXACT_FUNCS: set[Callable[..., Any]] = _collect(_EXACT_NAMES)

INPLACE_TO_OUT_OF_PLACE: dict[Callable[..., Any], Callable[..., Any]] = {
    Tensor_.add_: torch.add,
    Tensor_.__iadd__: torch.add,
    Tensor_.sub_: torch.sub,
    Tensor_.__isub__: torch.sub,
    Tensor_.mul_: torch.mul,
    Tensor_.__imul__: torch.mul,
    Tensor_.div_: torch.div,
    Tensor_.__itruediv__: torch.div,
    torch.relu_: torch.relu,
    F.relu_: torch.relu,
    Tensor_.relu_: torch.relu,
    Tensor_.squeeze_: torch.squeeze,
    Tensor_.unsqueeze_: torch.unsqueeze,
    Tensor_.transpose_: torch.transpose,
}


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


def classify(func: Callable[..., Any], carrying_positions: Sequence[int], n_tensor_args: int) -> str:
    """Sort a torch function into the kind of operation a rule is written for.

    Parameters
    ----------
    func
        The function the model called.
    carrying_positions
        Positions (among the tensor arguments) of the arguments that carry relevance.
    n_tensor_args
        Number of tensor arguments of the call.
    """
    if func in CONV_FUNCS:
        return "conv"
    if func in CONV_TRANSPOSE_FUNCS:
        return "conv_transpose"
    if func in LINEAR_FUNCS:
        return "linear"
    if func in BATCHNORM_FUNCS:
        return "batchnorm"
    if func in RELU_FUNCS:
        return "relu"
    if func in ACTIVATION_FUNCS:
        return "activation"
    if func in MAXPOOL_FUNCS:
        return "maxpool"
    if func in AVGPOOL_FUNCS:
        return "avgpool"
    if func in ADD_FUNCS:
        return "add"
    if func in MUL_FUNCS:
        return "mul" if len(carrying_positions) > 1 else "exact"
    if func in DIV_FUNCS:
        # x / c is linear in x; a division by a relevance-carrying tensor is a normalisation
        # (for c / x, Tensor.__rtruediv__(x, c), the carrying tensor is the denominator).
        if func is Tensor_.__rtruediv__:
            return "div"
        return "exact" if tuple(carrying_positions) == (0,) else "div"
    if func in MATMUL_FUNCS:
        return "matmul" if len(carrying_positions) > 1 else "exact"
    if func in DROPOUT_FUNCS:
        return "dropout"
    if func in SOFTMAX_FUNCS:
        return "softmax"
    if func in ATTENTION_FUNCS:
        return "attention"
    if func in LAYER_NORM_FUNCS:
        return "layer_norm"
    if func in RMS_NORM_FUNCS:
        return "rms_norm"
    if func in NORMALIZE_FUNCS:
        return "normalize"
    if func in STATISTIC_FUNCS:
        # Only x ** c (a power of the signal) is a statistic; c ** x or x ** y are not.
        return "statistic" if tuple(carrying_positions) == (0,) else "unknown"
    if func in EXACT_FUNCS:
        return "exact"
    return "unknown"


# --- argument binding --------------------------------------------------------------------------
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose": (
        "input",
        "weight",
        "bias",
        "stride",
        "padding",
        "output_padding",
        "groups",
        "dilation",
    ),
    "linear": ("input", "weight", "bias"),
    "batchnorm": (
        "input",
        "running_mean",
        "running_var",
        "weight",
        "bias",
        "training",
        "momentum",
        "eps",
    ),
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "conv": {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    "conv_transpose": {
        "bias": None,
        "stride": 1,
        "padding": 0,
        "output_padding": 0,
        "groups": 1,
        "dilation": 1,
    },
    "linear": {"bias": None},
    "batchnorm": {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5},
}


def bind_arguments(kind: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map positional and keyword arguments of a conv/linear/batch-norm call to their names."""
    names = _SIGNATURES[kind]
    bound = dict(_DEFAULTS[kind])
    for name, value in zip(names, args, strict=False):
        bound[name] = value
    bound.update(kwargs)
    return bound


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
