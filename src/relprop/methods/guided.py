r"""Guided backpropagation (Springenberg et al. 2015) and deconvnet (Zeiler & Fergus 2014).

Both are the gradient of the score with a different backward pass through every ReLU
``y = max(0, x)``; all other operations (convolutions, dense layers, batch norm, pooling,
residual sums, other activations) keep their ordinary gradient:

* guided backprop: :math:`g_x = \mathbb 1[x > 0] \cdot \max(0, g_y)` — only positive gradient,
  only where the unit was active;
* deconvnet: :math:`g_x = \max(0, g_y)` — only positive gradient, whatever the unit did.

They run through the LRP engine: the ReLU rule is a :class:`relprop.rules.FunctionRule`
in a :class:`relprop.Composite` whose other entries hand down the plain gradient, so ReLUs
written as modules, functions (``F.relu``) or methods (``x.relu_()``) are all found, and the
model is never modified. The attribution is the modified gradient at the input (as in
Captum's ``GuidedBackprop`` and ``Deconvolution``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import match
from ..composites import Composite
from ..engine import Explainer
from ..explanation import Explanation
from ..rules import FunctionRule
from . import _common, register

__all__ = ["DeconvReLURule", "GuidedReLURule", "deconvnet", "guided_backprop", "relu_rule_composite"]


class _RectifiedGradient(torch.autograd.Function):
    """ReLU forward; backward passes ``max(0, g)``, masked by the unit's activity when ``guided``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, guided: bool) -> Tensor:
        y = torch.relu(x)
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        passed = grad.clamp(min=0)
        if ctx.guided:
            (y,) = ctx.saved_tensors
            passed = passed.masked_fill_(y <= 0, 0.0)
        return passed, None


def _relu_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else kwargs["input"]  # type: ignore[no-any-return]


class GuidedReLURule(FunctionRule):
    r"""Guided backprop through a ReLU: :math:`g_x = \mathbb 1[x > 0] \max(0, g_y)`."""

    applies_to = ("relu",)
    label = "guided-relu"

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _RectifiedGradient.apply(_relu_input(args, kwargs), True)


class DeconvReLURule(FunctionRule):
    r"""Deconvnet through a ReLU: :math:`g_x = \max(0, g_y)` (the forward mask is ignored)."""

    applies_to = ("relu",)
    label = "deconv-relu"

    def apply(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _RectifiedGradient.apply(_relu_input(args, kwargs), False)


def relu_rule_composite(rule: FunctionRule, name: str) -> Composite:
    """``rule`` on every ReLU, the plain gradient everywhere else."""
    return _common.plain_gradient_composite([(match.kind("relu"), rule)], name)


def _run(model: nn.Module, inputs: Tensor, target: Any, rule: FunctionRule, name: str) -> Explanation:
    x = inputs  # checked, on the model's device and dtype: see methods.register
    result = Explainer(model, relu_rule_composite(rule, name), canonize=False, ledger=False, nonfinite="report")(
        x, target
    )
    grad = result.info["input_gradient"]
    info = {"method": name, "input_gradient": grad}
    return _common.explanation(grad, result.output, result.target, result.ledger.score, info)


@register("guided-backprop", "gradient whose ReLUs pass only positive gradient, and only where active")
def guided_backprop(model: nn.Module, inputs: Tensor, target: Any = None) -> Explanation:
    r"""Guided backpropagation: the gradient with :math:`g_x = \mathbb 1[x>0] \max(0, g_y)` at every ReLU.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.methods.gradient.gradient`.

    Returns
    -------
    Explanation
        ``relevance`` (and ``info["input_gradient"]``) is the guided gradient at the input.
    """
    return _run(model, inputs, target, GuidedReLURule(), "guided-backprop")


@register("deconvnet", "gradient whose ReLUs pass only positive gradient (deconvolution network)")
def deconvnet(model: nn.Module, inputs: Tensor, target: Any = None) -> Explanation:
    r"""Deconvnet: the gradient with :math:`g_x = \max(0, g_y)` at every ReLU.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.methods.gradient.gradient`.

    Returns
    -------
    Explanation
        ``relevance`` (and ``info["input_gradient"]``) is the deconvnet signal at the input.
    """
    return _run(model, inputs, target, DeconvReLURule(), "deconvnet")
