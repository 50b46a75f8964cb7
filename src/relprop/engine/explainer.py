"""The LRP explainer: one forward and one backward pass for any PyTorch model.

The first call for an input shape records a *plan* on one sample (:mod:`.tracing`, :mod:`.plan`):
the sequence of relevance-carrying operations, who consumes whose output, the rule each gets
from the composite, and the fusions the plan passes found. Later calls replay the plan: each
operation's handler returns its output with the rule's backward attached, so that the ordinary
``torch.autograd.grad`` of the explained score yields ``input ⊙ modified gradient``.

Nothing of the model is changed: no parameter, buffer, attribute or class is written; the hooks
and the mode are removed in ``finally``, also when the call raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import composites as _composites
from .. import params as _params
from ..errors import ConfigurationError, GraphChangedError, RelpropError, UnsupportedOperationError
from ..explanation import Explanation
from ..ledger import Ledger
from ..outputs import check_selector
from ..rules.base import Rule
from ..targets import initial_relevance
from . import guard
from .model import select_output
from .plan import Plan, finalize
from .taps import LayerRequest, TapSink
from .tracing import CallState, run_traced
from .weights import WeightCache

if TYPE_CHECKING:  # relprop.reference imports the engine
    from ..reference import ReferenceRun

__all__ = ["ENGINE_OPTIONS", "Explainer", "explain"]

#: Options of :class:`Explainer` that :func:`explain` passes on (the rest are composite parameters).
ENGINE_OPTIONS = ("rules", "canonize", "ledger", "top", "contrast", "output", "nonfinite", "compile")
#: Options of a call (:meth:`Explainer.__call__`) that :func:`explain` passes on.
CALL_OPTIONS = ("layers", "layer_reduce", "conditions")


class Explainer:
    """Explain a model's predictions with LRP: prepared once, then called on any number of batches.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` in eval mode; it is never modified.
    composite
        A composite name (see :func:`relprop.composites.names`), a
        :class:`~relprop.composites.Composite`, a :class:`relprop.tuning.TunedComposite` or the
        path of its ``.json`` file (refused for a model other than the one it was tuned on), or
        ``"auto"`` with ``tuned=`` such a file. A tuned setting with a reference explains
        relative to it (as ``reference=`` does).
    rules
        Your own ``(matcher, rule)`` entries, tried before the composite's (first match wins).
        A matcher is a module path glob (str), a module type, or a :mod:`relprop.match` matcher.
    canonize
        Fold batch norms into the convolution or dense layer they follow (default ``True``).
    ledger
        Keep the per-layer conservation ledger (default ``True``; ``False`` is slightly faster).
    compile
        Run LRP-ε's output factors and their ledger sums as fused kernels compiled with
        ``torch.compile`` (default ``False``; see :mod:`relprop.rules.kernels`). The first call
        compiles for a few seconds; later calls save most of the factors' element-wise passes.
        Without a working compiler relprop warns once and computes eagerly (the same values).
        Explanations relative to a ``reference`` run eagerly.
    top, contrast
        Defaults for :meth:`__call__`: the top layer (``"logit"`` or ``"log-odds"``) and the
        contrast class (an index or ``"rest"``).
    output
        Which tensor of the model's output to explain when it returns a dict, tuple or
        dataclass: a key, an index, an attribute or a callable (see :mod:`relprop.outputs`).
    nonfinite
        ``"raise"`` (default): inputs holding NaN or Inf are refused, and so is a result that
        would hold them (:class:`~relprop.errors.NonFiniteError`, naming the first bad position);
        ``"report"``: explain anyway and list, per sample, what is not finite in
        ``explanation.info["nonfinite"]`` (empty samples are finite).
    reference, data, blur_sigma
        Reference-aware LRP (:mod:`relprop.reference`): explain :math:`f(x) - f(\bar x)` relative to
        ``reference`` — a tensor, ``"zeros"``, ``"mean"`` (of ``data``) or ``"blur"`` (a Gaussian of
        ``blur_sigma`` pixels). Each call then runs the model on ``[x; x̄]``; the call options
        ``layers``, ``layer_reduce`` and ``conditions``, ``top="log-odds"``, ``contrast`` and
        ``output`` do not apply and are refused.
    **params
        Parameters of a named composite: ``epsilon``, ``gamma``, ``alpha``, ``beta``, ``low``,
        ``high``, ``stabilizer`` ...

    Examples
    --------
    >>> explainer = relprop.Explainer(model, composite="epsilon-gamma-box", low=-3.0, high=3.0)
    >>> result = explainer(images)            # predicted classes
    >>> result.relevance.shape == images.shape
    True

    The explainer follows the model: replaced or modified weights (``load_state_dict``, a new
    ``nn.Parameter``, ``weight.data = ...``, ``model.to(dtype)``, an optimizer step) are noticed on
    the next call. Writes that bypass PyTorch's version counter (``weight.data.copy_(...)``,
    through ``.numpy()``) are noticed when they change many values; after changing only a few
    values that way, call :meth:`refresh`.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: str | _composites.Composite = "epsilon-gamma-box",
        *,
        rules: Iterable[tuple[Any, Rule]] | None = None,
        canonize: bool = True,
        ledger: bool = True,
        top: str = "logit",
        contrast: Any = None,
        output: Any = None,
        nonfinite: str = "raise",
        reference: Any = None,
        data: Tensor | None = None,
        blur_sigma: float = 1.0,
        compile: bool = False,
        **params: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        _params.check("Explainer", {"canonize": canonize, "ledger": ledger, "nonfinite": nonfinite, "compile": compile})
        # relprop.tuning: a TunedComposite, a tuned .json file or "auto" with tuned= becomes a plain Composite.
        from ..tuning.resolve import as_composite

        given = {k: v for k, v in (("reference", reference), ("data", data)) if v is not None}
        composite, params = as_composite(composite, model, {**params, **given})
        reference, data = params.pop("reference", None), params.pop("data", None)
        if isinstance(composite, str):
            base = _composites.get(composite, **params)
        elif isinstance(composite, _composites.Composite):
            if params:
                raise ConfigurationError(
                    f"parameters {', '.join(sorted(params))} only apply to named composites; set them on the rules "
                    "of your Composite instead."
                )
            base = composite
        else:
            raise ConfigurationError(
                f"composite must be a name or a relprop.composites.Composite, got {type(composite).__name__}."
            )
        self.model = model
        self.composite = base.prepend(rules) if rules is not None else base
        self.canonize = bool(canonize)
        self.ledger = bool(ledger)
        self.compile = bool(compile)
        self.top = top
        self.contrast = contrast
        self.output = check_selector(output)
        self.nonfinite = nonfinite
        self.reference = reference
        self.data = data
        self.blur_sigma = float(blur_sigma)
        self._reference_run: ReferenceRun | None = None
        if reference is not None:
            self._check_reference_options(top, contrast, self.output)
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self.weights = WeightCache()
        self._signature: tuple[int, ...] | None = None

    def refresh(self) -> None:
        """Forget every plan and cached weight: the next call records and computes them again.

        The explainer notices replaced or modified weights by itself (see the class); call this
        after writes that bypass PyTorch's version counter and change only a few values.
        """
        self._plans.clear()
        self.weights = WeightCache()

    def _follow(self, facts: guard.ModelFacts) -> None:
        # Another module, parameter or buffer object (a replaced layer, new nn.Parameter, buffers
        # loaded with assign=True): plans may hold the old tensors (folded batch norms). Start over.
        if facts.signature != self._signature:
            if self._signature is not None:
                self.refresh()
            self._signature = facts.signature

    # -- plans ----------------------------------------------------------------------------------
    def plan(self, inputs: Tensor) -> Plan:
        """Return (recording it if needed) the plan for inputs shaped like ``inputs``.

        Only the shapes matter: a model on the meta device (without values) can be planned.
        """
        facts = guard.model_facts(self.model)
        self._follow(facts)
        return self._plan_for(guard.prepare_inputs(self.model, inputs, "report", facts), LayerRequest())

    def _plan_for(self, x: Tensor, taps: LayerRequest) -> Plan:
        key = self._key(x, taps)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._record_plan(x[:1], taps, tuple(x.shape))
        return plan

    @staticmethod
    def _key(x: Tensor, taps: LayerRequest) -> tuple[Any, ...]:
        # Tapped module outputs must stay visible, which changes the fusions: a plan per tap set.
        key: tuple[Any, ...] = (tuple(x.shape[1:]), x.dtype, x.device)
        return (*key, taps.paths) if taps.paths else key

    def _record_plan(self, x: Tensor, taps: LayerRequest, shape: tuple[int, ...] | None = None) -> Plan:
        state = CallState("plan", self.model, self.composite, self.weights, taps=taps)
        try:
            output = self._run(state, x.detach().requires_grad_(True))
        except RelpropError:
            raise
        except guard.MODEL_ERRORS as exc:
            # A new input shape is first met here: a torch error from the model is most likely about it.
            worked = [key[0] for key in self._plans]
            raise guard.model_failure(self.model, shape or tuple(x.shape), exc, worked) from exc
        track = state.lookup(output)
        assert track is not None
        tapped = frozenset(state.tapped.values())
        return finalize(state.records, track.producer, self.composite, self.canonize, tapped)

    def rule_table(self, inputs: Tensor) -> str:
        """Which rule each operation gets for inputs shaped like ``inputs`` (a readable table)."""
        return self.plan(inputs).rule_table()

    # -- running the model ----------------------------------------------------------------------
    def _forward(self, x: Tensor) -> Tensor:
        return select_output(self.model(x), self.output)

    def _run(self, state: CallState, x: Tensor) -> Tensor:
        # Select inside the traced call: a callable selector's operations are part of the explained function.
        output = run_traced(state, x, self._forward)
        if state.lookup(output) is None:
            raise UnsupportedOperationError(
                "the model output does not depend on the input through operations relprop could follow (the input "
                "may be detached, converted to NumPy, or used by a C++ extension); relprop cannot explain it."
            )
        return output

    def __call__(
        self,
        inputs: Tensor,
        target: Any = None,
        *,
        top: str | None = None,
        contrast: Any = None,
        layers: Iterable[str] | None = None,
        layer_reduce: str | None = None,
        conditions: Mapping[str, Tensor] | None = None,
        nonfinite: str | None = None,
    ) -> Explanation:
        """Explain ``inputs`` (batch first) for ``target``; see :func:`relprop.explain`.

        Parameters
        ----------
        inputs, target, top, contrast
            As for :func:`relprop.explain`.
        layers
            Module paths whose output relevance to return in ``Explanation.layers``: the relevance
            arriving at each module's output (what the layers above hand down to it), shaped like
            that output. A layer with a batch norm folded into it (``canonize=True``) reports the
            relevance at the folded layer's output, the batch norm's output, as in a canonized model.
        layer_reduce
            ``None``, or ``"channels"`` to sum each layer's relevance over all dimensions after
            dimension 1 (shape ``(N, C)``).
        conditions
            ``{module path: mask}``: the relevance arriving at that module's output is multiplied by
            ``mask`` (broadcastable to the output, e.g. ``(N, C, 1, 1)`` selecting channels) before
            it is propagated further down (Concept Relevance Propagation). ``layers`` report the
            relevance before the mask.
        nonfinite
            Overrides the explainer's ``nonfinite`` for this call.
        """
        mode = self.nonfinite if nonfinite is None else guard.check_nonfinite_mode(nonfinite)
        if self.reference is not None:
            return self._explain_with_reference(inputs, target, top, contrast, layers, layer_reduce, conditions, mode)
        facts = guard.check_model(self.model)  # before any forward pass: a refused call changes nothing
        self._follow(facts)
        x = guard.prepare_inputs(self.model, inputs, mode, facts)
        taps = LayerRequest.build(self.model, layers, layer_reduce, conditions)
        plan = self._plan_for(x, taps)
        top = top or self.top
        contrast = contrast if contrast is not None else self.contrast
        try:
            result = self._explain(x, plan, taps, target, top, contrast)
        except GraphChangedError:
            if x.shape[0] == 1:
                raise
            # The plan was recorded on one sample; the model may branch on the batch. Re-plan on it.
            self._plans[self._key(x, taps)] = plan = self._record_plan(x, taps)
            result = self._explain(x, plan, taps, target, top, contrast)
        return guard.finish(result, mode, self.model)

    # -- reference-aware LRP -------------------------------------------------------------------
    def _check_reference_options(self, top: Any, contrast: Any, output: Any, call: Iterable[str] = ()) -> None:
        refused = [*call]
        if top not in (None, "logit"):
            refused.append(f"top={top!r}")
        if contrast is not None:
            refused.append("contrast")
        if output is not None:
            refused.append("output")
        if refused:
            raise ConfigurationError(
                f"{', '.join(refused)} cannot be used with reference-aware LRP ({self.composite.name} relative to the "
                "reference, explaining f(x) - f(x̄)); drop them, or explain without a reference."
            )

    def _explain_with_reference(
        self,
        inputs: Tensor,
        target: Any,
        top: str | None,
        contrast: Any,
        layers: Iterable[str] | None,
        layer_reduce: str | None,
        conditions: Mapping[str, Tensor] | None,
        mode: str,
    ) -> Explanation:
        from ..reference import ReferenceRun

        call = [name for name, value in (("layers", layers), ("layer_reduce", layer_reduce)) if value]
        call += ["conditions"] if conditions else []
        self._check_reference_options(top, contrast, None, call)
        if self._reference_run is None:  # built once: the paired plan and weights are reused across calls
            self._reference_run = ReferenceRun(self.model, self.composite)
        return self._reference_run(
            inputs, target, reference=self.reference, data=self.data, blur_sigma=self.blur_sigma, nonfinite=mode
        )

    def _explain(self, x: Tensor, plan: Plan, taps: LayerRequest, target: Any, top: str, contrast: Any) -> Explanation:
        state = CallState(
            "explain", self.model, self.composite, self.weights, plan, self.ledger, taps, compiled=self.compile
        )
        state.sink = TapSink(taps)
        leaf = x.detach().requires_grad_(True)
        output = self._run(state, leaf)
        if state.index != len(plan.ops):
            raise GraphChangedError(
                f"the model ran {state.index} of the {len(plan.ops)} recorded operations; its operations depend on the "
                "input values, so explain such inputs one at a time."
            )
        # The alias tables serve the forward pass only; drop them so the backward can free activations.
        state.versions.clear()
        state.views.clear()
        head = initial_relevance(output, target, top=top, contrast=contrast)
        (grad,) = torch.autograd.grad(output, leaf, head.grad.to(output.dtype), allow_unused=True)
        relevance = torch.zeros_like(leaf) if grad is None else leaf.detach() * grad
        if state.direct.total is not None:
            relevance = relevance + state.direct.total
        ledger = Ledger(
            score=head.score,
            input_relevance=relevance.reshape(relevance.shape[0], -1).sum(1),
            entries=[e for e in state.entries if e.relevance_out is not None],
            top_absorbed=head.absorbed if bool((head.absorbed != 0).any()) else None,
        )
        return Explanation(
            relevance=relevance.detach(),
            output=output.detach(),
            target=head.target,
            ledger=ledger,
            # The modified gradient at the input (relevance = input ⊙ it, plus any relevance that
            # input-layer rules such as z^B hand over directly).
            info={"input_gradient": torch.zeros_like(leaf) if grad is None else grad.detach()},
            layers=state.sink.layers(),
        )


def explain(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    composite: str | _composites.Composite | None = None,
    **params: Any,
) -> Explanation:
    """Explain a model's prediction on ``inputs`` with LRP (see :func:`relprop.explain` for all methods).

    ``params`` holds composite parameters (``epsilon``, ``gamma``, ``low``, ``high`` ...), the
    options of :class:`Explainer` (``rules``, ``canonize``, ``ledger``, ``top``, ``contrast``,
    ``output``) and of its call (``layers``, ``layer_reduce``, ``conditions``).
    """
    options = {k: params.pop(k) for k in ENGINE_OPTIONS if k in params}
    call = {k: params.pop(k) for k in CALL_OPTIONS if k in params}
    if isinstance(composite, str) and composite == "auto":  # relprop.tuning: a quick search on these inputs
        from ..tuning.resolve import auto_composite

        composite = auto_composite(model, inputs, target, params.pop("tuned", None))
    explainer = Explainer(model, composite if composite is not None else "epsilon-gamma-box", **options, **params)
    return explainer(inputs, target, **call)
