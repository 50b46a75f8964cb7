r"""Plumbing shared by the attribution methods: inputs, targets, scores, baselines and results.

Every method explains the same scalar per sample as LRP does. The target is resolved once,
at the inputs, by :func:`relprop.targets.initial_relevance` into an initial gradient ``g`` at
the model output ``z``; the explained score of any input ``x'`` is then

.. math::

    s(x') = \sum_k g_k\, z_k(x'),

which is the logit ``z_c`` for a class target, ``z_c - z_k`` for a contrast, and
``Σ R/z ⊙ z(x')`` for an initial-relevance tensor. Methods that move away from the inputs
(Integrated Gradients, SmoothGrad, occlusion, DeepLIFT) evaluate this same ``s`` at the
points they visit, so that every method answers the same question.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import match
from ..composites import Composite
from ..engine import guard
from ..errors import ConfigurationError
from ..explanation import Explanation
from ..kinds import out_of_place as _out_of_place
from ..ledger import Ledger
from ..metrics.selectivity import gaussian_blur
from ..outputs import select_output
from ..rules import GradientRule, LRP0Rule, Rule, per_sample_sum
from ..targets import TopLayer, initial_relevance

__all__ = [
    "BASELINES",
    "check_eval",
    "chunks",
    "explanation",
    "make_baseline",
    "out_of_place",
    "plain_gradient_composite",
    "prepare_inputs",
    "resolve_target",
    "scores",
    "scores_and_gradients",
]

#: Names accepted for a baseline (Integrated Gradients) or reference (DeepLIFT).
BASELINES = ("zeros", "blurred", "mean")


def prepare_inputs(model: nn.Module, inputs: Any) -> Tensor:
    """Check ``inputs`` (a non-empty floating-point batch) and bring it to the model's device and dtype.

    The method registry does this (and the NaN check) before a method runs; see
    :func:`relprop.engine.guard.prepare_inputs`.
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return guard.prepare_inputs(model, inputs, "report")


def check_eval(model: nn.Module) -> None:
    """Refuse models whose forward pass would change them or mix samples (see :func:`.guard.check_eval`)."""
    guard.check_eval(model)


def forward(model: nn.Module, x: Tensor) -> Tensor:
    """The model's scores for ``x`` (the tensor it returns, or its ``.logits``).

    The model runs on a copy of ``x``, so that a model that changes its input in place changes
    neither the user's tensor nor the method's; its torch errors become one-sentence
    :class:`~relprop.errors.InputError` messages.
    """
    return select_output(guard.run_model(model, x))


def resolve_target(output: Tensor, target: Any) -> TopLayer:
    """Resolve ``target`` at the model output exactly as LRP does (same forms, same errors)."""
    return initial_relevance(output, target)


def expand_head(grad: Tensor, repeats: int) -> Tensor:
    """The initial gradient of a batch repeated ``repeats`` times (blocks of the whole batch)."""
    return grad.repeat(repeats, *([1] * (grad.dim() - 1)))


def scores(model: nn.Module, x: Tensor, head_grad: Tensor) -> Tensor:
    """``s(x) = Σ_k g_k z_k(x)`` per sample, without gradients (``head_grad`` matches ``x``'s batch)."""
    with torch.no_grad():
        out = forward(model, x)
        return per_sample_sum(out * head_grad.to(out.dtype))


def scores_and_gradients(model: nn.Module, x: Tensor, head_grad: Tensor) -> tuple[Tensor, Tensor]:
    """``s(x)`` per sample and its gradient ``∇s(x)`` in one forward and one backward pass."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = forward(model, leaf)
        grad_out = head_grad.to(out.dtype)
        (grad,) = torch.autograd.grad(out, leaf, grad_out, allow_unused=True)
    value = per_sample_sum(out.detach() * grad_out)
    return value, torch.zeros_like(leaf) if grad is None else grad


def chunks(total: int, size: int) -> Iterator[range]:
    """Consecutive ranges of at most ``size`` items covering ``range(total)``."""
    for start in range(0, total, size):
        yield range(start, min(start + size, total))


def explanation(
    relevance: Tensor,
    output: Tensor,
    target: Tensor,
    score: Tensor,
    info: dict[str, Any],
) -> Explanation:
    """Wrap a method's attribution as an :class:`Explanation` with a ledger without per-layer entries.

    ``score`` is what the method explains per sample (for baseline methods ``s(x) - s(x̄)``), and
    the ledger's input relevance is ``Σ relevance``, so ``ledger.residual`` is the part of the
    score the attribution misses.
    """
    relevance = relevance.detach()
    ledger = Ledger(score=score.detach(), input_relevance=per_sample_sum(relevance))
    return Explanation(relevance=relevance, output=output.detach(), target=target, ledger=ledger, info=info)


# -- baselines -------------------------------------------------------------------------------------
def make_baseline(spec: Any, x: Tensor, name: str = "baseline", blur_sigma: float = 5.0) -> Tensor:
    """A baseline (reference input) for each sample of ``x``, shaped like ``x``.

    Parameters
    ----------
    spec
        ``"zeros"``; ``"blurred"`` (each sample blurred by a Gaussian of standard deviation
        ``blur_sigma`` pixels over its spatial dimensions, edges replicated); ``"mean"`` (each
        channel filled with its mean over the sample's other dimensions; for ``(N, F)`` inputs the
        mean over the features); a number (a constant input); or a tensor shaped like ``x``, like
        one sample, or broadcastable to ``x``.
    x
        The inputs.
    name
        The parameter's name, for error messages.
    blur_sigma
        Standard deviation of the blur in pixels.
    """
    if isinstance(spec, Tensor):
        t = spec.detach().to(device=x.device, dtype=x.dtype)
        if tuple(t.shape) == tuple(x.shape[1:]) and t.dim() == x.dim() - 1:
            t = t.unsqueeze(0)
        try:
            return t.expand_as(x).clone()
        except RuntimeError:
            raise ConfigurationError(
                f"{name} has shape {tuple(t.shape)}, which does not fit inputs of shape {tuple(x.shape)}; pass a "
                "tensor shaped like the inputs or like one sample."
            ) from None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full_like(x, float(spec))
    if spec in ("zeros", "zero"):
        return torch.zeros_like(x)
    if spec == "mean":
        if x.dim() == 1:
            return x.clone()  # one feature per sample: its own mean
        first_averaged = 1 if x.dim() == 2 else 2
        return x.mean(dim=tuple(range(first_averaged, x.dim())), keepdim=True).expand_as(x).clone()
    if spec in ("blurred", "blur"):
        if x.dim() < 3:
            raise ConfigurationError(
                f"{name}='blurred' needs inputs with spatial dimensions (N, C, ...), got shape {tuple(x.shape)}; "
                "use 'zeros', 'mean' or a tensor."
            )
        return gaussian_blur(x, blur_sigma)
    raise ConfigurationError(
        f"{name} must be one of {', '.join(repr(b) for b in BASELINES)}, a number or a tensor, got {spec!r}."
    )


def as_tuple(value: Any, length: int, name: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple of ``length`` positive ints."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a positive integer or a tuple of them, got {value!r}.")
    if isinstance(value, int):
        values: Sequence[Any] = (value,) * length
    elif isinstance(value, (tuple, list)) and len(value) == length:
        values = value
    else:
        raise ConfigurationError(f"{name} must be a positive integer or a tuple of {length} of them, got {value!r}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ConfigurationError(f"{name} must hold positive integers, got {value!r}.")
    return tuple(int(v) for v in values)


def out_of_place(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The out-of-place form of a call a :class:`~relprop.rules.FunctionRule` receives.

    ``x.relu_()`` becomes ``torch.relu(x)``, ``out += y`` becomes ``torch.add(out, y)`` and an
    ``inplace`` flag (keyword, or a positional boolean of an activation) is dropped: a rule computes
    a new output and never writes into the model's tensors. A model that reads the tensor an
    in-place call would have overwritten is refused when the engine records its plan.
    """
    return _out_of_place(func, args, kwargs)


# -- composites for modified-gradient methods -----------------------------------------------------
def plain_gradient_composite(entries: Sequence[tuple[Any, Rule]], name: str) -> Composite:
    """A composite that hands down the ordinary gradient except where ``entries`` say otherwise.

    LRP-0 without a ledger is the plain gradient through layers, residual sums, average pooling
    and batch norm; :class:`~relprop.rules.GradientRule` is the plain gradient through everything
    else, including operations relprop has no LRP rule for.
    """
    return Composite(
        [
            *entries,
            (match.kind("layer", "add", "avgpool", "batchnorm"), LRP0Rule()),
            (match.kind("relu", "activation", "maxpool", "mul", "matmul", "unknown"), GradientRule()),
        ],
        name=name,
    )
