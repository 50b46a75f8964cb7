"""``relprop.neon.explain``: relevance per feature for scikit-learn models, with a ledger that closes.

* k-means, one-class SVM, kernel density: rewritten as NEON networks and explained with the
  published rules (:mod:`relprop.neon.rules`).
* Linear models and MLPs: rewritten as torch modules and explained by relprop's engine
  (``relprop.explain``) with any composite or method; with ``reference=`` the difference
  ``f(x) − f(x̄)`` is explained (:mod:`relprop.neon.reference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import explain as _relprop_explain
from ..errors import ConfigurationError
from ..explanation import Explanation
from . import features
from .networks import NeonNetwork, TabularNetwork, _class_targets
from .neuralize import DTYPE, describe, neuralize
from .reference import explain_difference

__all__ = ["DEFAULT_COMPOSITE", "explain"]

#: The composite for converted linear models and MLPs when none is given.
DEFAULT_COMPOSITE = "epsilon"
#: LRP-ε stabiliser of the ``epsilon`` composite when ``epsilon`` is not given (the engine's default).
DEFAULT_EPSILON = 1e-6
#: Composites that :func:`relprop.neon.reference.explain_difference` implements (LRP-0 / LRP-ε).
REFERENCE_COMPOSITES = ("lrp-0", "epsilon")
#: Other methods that take a reference point, and the name of their parameter for it.
REFERENCE_PARAMETERS = {"deeplift": "reference", "integrated-gradients": "baseline"}


def explain(
    estimator: Any,
    X: Any,  # noqa: N803 (scikit-learn's name for a data matrix)
    target: Any = None,
    *,
    composite: str | None = None,
    method: str = "lrp",
    reference: Any = None,
    beta: float | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    feature_names: Sequence[str] | None = None,
    **params: Any,
) -> Explanation:
    """Explain a fitted scikit-learn model's outputs on the rows of ``X``, per feature.

    Parameters
    ----------
    estimator
        A supported estimator (:func:`relprop.neon.supported`), alone or after per-feature
        scalers in a ``Pipeline``; it is not modified.
    X
        Rows to explain: a 2-D array, tensor or pandas DataFrame (its column names are kept;
        the columns may come in any order if the estimator knows its feature names).
    target
        k-means: ``None`` (the assigned cluster), a cluster index or one per row. Classifiers:
        ``None`` (the predicted class) or a class *index* into ``estimator.classes_`` (one or one
        per row); a binary classifier explains its decision value for class 1 and its negative
        for class 0. Regressors with several outputs: the output index. Outlier models: ``None``.
    composite, method, **params
        Linear models and MLPs: any LRP composite (default ``"epsilon"``) or any method of
        :func:`relprop.explain` with its parameters.
    reference
        Linear models and MLPs: explain ``f(x) − f(x̄)`` instead of ``f(x)``; ``"mean"`` (the mean
        of the rows of ``X``; pass ``X_train.mean(0)`` for the training mean) or an array of one
        row or one per row. LRP (composites ``lrp-0``, ``epsilon``) propagates differences
        (:mod:`relprop.neon.reference`); ``deeplift`` and ``integrated-gradients`` receive it as
        their reference / baseline.
    beta
        NEON networks: stiffness of the soft-min redistribution on the pooling layer; default
        the model's own (k-means: winner-takes-all on the exact minimum; one-class SVM and KDE:
        the kernel's γ); ``inf`` for winner-takes-all.
    groups
        ``{name: [columns]}``: relevance also summed per group (e.g. the one-hot columns of a
        categorical feature, see :func:`relprop.neon.onehot_groups`) in ``info["group_relevance"]``.
    feature_names
        Names for the columns of an array ``X`` (default: the estimator's, else ``x0, x1, ...``).

    Returns
    -------
    Explanation
        ``relevance`` ``(N, D)`` float64 in ``X``'s column order, the network ``output``, the
        explained ``target`` and a ``ledger`` with ``score = Σ relevance + absorbed`` per row.
        ``info`` holds ``feature_names``, ``estimator`` (its steps, e.g. ``"StandardScaler → KMeans"``),
        ``score_name``, ``classes``, ``index`` (a DataFrame's row labels) and, with
        ``groups``, ``groups`` and ``group_relevance``.
    """
    table = features.as_table(X, estimator, feature_names)
    grouping = features.resolve_groups(groups, table.names) if groups is not None else None
    network = neuralize(estimator)
    x = torch.as_tensor(table.values, dtype=DTYPE)
    if isinstance(network, NeonNetwork):
        _refuse_engine_options(estimator, composite, method, reference, params)
        result = network.explain_inputs(x, target, beta)
    else:
        if beta is not None:
            raise ConfigurationError(
                f"beta applies to NEON networks (k-means, one-class SVM, kernel density), not to "
                f"{type(estimator).__name__}; drop it."
            )
        assert isinstance(network, TabularNetwork)  # every converter returns a NEON network or this
        result = _explain_tabular(network, x, target, composite, method, reference, params)
    return _finish(result, table, grouping, estimator, network)


def _refuse_engine_options(estimator: Any, composite: Any, method: str, reference: Any, params: dict[str, Any]) -> None:
    given = [name for name, value in (("composite", composite), ("reference", reference)) if value is not None]
    if method != "lrp":
        given.append("method")
    given.extend(sorted(params))
    if given:
        raise ConfigurationError(
            f"{type(estimator).__name__} is explained with NEON's own rules, which take beta only; drop "
            f"{', '.join(given)}."
        )


def _heads(network: TabularNetwork, x: Tensor, target: Any) -> tuple[Any, Tensor, Tensor]:
    """What to hand the engine as target, the initial gradient ``(N, outputs)`` and the class per row."""
    with torch.no_grad():
        output = network(x)
    if not network.binary:
        indices = _class_targets(target, output)
        head = torch.zeros_like(output).scatter_(1, indices.view(-1, 1), 1.0)
        return indices, head, indices
    # One output z, the evidence for class 1: class 1 explains z, class 0 explains -z.
    indices = (output[:, 0] > 0).long() if target is None else _class_targets(target, output.new_zeros(len(x), 2))
    sign = (2 * indices - 1).to(output).unsqueeze(1)
    return sign * output, sign, indices


def _explain_tabular(
    network: TabularNetwork,
    x: Tensor,
    target: Any,
    composite: str | None,
    method: str,
    reference: Any,
    params: dict[str, Any],
) -> Explanation:
    engine_target, head, indices = _heads(network, x, target)
    if reference is None:
        if method == "lrp" and composite is None:
            composite = DEFAULT_COMPOSITE
        result = _relprop_explain(network, x, engine_target, composite=composite, method=method, **params)
        return dataclasses.replace(result, target=indices)
    ref = _reference(reference, x)
    if method == "lrp":
        return _lrp_against_reference(network, x, ref, head, indices, composite, params)
    name = REFERENCE_PARAMETERS.get(method)
    if name is None:
        raise ConfigurationError(
            f"reference= works with method 'lrp' (composites {', '.join(REFERENCE_COMPOSITES)}) and "
            f"{', '.join(REFERENCE_PARAMETERS)}, not with {method!r}."
        )
    if name in params:
        raise ConfigurationError(f"give the reference once: reference= or {name}=, not both.")
    result = _relprop_explain(network, x, engine_target, composite=composite, method=method, **{name: ref}, **params)
    return dataclasses.replace(result, target=indices)


def _lrp_against_reference(
    network: TabularNetwork,
    x: Tensor,
    ref: Tensor,
    head: Tensor,
    indices: Tensor,
    composite: str | None,
    params: dict[str, Any],
) -> Explanation:
    """LRP-0 / LRP-ε on differences — the one place to delegate to the engine once it takes a reference."""
    composite = composite or DEFAULT_COMPOSITE
    if composite not in REFERENCE_COMPOSITES:
        raise ConfigurationError(
            f"with reference= the composites {', '.join(REFERENCE_COMPOSITES)} are available (the engine's "
            f"composites take no reference yet), not {composite!r}."
        )
    extra = sorted(set(params) - ({"epsilon"} if composite == "epsilon" else set()))
    if extra:
        raise ConfigurationError(f"composite {composite!r} with reference= does not take {', '.join(extra)}.")
    epsilon = float(params.get("epsilon", DEFAULT_EPSILON)) if composite == "epsilon" else 0.0
    if epsilon < 0:
        raise ConfigurationError(f"epsilon must be >= 0, got {epsilon}.")
    return explain_difference(network, x, ref, head, indices, epsilon)


def _reference(reference: Any, x: Tensor) -> Tensor:
    """The reference rows ``(N, D)`` for ``x``: ``"mean"`` of ``x`` or an array of one row or one per row."""
    if isinstance(reference, str):
        if reference != "mean":
            raise ConfigurationError(f"reference must be 'mean' or an array, got {reference!r}.")
        return x.mean(0, keepdim=True).expand_as(x)
    values = reference.detach() if isinstance(reference, Tensor) else torch.as_tensor(np.asarray(reference))
    values = values.to(x)
    if values.dim() == 1:
        values = values.unsqueeze(0)
    if values.dim() != 2 or values.shape[1] != x.shape[1] or values.shape[0] not in (1, x.shape[0]):
        raise ConfigurationError(
            f"reference must have {x.shape[1]} values (one row) or shape {tuple(x.shape)}, got {tuple(values.shape)}."
        )
    if not bool(torch.isfinite(values).all()):
        raise ConfigurationError("reference has missing or infinite values.")
    return values.expand_as(x)


def _finish(
    result: Explanation,
    table: features.Table,
    grouping: list[tuple[str, list[int]]] | None,
    estimator: Any,
    network: Any,
) -> Explanation:
    relevance = table.to_caller_order(result.relevance.detach())
    if not bool(torch.isfinite(relevance).all()):
        raise ConfigurationError(
            "the explanation has non-finite values (an overflow in the model's scores); scale the features first."
        )
    info = dict(result.info)
    if "input_gradient" in info:
        info["input_gradient"] = table.to_caller_order(info["input_gradient"])
    info.update(
        feature_names=list(table.names),
        estimator=describe(estimator),
        score_name=getattr(network, "score_name", "decision value"),
        classes=getattr(network, "classes", None),
        index=table.index,
    )
    if grouping is not None:
        info["groups"] = [name for name, _ in grouping]
        info["group_relevance"] = features.group_relevance(relevance, grouping)
    return dataclasses.replace(result, relevance=relevance, info=info)
