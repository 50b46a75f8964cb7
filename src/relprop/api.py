"""``relprop.explain``: one entry point for LRP and every other attribution method."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from . import methods
from .composites import Composite
from .engine import explainer as _lrp
from .errors import ConfigurationError
from .explanation import Explanation

__all__ = ["explain"]


def explain(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    composite: str | Composite | None = None,
    method: str = "lrp",
    **params: Any,
) -> Explanation:
    """Explain a model's prediction on ``inputs``.

    With ``method="lrp"`` (default) this is Layer-wise Relevance Propagation in one forward and
    one backward pass; other methods (``relprop.methods.names()``) take their own parameters.

    Parameters
    ----------
    model
        Any ``torch.nn.Module`` in eval mode (never modified).
    inputs
        A batch of inputs, batch first.
    target
        ``None`` for the predicted class, a class index, one index per sample, a tensor shaped
        like the output giving the initial relevance, or a region of a dense output
        (:func:`relprop.targets.region`, :func:`relprop.targets.class_region`).
    composite
        Name of a composite or a :class:`~relprop.composites.Composite` (default
        ``"epsilon-gamma-box"``); LRP only. Also a :class:`relprop.tuning.TunedComposite`, the
        path of a tuned ``.json`` file, or ``"auto"``: the file given as ``tuned=``, else a quick
        search on ``inputs`` (:func:`relprop.tuning.auto_composite`, with a warning).
    method
        ``"lrp"`` or the name of another attribution method.
    **params
        ``reference=`` (LRP): explain ``f(x) − f(x̄)`` relative to a reference input — a tensor,
        ``"zeros"``, ``"mean"`` (of ``data=``, a sample of inputs) or ``"blur"`` (see
        :mod:`relprop.reference`). Composite parameters (``epsilon``, ``gamma``, ``low``, ``high`` ...), the options of
        :class:`~relprop.Explainer` (``rules``, ``canonize``, ``ledger``, ``top``, ``contrast``,
        ``output``) and of its call (``layers``, ``layer_reduce``, ``conditions``: inner-layer relevance and
        conditional relevance, see :meth:`relprop.Explainer.__call__`), or the parameters of the
        chosen method (every method takes ``output`` too).

    Returns
    -------
    Explanation
        ``relevance`` shaped like ``inputs``, the model ``output``, the explained ``target``, the
        conservation ``ledger``, and ``layers`` (the relevance at the requested modules).
    """
    if method == "lrp":
        from .tuning.resolve import is_tuned

        if params.get("reference") is not None and not is_tuned(composite):
            from .reference import explain_with_reference  # reference-aware LRP: f(x) − f(x̄), see relprop.reference

            return explain_with_reference(model, inputs, target, composite, **params)
        if params.get("reference", 0) is None:
            params.pop("reference")
        # A tuned composite (object, .json file or "auto") runs its own reference, if it has one, in the Explainer.
        return _lrp.explain(model, inputs, target, composite, **params)
    fn = methods.get(method)
    if composite is not None:
        raise ConfigurationError(f"composite applies to method 'lrp' only, not to {method!r}; drop it.")
    return fn(model, inputs, target, **params)  # type: ignore[no-any-return]
