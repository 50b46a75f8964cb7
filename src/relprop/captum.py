r"""Captum-compatible attribution classes backed by relprop.

Code written for Captum — its ``NoiseTunnel``, its metrics (``infidelity``,
``sensitivity_max``), libraries that speak its interface (Inseq), tutorials written for
``captum.attr.LRP`` — can use relprop's explanations unchanged::

    from relprop.captum import LRP
    lrp = LRP(model, composite="epsilon-gamma-box", low=-2.2, high=2.7)
    attributions, delta = lrp.attribute(images, target=3, return_convergence_delta=True)

Each class has its Captum counterpart's constructor and ``attribute`` signature and semantics:
``inputs`` is a tensor or a tuple of tensors (a tuple of attributions comes back);
``target`` takes Captum's forms (``None``, an int, a tuple indexing a multi-dimensional output,
a tensor of one index or one per sample, a list of ints or of tuples) and additionally relprop's
region targets (:func:`relprop.targets.region`); ``additional_forward_args`` are passed to the
model after the inputs. Tensors among them whose first dimension is the batch are expanded the
way the method expands the inputs (blocks of the whole batch), so per-sample arguments stay with
their samples. The convergence delta follows Captum's sign conventions: for :class:`LRP` it is
the explained score minus the sum of the attributions — what relprop's ledger says the input
did not receive (absorbed by biases and stabilisers); for :class:`IntegratedGradients` and
:class:`DeepLift` it is the sum of the attributions minus ``s(x) − s(x̄)``.

Differences from Captum that are deliberate:

* ``target=None`` on a model with several outputs explains the predicted class (Captum refuses).
* :class:`LRP` follows relprop's composites. Without a composite it uses Captum's default, the
  ε rule with ε = 1e-9 on every layer, and on plain convolutional networks it then agrees with
  ``captum.attr.LRP``. It differs where Captum's rules differ: batch norms are folded into the
  layer before them (Captum applies the ε rule to the batch norm as a layer), and residual sums
  written as ``a + b`` split relevance in proportion to ``a`` and ``b`` (Captum's gradient
  passes the full relevance to both, so its attributions do not sum to the score). Rules set the
  Captum way, as ``module.rule = captum.attr._utils.lrp_rules.GammaRule()``, are honoured.
* Captum's ``"riemann_trapezoid"`` integrated gradients weigh the points by ``1/m``, relprop by
  the trapezoid weights (see :mod:`relprop.methods.integrated_gradients`).

Captum is an optional dependency: importing :mod:`relprop` never imports this module or Captum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

try:
    from captum.attr import GradientAttribution, PerturbationAttribution  # type: ignore[import-untyped]
    from captum.attr._utils import lrp_rules as _captum_rules  # type: ignore[import-untyped]
    from captum.log import log_usage  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without captum
    raise ImportError(
        "relprop.captum needs Captum (pip install captum); the rest of relprop works without it."
    ) from exc

from . import rules as _rules
from .api import explain as _explain
from .engine import Explainer
from .errors import ConfigurationError, TargetError
from .explanation import Explanation
from .outputs import select_output
from .targets import TargetSpec, TopLayer

__all__ = [
    "LRP",
    "Deconvolution",
    "DeepLift",
    "GuidedBackprop",
    "InputXGradient",
    "IntegratedGradients",
    "Occlusion",
    "Saliency",
]


# -- inputs, arguments and the model ----------------------------------------------------------------
def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def _check_inputs(inputs: Any) -> tuple[tuple[Tensor, ...], bool]:
    is_tuple = isinstance(inputs, tuple)
    tensors = _as_tuple(inputs)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ConfigurationError("inputs must be a tensor or a non-empty tuple of tensors, as for Captum.")
    batch = tensors[0].shape[0] if tensors[0].dim() else None
    if batch is None or any(t.dim() == 0 or t.shape[0] != batch for t in tensors):
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ConfigurationError(f"every input must have the same batch dimension first, got shapes {shapes}.")
    return tensors, is_tuple


def _batched(value: Any, batch: int, size: int) -> Any:
    """``value`` expanded from ``size`` samples to a batch of ``batch`` (blocks of the samples)."""
    if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != size or batch == size:
        return value
    if batch % size == 0:
        return value.repeat(batch // size, *([1] * (value.dim() - 1)))
    if batch < size:
        return value[:batch]  # the plan is recorded on the first sample(s)
    raise ConfigurationError(
        f"an argument of batch {size} cannot follow a model batch of {batch}; pass per-sample arguments "
        "with the batch first."
    )


class _CaptumForward(nn.Module):
    """``model(*inputs, *additional_forward_args)`` seen as a function of one tensor relprop explains.

    The explained inputs (all, or one for occlusion) are flattened and concatenated into one
    ``(N, F)`` tensor (a single explained input is passed as it is); the others stay fixed. The
    model is registered under the empty name, so module paths are the model's own.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        explained: Sequence[int],
        extra: tuple[Any, ...],
        output: Any,
    ) -> None:
        super().__init__()
        self._modules[""] = model
        self.inputs = inputs
        self.explained = tuple(explained)
        self.extra = extra
        self.output = output
        self.samples = inputs[0].shape[0]

    def pack(self, tensors: Sequence[Tensor]) -> Tensor:
        """The explained tensors as the one tensor relprop sees."""
        chosen = [tensors[i] for i in self.explained]
        if len(chosen) == 1:
            return chosen[0]
        return torch.cat([t.reshape(t.shape[0], -1) for t in chosen], dim=1)

    def unpack(self, packed: Tensor) -> list[Tensor]:
        """The explained tensors back in their own shapes."""
        shapes = [self.inputs[i].shape[1:] for i in self.explained]
        if len(shapes) == 1:
            return [packed]
        pieces = packed.split([math.prod(s) for s in shapes], dim=1)
        return [p.reshape(p.shape[0], *s) for p, s in zip(pieces, shapes, strict=True)]

    def forward(self, packed: Tensor) -> Tensor:
        batch = packed.shape[0]
        pieces = iter(self.unpack(packed))
        arguments = [
            next(pieces) if i in self.explained else _batched(t, batch, self.samples) for i, t in enumerate(self.inputs)
        ]
        extra = [_batched(a, batch, self.samples) for a in self.extra]
        model = self._modules[""]
        assert model is not None
        out = select_output(model(*arguments, *extra), self.output)
        return out.unsqueeze(1) if out.dim() == 1 else out


# -- targets -----------------------------------------------------------------------------------------
class _Positions(TargetSpec):
    """Captum's tuple targets: one output position per sample (indices after the batch dimension)."""

    def __init__(self, positions: Sequence[tuple[int, ...]]) -> None:
        self.positions = [tuple(int(i) for i in p) for p in positions]

    def resolve(self, output: Tensor, top: str = "logit", contrast: Any = None) -> TopLayer:
        if top != "logit" or contrast is not None:
            raise TargetError("a Captum tuple target explains one output; it cannot be combined with top or contrast.")
        shape = tuple(output.shape[1:])
        positions = self.positions * output.shape[0] if len(self.positions) == 1 else self.positions
        if len(positions) != output.shape[0]:
            raise TargetError(f"got {len(positions)} target tuples for a batch of {output.shape[0]}.")
        grad = torch.zeros_like(output)
        for n, position in enumerate(positions):
            if len(position) != len(shape) or not all(0 <= i < s for i, s in zip(position, shape, strict=False)):
                raise TargetError(
                    f"target {position} does not index an output of shape {shape} per sample; give one index per "
                    "output dimension after the batch, each within its size."
                )
            grad[(n, *position)] = 1.0
        score = (output * grad).reshape(output.shape[0], -1).sum(1)
        return TopLayer(grad, torch.tensor(positions, device=output.device), score, score)


def _target(target: Any, batch: int) -> Any:
    """Captum's target forms as a relprop target."""
    if target is None or isinstance(target, TargetSpec):
        return target
    if isinstance(target, Tensor):
        if target.numel() == 1:
            return int(target.item())
        if target.dim() == 1 and target.numel() == batch:
            return target.long()
        raise TargetError(
            f"a tensor target must hold one index or one per sample ({batch}), got shape {tuple(target.shape)}."
        )
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, tuple):
        return _Positions([target])
    if isinstance(target, list) and target:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            return torch.tensor(target, dtype=torch.long)
        if all(isinstance(t, tuple) for t in target):
            return _Positions(target)
    raise TargetError(
        f"target must be None, an int, a tuple, a tensor, or a list of ints or of tuples (Captum's forms), "
        f"got {target!r}."
    )


# -- Captum's LRP rules set on modules -------------------------------------------------------------
def _from_captum_rule(path: str, module: nn.Module, rule: Any) -> _rules.Rule | None:
    where = f"module '{path}' ({type(module).__name__})"
    if getattr(rule, "set_bias_to_zero", False):
        raise ConfigurationError(
            f"{where} has a Captum rule with set_bias_to_zero=True, which relprop does not offer; drop the flag."
        )
    if isinstance(rule, _captum_rules.IdentityRule):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return None  # relprop folds batch norms into the layer before them
        raise ConfigurationError(f"{where} has Captum's IdentityRule, which relprop applies to batch norms only.")
    if isinstance(rule, _captum_rules.EpsilonRule):
        return _rules.EpsilonRule(rule.STABILITY_FACTOR)
    if isinstance(rule, _captum_rules.GammaRule):
        return _rules.GammaRule(rule.gamma)
    if isinstance(rule, _captum_rules.Alpha1_Beta0_Rule):
        return _rules.AlphaBetaRule(1.0, 0.0)
    raise ConfigurationError(f"{where} has a Captum rule {type(rule).__name__} that relprop does not translate.")


def captum_rule_entries(model: nn.Module) -> list[tuple[str, _rules.Rule]]:
    """relprop ``(module path, rule)`` entries for the rules set the Captum way (``module.rule = ...``)."""
    entries = []
    for path, module in model.named_modules():
        rule = getattr(module, "rule", None)
        if rule is None or not isinstance(rule, _captum_rules.PropagationRule):
            continue
        translated = _from_captum_rule(path or "(model)", module, rule)
        if translated is not None:
            entries.append((path, translated))
    return entries


# -- the adapters ------------------------------------------------------------------------------------
class _Adapter:
    """Runs a relprop method for Captum's ``attribute`` and converts the result back."""

    method: ClassVar[str]
    delta: ClassVar[str | None] = None  # "ledger": score - Σ attributions; "completeness": Σ attributions - Δs

    def __init__(self, model: nn.Module, output: Any = None) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(
                f"relprop.captum needs a torch.nn.Module (relprop follows its operations), got {type(model).__name__}."
            )
        self.model = model
        self.output = output

    def has_convergence_delta(self) -> bool:
        """Whether ``attribute`` can return a convergence delta."""
        return self.delta is not None

    def _run(
        self,
        inputs: Any,
        target: Any,
        additional_forward_args: Any,
        params: dict[str, Any],
        explained: Sequence[int] | None = None,
        baselines: Any = None,
        baseline_param: str | None = None,
    ) -> tuple[list[Tensor], Explanation, _CaptumForward]:
        tensors, _ = _check_inputs(inputs)
        chosen = range(len(tensors)) if explained is None else explained
        forward = _CaptumForward(self.model, tensors, chosen, _as_tuple(additional_forward_args), self.output)
        if baseline_param is not None:
            params[baseline_param] = forward.pack(_baselines(baselines, tensors))
        result = _explain(
            forward, forward.pack(tensors), _target(target, tensors[0].shape[0]), method=self.method, **params
        )
        return forward.unpack(result.relevance), result, forward

    def _finish(
        self, attributions: list[Tensor], is_tuple: bool, result: Explanation, return_convergence_delta: bool
    ) -> Any:
        formatted = tuple(attributions) if is_tuple else attributions[0]
        if not return_convergence_delta:
            return formatted
        if self.delta is None:
            raise ConfigurationError(f"{type(self).__name__} has no convergence delta; call it without one.")
        gap = result.ledger.score - result.ledger.input_relevance
        return formatted, (gap if self.delta == "ledger" else -gap).detach()


def _baselines(baselines: Any, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Captum's baselines (None, a number, a tensor, or a tuple of them) as tensors shaped like the inputs."""
    given = (None,) * len(inputs) if baselines is None else _as_tuple(baselines)
    if len(given) != len(inputs):
        raise ConfigurationError(f"got {len(given)} baselines for {len(inputs)} inputs; give one per input.")
    out = []
    for b, x in zip(given, inputs, strict=True):
        if b is None:
            out.append(torch.zeros_like(x))
        elif isinstance(b, (int, float)) and not isinstance(b, bool):
            out.append(torch.full_like(x, float(b)))
        elif isinstance(b, Tensor):
            try:
                out.append(b.to(x).expand_as(x))
            except RuntimeError:
                raise ConfigurationError(
                    f"a baseline of shape {tuple(b.shape)} does not fit an input of shape {tuple(x.shape)}."
                ) from None
        else:
            raise ConfigurationError(f"a baseline must be None, a number or a tensor, got {type(b).__name__}.")
    return tuple(out)


class LRP(_Adapter, GradientAttribution):
    """Layer-wise Relevance Propagation with relprop's engine, called like ``captum.attr.LRP``.

    Parameters
    ----------
    model
        The model (never modified).
    composite
        A relprop composite name or :class:`~relprop.composites.Composite`; ``None`` (default) is
        Captum's default, the ε rule with ε = 1e-9 on every layer (relprop's ``"epsilon"`` with
        ``epsilon=1e-9`` and ``stabilizer=1e-9`` for pools and sums).
    output
        Which tensor of a dict, tuple or dataclass output to explain (:mod:`relprop.outputs`).
    **params
        Composite parameters (``epsilon``, ``gamma``, ``low``, ``high`` …) and relprop's
        Explainer options (``rules``, ``canonize``, ``top``, ``contrast``).
    """

    method = "lrp"
    delta = "ledger"

    def __init__(self, model: nn.Module, composite: Any = None, output: Any = None, **params: Any) -> None:
        _Adapter.__init__(self, model, output)
        GradientAttribution.__init__(self, model)
        if composite is None:
            # Captum's default: its ε rule with ε = 1e-9 on layers, pools and sums alike.
            composite = "epsilon"
            params.setdefault("epsilon", 1e-9)
            params.setdefault("stabilizer", 1e-9)
        self.composite = composite
        self.params = params

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
    ) -> Any:
        """Relevance of each input feature; with ``return_convergence_delta`` also ``score - Σ relevance``."""
        params = dict(self.params)
        entries = captum_rule_entries(self.model)
        if entries:
            params["rules"] = [*entries, *params.get("rules", [])]
        params["composite"] = self.composite
        attributions, result, forward = self._run(inputs, target, additional_forward_args, params)
        if verbose:  # Captum prints the rule of each layer
            print(Explainer(forward, **params).rule_table(forward.pack(_check_inputs(inputs)[0])))
        return self._finish(attributions, isinstance(inputs, tuple), result, return_convergence_delta)

    def compute_convergence_delta(self, attributions: Any, output: Tensor) -> Tensor:
        """Captum's LRP delta from given attributions: ``output - Σ attributions`` per sample."""
        summed = sum(a.reshape(a.shape[0], -1).sum(1) for a in _as_tuple(attributions))
        return output.flatten() - summed  # type: ignore[no-any-return]


class Saliency(_Adapter, GradientAttribution):
    """The gradient (its magnitude by default), called like ``captum.attr.Saliency``."""

    method = "gradient"

    def __init__(self, model: nn.Module, output: Any = None) -> None:
        _Adapter.__init__(self, model, output)
        GradientAttribution.__init__(self, model)

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        target: Any = None,
        abs: bool = True,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """``|∂s/∂x|`` (or the signed gradient with ``abs=False``)."""
        attributions, result, _ = self._run(inputs, target, additional_forward_args, {"absolute": bool(abs)})
        return self._finish(attributions, isinstance(inputs, tuple), result, return_convergence_delta)


class _Plain(_Adapter, GradientAttribution):
    """A method with Captum's plain ``attribute(inputs, target, additional_forward_args)``."""

    def __init__(self, model: nn.Module, output: Any = None) -> None:
        _Adapter.__init__(self, model, output)
        GradientAttribution.__init__(self, model)

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """The method's attribution for each input feature."""
        attributions, result, _ = self._run(inputs, target, additional_forward_args, {})
        return self._finish(attributions, isinstance(inputs, tuple), result, return_convergence_delta)


class InputXGradient(_Plain):
    """Input × gradient, called like ``captum.attr.InputXGradient``."""

    method = "gradient-x-input"

    @property
    def multiplies_by_inputs(self) -> bool:
        return True


class GuidedBackprop(_Plain):
    """Guided backpropagation, called like ``captum.attr.GuidedBackprop``."""

    method = "guided-backprop"


class Deconvolution(_Plain):
    """Deconvnet, called like ``captum.attr.Deconvolution``."""

    method = "deconvnet"


class IntegratedGradients(_Adapter, GradientAttribution):
    """Integrated Gradients, called like ``captum.attr.IntegratedGradients``.

    ``multiply_by_inputs=False`` returns the path-averaged gradient (Captum's "global" attribution).
    """

    method = "integrated-gradients"
    delta = "completeness"

    def __init__(self, model: nn.Module, multiply_by_inputs: bool = True, output: Any = None) -> None:
        _Adapter.__init__(self, model, output)
        GradientAttribution.__init__(self, model)
        self._multiply = bool(multiply_by_inputs)

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """``(x - x̄) ⊙`` the gradient averaged along the straight path from the baseline."""
        is_tuple = isinstance(inputs, tuple)
        params: dict[str, Any] = {"steps": n_steps, "quadrature": method}
        if internal_batch_size is not None:
            params["batch_size"] = internal_batch_size
        attributions, result, forward = self._run(
            inputs, target, additional_forward_args, params, baselines=baselines, baseline_param="baseline"
        )
        if not self._multiply:
            attributions = forward.unpack(result.info["input_gradient"])
        return self._finish_with(attributions, is_tuple, result, return_convergence_delta)

    def _finish_with(self, attributions: list[Tensor], is_tuple: bool, result: Explanation, delta: bool) -> Any:
        if not self._multiply and delta:
            total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)
            formatted = tuple(attributions) if is_tuple else attributions[0]
            return formatted, (total - result.ledger.score).detach()
        return self._finish(attributions, is_tuple, result, delta)


class DeepLift(_Adapter, GradientAttribution):
    """DeepLIFT (rescale rule), called like ``captum.attr.DeepLift``."""

    method = "deeplift"
    delta = "completeness"

    def __init__(
        self, model: nn.Module, multiply_by_inputs: bool = True, eps: float = 1e-10, output: Any = None
    ) -> None:
        _Adapter.__init__(self, model, output)
        GradientAttribution.__init__(self, model)
        self._multiply = bool(multiply_by_inputs)
        self.eps = eps

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable[..., Any] | None = None,
    ) -> Any:
        """Contributions ``(x - x̄) ⊙ m`` whose sum is ``s(x) - s(x̄)``."""
        if custom_attribution_func is not None:
            raise ConfigurationError("relprop's DeepLift has no custom_attribution_func; leave it None.")
        is_tuple = isinstance(inputs, tuple)
        params = {"rule": "rescale", "eps": self.eps}
        attributions, result, forward = self._run(
            inputs, target, additional_forward_args, params, baselines=baselines, baseline_param="reference"
        )
        if not self._multiply:
            attributions = forward.unpack(result.info["input_gradient"])
            if return_convergence_delta:
                raise ConfigurationError("the convergence delta needs multiply_by_inputs=True, as in Captum.")
        return self._finish(attributions, is_tuple, result, return_convergence_delta)


class Occlusion(_Adapter, PerturbationAttribution):
    """Occlusion, called like ``captum.attr.Occlusion`` (each input occluded on its own, the others kept)."""

    method = "occlusion"

    def __init__(self, model: nn.Module, output: Any = None) -> None:
        _Adapter.__init__(self, model, output)
        PerturbationAttribution.__init__(self, model)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: Any,
        sliding_window_shapes: Any,
        strides: Any = None,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
    ) -> Any:
        """Mean score drop over the windows covering each feature when they are replaced by the baseline."""
        tensors, is_tuple = _check_inputs(inputs)
        windows = _per_input(sliding_window_shapes, len(tensors), "sliding_window_shapes")
        steps = _per_input(1 if strides is None else strides, len(tensors), "strides")
        fills = _baselines(baselines, tensors)
        attributions = []
        for i, (x, window, stride, fill) in enumerate(zip(tensors, windows, steps, fills, strict=True)):
            params = {
                "patch": window,
                "stride": _full_stride(stride, window),
                "value": fill,
                "batch_size": perturbations_per_eval * x.shape[0],
            }
            relevance, _, _ = self._run(tensors, target, additional_forward_args, params, explained=[i])
            attributions.append(relevance[0])
        return tuple(attributions) if is_tuple else attributions[0]


def _per_input(value: Any, count: int, name: str) -> tuple[Any, ...]:
    if count == 1 and not (isinstance(value, tuple) and value and isinstance(value[0], tuple)):
        return (value,)
    if not isinstance(value, tuple) or len(value) != count:
        raise ConfigurationError(f"{name} must be a tuple with one entry per input ({count}), got {value!r}.")
    return value


def _full_stride(stride: Any, window: Any) -> Any:
    if isinstance(stride, int) and isinstance(window, tuple):
        return (stride,) * len(window)
    return stride
