r"""Reference-aware LRP: every composite explains :math:`f(x) - f(\bar x)` relative to a reference ``x̄``.

``relprop.explain(model, x, composite="epsilon-gamma-box", reference=...)`` runs the model once on
``[x; x̄]`` (the pairing of :mod:`relprop.methods.deeplift`) with the composite's layer rules
applied to differences of activations (:mod:`relprop.rules.difference`, maths and Deep-Taylor
reading there), DeepLIFT's rescale rule on element-wise nonlinearities and max pooling, and the
gradient through every other operation (exact on differences: their constants cancel). The
relevance of input feature ``i`` is :math:`R_i = \Delta x_i\, g_i` plus what input-layer rules such
as z^B hand it directly, and

.. math::

    \sum_i R_i = f(x) - f(\bar x) - \text{(relevance the layers' stabilisers absorb)},

which ``explanation.ledger`` books layer by layer (``ledger.closes()``).

The reference (``reference=``):

* a tensor shaped like the inputs, like one input, or broadcastable to the inputs, or a number (a
  constant input);
* ``"zeros"``: the all-zero input (with a bias-free ReLU network and LRP-0 this is Gradient×Input);
* ``"mean"``: the mean of a data sample passed as ``data=`` (e.g. training inputs), per feature;
* ``"blur"``: each input blurred by a Gaussian of ``blur_sigma`` pixels (default 1, as pixel flipping's
  ``blur`` replacement).

Products of two signals (attention) and operations relprop does not know pass the gradient,
as in DeepLIFT; conservation then holds only approximately and the ledger's residual says by
how much.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from . import composites as _composites
from . import match
from .composites import Composite
from .engine import guard
from .errors import ConfigurationError
from .explanation import Explanation
from .ledger import Ledger
from .methods import _common
from .methods.deeplift import PairedRun, RescaleMaxPoolRule, RescaleRule
from .rules import LinearRule, Rule, per_sample_sum
from .rules.difference import DifferenceRule, DifferenceState

__all__ = ["REFERENCES", "ReferenceRun", "explain_with_reference", "make_reference", "reference_composite"]

#: The named references (besides tensors).
REFERENCES = ("zeros", "mean", "blur")
#: Below this ``|Δz|`` the rescale rule uses the derivative instead of the ratio.
RESCALE_EPS = 1e-10


def make_reference(reference: Any, inputs: Tensor, data: Tensor | None = None, blur_sigma: float = 1.0) -> Tensor:
    """The reference input of every sample, shaped like ``inputs`` (see the module docstring)."""
    if isinstance(reference, str) and reference == "mean":
        if data is None:
            raise ConfigurationError(
                "reference='mean' needs a data sample to average; pass data=<tensor of inputs> (e.g. training "
                "inputs), or a reference tensor."
            )
        sample = torch.as_tensor(data).detach().to(device=inputs.device, dtype=inputs.dtype)
        if tuple(sample.shape[1:]) != tuple(inputs.shape[1:]):
            raise ConfigurationError(
                f"data for reference='mean' has shape {tuple(sample.shape)}, but inputs have shape "
                f"{tuple(inputs.shape)}; pass a batch of inputs shaped like the explained ones."
            )
        return sample.mean(0, keepdim=True).expand_as(inputs).clone()
    if isinstance(reference, str) and reference in ("zeros", "blur"):
        return _common.make_baseline("blurred" if reference == "blur" else "zeros", inputs, "reference", blur_sigma)
    if isinstance(reference, Tensor) or (isinstance(reference, (int, float)) and not isinstance(reference, bool)):
        return _common.make_baseline(reference, inputs, "reference", blur_sigma)
    raise ConfigurationError(
        f"reference must be a tensor, a number or one of {', '.join(REFERENCES)}, got {reference!r}; pass e.g. "
        "reference='zeros' or reference=data.mean(0)."
    )


def reference_composite(composite: Composite, state: DifferenceState) -> Composite:
    """``composite`` with its layer rules applied to differences and rescale on the nonlinearities."""
    elementwise = match.kind("relu", "activation")
    entries: list[tuple[Any, Rule]] = [
        (elementwise, RescaleRule(RESCALE_EPS)),
        (match.kind("maxpool"), RescaleMaxPoolRule(RESCALE_EPS)),
    ]
    for matcher, rule in [*composite.entries, *composite.defaults]:
        if isinstance(rule, LinearRule):
            entries.append((matcher, DifferenceRule(rule, state)))
    return _common.plain_gradient_composite(entries, f"{composite.name} (reference)")


def _as_composite(composite: Any, params: dict[str, Any]) -> Composite:
    if composite is None or isinstance(composite, str):
        return _composites.get(composite or "epsilon-gamma-box", **params)
    if isinstance(composite, Composite):
        if params:
            raise ConfigurationError(
                f"parameters {', '.join(sorted(params))} only apply to named composites; set them on the rules "
                "of your Composite instead."
            )
        return composite
    raise ConfigurationError(
        f"composite must be a name or a relprop.composites.Composite, got {type(composite).__name__}."
    )


def explain_with_reference(
    model: nn.Module,
    inputs: Any,
    target: Any = None,
    composite: Any = None,
    *,
    reference: Any = "zeros",
    data: Tensor | None = None,
    blur_sigma: float = 1.0,
    nonfinite: str = "raise",
    **params: Any,
) -> Explanation:
    r"""LRP relative to ``reference``: decompose :math:`f(x) - f(\bar x)` (see the module docstring).

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.explain`.
    composite
        A composite name (default ``"epsilon-gamma-box"``) or :class:`~relprop.composites.Composite`.
    reference
        A tensor, ``"zeros"``, ``"mean"`` (of ``data``) or ``"blur"``.
    data
        The data sample ``reference="mean"`` averages.
    blur_sigma
        Standard deviation in pixels of the ``"blur"`` reference (default 1, the ``blur`` replacement
        of pixel flipping, so that LRP explains relative to what that measurement removes features to).
    nonfinite
        As for :class:`relprop.Explainer`.
    **params
        Parameters of a named composite (``epsilon``, ``gamma``, ``low``, ``high`` ...).

    Returns
    -------
    Explanation
        ``score`` is :math:`f(x) - f(\bar x)`; the ledger has one row per layer; ``info`` holds
        ``reference``, ``reference_score`` and ``input_score``.
    """
    run = ReferenceRun(model, _as_composite(composite, params))
    return run(inputs, target, reference=reference, data=data, blur_sigma=blur_sigma, nonfinite=nonfinite)


class ReferenceRun:
    """Reference-aware LRP of one model with one composite, reusable across calls.

    The paired explainer (its recorded plan and cached modified weights) is built once;
    :class:`relprop.Explainer` keeps one for a ``reference=`` or a tuned setting with a reference.
    """

    def __init__(self, model: nn.Module, composite: Composite) -> None:
        self.model = model
        self.composite = composite
        self.state = DifferenceState()
        self.paired = PairedRun(model, reference_composite(composite, self.state))

    def __call__(
        self,
        inputs: Any,
        target: Any = None,
        *,
        reference: Any = "zeros",
        data: Tensor | None = None,
        blur_sigma: float = 1.0,
        nonfinite: str = "raise",
    ) -> Explanation:
        """Explain ``inputs`` relative to ``reference`` (arguments as :func:`explain_with_reference`)."""
        mode = guard.check_nonfinite_mode(nonfinite)
        facts = guard.check_model(self.model)
        x = guard.prepare_inputs(self.model, inputs, mode, facts)
        ref = make_reference(reference, x, data, blur_sigma)
        # Each call books its own ledger rows and direct relevance in the state the rules share.
        self.state.entries, self.state.direct = [], None
        result, reference_score = self.paired(x, ref, target)
        relevance = (x - ref) * result.info["input_gradient"][: x.shape[0]]
        if self.state.direct is not None:
            relevance = relevance + self.state.direct.to(relevance)
        input_score = result.ledger.score
        ledger = Ledger(
            score=(input_score - reference_score).detach(),
            input_relevance=per_sample_sum(relevance.detach()),
            entries=sorted(self.state.entries, key=lambda e: e.index),
        )
        info = {"method": "lrp", "composite": self.composite.name, "reference": ref, "reference_score": reference_score}
        info["input_score"] = input_score
        explanation = Explanation(
            relevance=relevance.detach(), output=result.output, target=result.target, ledger=ledger, info=info
        )
        return guard.finish(explanation, mode, self.model)
