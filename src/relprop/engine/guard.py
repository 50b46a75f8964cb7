"""What every explanation checks before it runs the model, and before it hands out a result.

LRP (:class:`~relprop.engine.explainer.Explainer`) and every registered method
(:func:`relprop.methods.register`) call these, so that all of them refuse the same things with
the same one-sentence errors:

* :func:`check_model` — before any forward pass, so that a refused call leaves the model as it
  was: autograd must be available (no ``torch.inference_mode``), the model must hold values (not
  the meta device, no inference tensors), and no module may be in a mode whose forward pass
  would change the model or mix samples (batch norm with batch statistics, active dropout).
* :func:`prepare_inputs` — a non-empty floating-point batch, moved to the model's device and
  converted to its dtype (with a :class:`~relprop.errors.RelpropWarning`), without NaN or Inf
  (:class:`~relprop.errors.NonFiniteError` naming the first bad position) unless the caller asked
  for ``nonfinite="report"``.
* :func:`model_failure` — a torch error raised by the model's own forward pass becomes an
  :class:`~relprop.errors.InputError` naming the input shape and what the model's first layer takes.
* :func:`finish` — NaN or Inf anywhere in the result (output, explained score, relevance, inner
  layers) is never a success: an error naming the sample and the first bad value, or with
  ``nonfinite="report"`` a report in ``explanation.info["nonfinite"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import (
    ConfigurationError,
    InputError,
    ModelStateError,
    NonFiniteError,
    RelpropError,
    RelpropWarning,
    first_line,
)
from ..explanation import Explanation
from ..finite import first_non_finite, non_finite_problem
from .model import display_path

__all__ = [
    "NONFINITE_MODES",
    "ModelFacts",
    "check_model",
    "check_nonfinite_mode",
    "expected_input",
    "finish",
    "model_facts",
    "model_failure",
    "prepare_inputs",
]

#: ``"raise"``: NaN or Inf in the inputs or the result is an error; ``"report"``: explain anyway and
#: report what is not finite, per sample, in ``explanation.info["nonfinite"]``.
NONFINITE_MODES = ("raise", "report")
#: Exceptions a model's forward pass raises for inputs it cannot take (shape, rank, dtype).
MODEL_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


@dataclass(frozen=True)
class ModelFacts:
    """What one pass over a model's modules, parameters and buffers finds.

    ``signature`` is the identity of every module, parameter and buffer: when it changes, an
    explainer's plans and cached weights no longer describe the model. ``meta`` and
    ``inference`` name the first tensor on the meta device or made under ``inference_mode``;
    ``mode`` describes the first module in a mode that cannot be explained (see :func:`check_eval`).
    """

    signature: tuple[int, ...]
    device: torch.device | None
    dtype: torch.dtype | None
    meta: str | None = None
    inference: str | None = None
    mode: str | None = None


def model_facts(model: nn.Module) -> ModelFacts:
    """Identity, device, common floating dtype, first meta or inference tensor, first bad mode of ``model``.

    One pass over the modules' own parameter and buffer dictionaries: it runs before every call.
    """
    signature: list[int] = []
    dtypes: set[torch.dtype] = set()
    meta = inference = mode = None
    for module_path, module in model.named_modules():
        signature.append(id(module))
        if mode is None:
            problem = _mode_problem(module)
            if problem is not None:
                mode = f"{problem[0]} at '{display_path(module_path)}' ({type(module).__name__}) {problem[1]}"
        for tensors in (module._parameters, module._buffers):
            for name, t in tensors.items():
                signature.append(id(t))
                if t is None:
                    continue
                if t.is_floating_point():
                    dtypes.add(t.dtype)
                if meta is None and t.is_meta:
                    meta = f"{module_path}.{name}" if module_path else name
                if inference is None and t.is_inference():
                    inference = f"{module_path}.{name}" if module_path else name
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    return ModelFacts(tuple(signature), _device_of(model), dtype, meta, inference, mode)


def _device_of(model: nn.Module) -> torch.device | None:
    # Parameters first (a model with both keeps its weights where it computes), then buffers.
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def check_nonfinite_mode(nonfinite: Any) -> str:
    """``nonfinite`` if it is one of :data:`NONFINITE_MODES`."""
    if nonfinite not in NONFINITE_MODES:
        raise ConfigurationError(
            f"nonfinite must be one of {', '.join(repr(m) for m in NONFINITE_MODES)}, got {nonfinite!r}."
        )
    return str(nonfinite)


def check_model(model: Any) -> ModelFacts:
    """Refuse, before any forward pass, a model that cannot be explained as it is.

    Raises
    ------
    ConfigurationError
        ``model`` is not a module, or ``torch.inference_mode`` is active.
    ModelStateError
        The model is on the meta device, holds inference tensors, or has a module whose forward
        pass would change it or mix samples (see :func:`check_eval`).
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if torch.is_inference_mode_enabled():
        raise ConfigurationError(
            "torch.inference_mode() is active, which turns autograd off for good; call relprop outside it "
            "(torch.no_grad() around the call is fine: relprop turns gradients on where it needs them)."
        )
    facts = model_facts(model)
    if facts.meta is not None:
        raise ModelStateError(
            f"tensor '{facts.meta}' of the model is on the meta device, which holds no values to explain; load the "
            "weights first (e.g. model.to_empty(device='cpu') and load_state_dict)."
        )
    if facts.inference is not None:
        raise ModelStateError(
            f"tensor '{facts.inference}' of the model was made under torch.inference_mode(), so autograd cannot use "
            "it; create or load the model outside inference_mode (torch.no_grad() is fine)."
        )
    _refuse_mode(facts)
    return facts


def check_eval(model: nn.Module) -> None:
    """Refuse models whose forward pass would change them or mix samples (training-mode batch norm, dropout).

    Checked before any forward pass: a batch norm in training mode updates its running
    statistics (and ``num_batches_tracked``) as soon as it runs, so refusing it later would
    leave the model changed.
    """
    _refuse_mode(model_facts(model))


def _refuse_mode(facts: ModelFacts) -> None:
    if facts.mode is not None:
        raise ModelStateError(f"{facts.mode}; call model.eval() before explaining.")


def _mode_problem(module: nn.Module) -> tuple[str, str] | None:
    """What the module's forward pass would do wrong in its present mode (``None`` if nothing).

    A batch norm without running statistics normalises with the batch's also in eval mode.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
        return "batch norm", "normalises with batch statistics (training mode or no running statistics)"
    if not module.training:
        return None
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
        return "instance norm", "updates its running statistics (training mode)"
    if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
        return "dropout", "is active (training mode)"
    dropout = getattr(module, "dropout", 0)
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) and dropout:
        return "dropout", f"is active (training mode, dropout={dropout:g})"
    return None


def prepare_inputs(model: nn.Module, inputs: Any, nonfinite: str = "raise", facts: ModelFacts | None = None) -> Tensor:
    """Check ``inputs`` and bring them to the model's device and dtype (the caller's tensor is never changed).

    Parameters
    ----------
    model
        The model (its device and dtype are those of its parameters, else of its buffers).
    inputs
        A non-empty floating-point batch, batch first.
    nonfinite
        ``"raise"``: refuse NaN or Inf with the position of the first; ``"report"``: let them through.
    facts
        :func:`model_facts` of ``model`` if the caller has them.
    """
    if not isinstance(inputs, Tensor):
        raise InputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}.")
    if not inputs.is_floating_point():
        raise InputError(
            f"inputs must be a floating-point tensor, got dtype {inputs.dtype}; convert images with .float()."
        )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise InputError(f"inputs must have a non-empty batch dimension, got shape {tuple(inputs.shape)}.")
    facts = facts or model_facts(model)
    if nonfinite == "raise":
        _refuse_non_finite(inputs, "")
    x = inputs.clone() if inputs.is_inference() else inputs
    if facts.dtype is not None and x.dtype != facts.dtype and x.device.type != "meta":
        warnings.warn(
            f"inputs of dtype {x.dtype} were converted to {facts.dtype}, the dtype of the model's parameters, and "
            f"the relevance is computed in {facts.dtype}; convert the inputs yourself to silence this note.",
            RelpropWarning,
            stacklevel=3,
        )
        x = x.to(facts.dtype)
        if nonfinite == "raise":
            _refuse_non_finite(x, f" once converted to {facts.dtype}")
    x = x.detach()  # a new tensor object: setting requires_grad on it leaves the caller's tensor alone
    return x if facts.device is None else x.to(facts.device)


def _refuse_non_finite(x: Tensor, when: str) -> None:
    if x.device.type == "meta" or bool(torch.isfinite(x).all()):
        return
    found = first_non_finite(x)
    assert found is not None
    position, value, count = found
    more = f" (and {count - 1} more)" if count > 1 else ""
    raise NonFiniteError(
        f"the inputs hold {value} at {position}{more}{when}; replace NaN and Inf (e.g. with torch.nan_to_num) or "
        "pass nonfinite='report' to explain them anyway."
    )


def expected_input(model: nn.Module, shape: tuple[int, ...]) -> tuple[str, bool] | None:
    """What the model's first convolution or dense layer takes, and whether inputs of ``shape`` clearly do not fit.

    For example ``("its first layer '0' (Conv2d) takes (N, 1, H, W)", True)`` for inputs of shape
    ``(2, 3, 8, 8)``; ``None`` if the model has neither kind of layer.
    """
    for path, module in model.named_modules():
        name = f"its first layer '{display_path(path)}' ({type(module).__name__})"
        if isinstance(module, nn.modules.conv._ConvNd):
            dims = len(module.kernel_size)
            spatial = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(dims, ["..."])
            takes = ", ".join(["N", str(module.in_channels), *spatial])
            fits = len(shape) == dims + 2 and shape[1] == module.in_channels
            return f"{name} takes ({takes})", not fits
        if isinstance(module, nn.Linear):
            # Something before it may flatten the inputs: only a 2-d input of another width clearly does not fit.
            fits = len(shape) != 2 or shape[-1] == module.in_features
            return f"{name} takes {module.in_features} features in the last dimension", not fits
    return None


def model_failure(
    model: nn.Module, shape: tuple[int, ...], exc: BaseException, worked: Iterable[Any] = ()
) -> InputError:
    """The one-sentence error for a torch error raised by the model's forward pass on inputs of ``shape``.

    ``worked`` are per-sample shapes the same explainer explained before, if any.
    """
    expected = expected_input(model, shape)
    if expected is not None and expected[1]:
        return InputError(
            f"inputs of shape {tuple(shape)} do not fit the model: {expected[0]} (torch says: {first_line(exc)})."
        )
    seen = sorted({tuple(s) for s in worked if tuple(s) != tuple(shape[1:])})
    before = ""
    if seen:
        before = "; inputs of shape " + " and ".join(str(("N", *s)).replace("'", "") for s in seen) + " worked before"
    return InputError(
        f"the model failed on inputs of shape {tuple(shape)} ({first_line(exc)}){before}; check that the inputs have "
        "the shape and dtype the model was made for."
    )


def run_model(model: nn.Module, x: Tensor) -> Any:
    """``model(x)`` on a private copy of ``x`` (the model may change its input in place), errors translated."""
    try:
        return model(x.clone())
    except RelpropError:
        raise
    except MODEL_ERRORS as exc:
        raise model_failure(model, tuple(x.shape), exc) from exc


def finish(explanation: Explanation, nonfinite: str, model: nn.Module) -> Explanation:
    """Hand out ``explanation`` only if it is finite everywhere, or (``"report"``) with a report of what is not.

    Raises
    ------
    NonFiniteError
        With ``nonfinite="raise"``: ``"sample K: no explanation, because ..."`` for the first
        sample holding NaN or Inf in its output, explained score, relevance or inner-layer relevance.
    """
    parts = [explanation.output, explanation.score, explanation.relevance, *explanation.layers.values()]
    if all(bool(torch.isfinite(p).all()) for p in parts):
        return explanation
    problems = {}
    for sample in range(explanation.relevance.shape[0]):
        problem = _sample_problem(explanation, sample, model)
        if problem is not None:
            problems[sample] = problem
    if nonfinite == "report":
        explanation.info["nonfinite"] = problems
        return explanation
    sample, problem = next(iter(problems.items()))
    more = len(problems) - 1
    others = f" (and {more} more sample{'s' if more > 1 else ''})" if more else ""
    raise NonFiniteError(f"sample {sample}: no explanation, because {problem}{others}.")


def _sample_problem(explanation: Explanation, sample: int, model: nn.Module) -> str | None:
    if sample >= min(explanation.output.shape[0], explanation.score.shape[0]):
        # A method's own pass over more rows than the model's output has (DeepLIFT's reference half).
        found = first_non_finite(explanation.relevance[sample])
        return None if found is None else f"the relevance is {found[1]} at {found[0]}"
    problem = non_finite_problem(explanation, sample)
    if problem is not None:
        if not bool(torch.isfinite(explanation.output[sample]).all()):
            bad = _first_bad_tensor(model)
            if bad is not None:
                problem += f" ({bad})"
        return problem
    for path, relevance in explanation.layers.items():
        found = first_non_finite(relevance[sample])
        if found is not None:
            return (
                f"the relevance at layer '{path}' is {found[1]} at {found[0]} although the model's output is finite; "
                "choose other parameters for the method (e.g. a larger ε)"
            )
    return None


def _first_bad_tensor(model: nn.Module) -> str | None:
    """``"parameter 'fc.weight' is nan at (2, 5)"`` for the model's first non-finite parameter or buffer."""
    named = [("parameter", n, t) for n, t in model.named_parameters()] + [
        ("buffer", n, t) for n, t in model.named_buffers()
    ]
    for what, name, t in named:
        if t.is_floating_point() and t.device.type != "meta":
            found = first_non_finite(t)
            if found is not None:
                return f"{what} '{name}' is {found[1]} at {found[0]}"
    return None
