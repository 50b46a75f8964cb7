"""Rewrite fitted scikit-learn estimators as torch networks, exactly (float64).

Two small registries: estimator type → converter (:data:`CONVERTERS`) and preprocessing type
→ its per-feature affine map (:data:`TRANSFORMS`). A new estimator is one entry::

    @converter("MyLinearModel")
    def _my_linear(estimator, affine):
        return _linear_network(estimator.coef_, estimator.intercept_, affine, None, None)

A :class:`~sklearn.pipeline.Pipeline` whose steps before the model are per-feature affine
scalers (``z = a ⊙ x + c``) is folded into the network's first layer, so that the network
takes the original features and relevance is per original feature. scikit-learn is imported
only when an estimator is converted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigurationError, UnsupportedEstimatorError
from .networks import (
    NeuralizedKernelDensity,
    NeuralizedKMeans,
    NeuralizedOneClassSVM,
    TabularNetwork,
)
from .rules import check_beta

__all__ = ["CONVERTERS", "TRANSFORMS", "Affine", "converter", "describe", "neuralize", "supported", "transform"]

DTYPE = torch.float64


@dataclass(frozen=True)
class Affine:
    """A per-feature affine map ``z = scale ⊙ x + shift`` (what a scaler does), float64 arrays."""

    scale: np.ndarray
    shift: np.ndarray

    @staticmethod
    def identity(n_features: int) -> Affine:
        """The map that changes nothing."""
        return Affine(np.ones(n_features), np.zeros(n_features))

    def then(self, other: Affine) -> Affine:
        """This map followed by ``other``."""
        return Affine(other.scale * self.scale, other.scale * self.shift + other.shift)

    def to_input_space(self, points: np.ndarray) -> np.ndarray:
        """Points of the model space as input-space points (0 on features the map drops)."""
        safe = np.where(self.scale == 0, 1.0, self.scale)
        return np.where(self.scale == 0, 0.0, (points - self.shift) / safe)

    @property
    def metric(self) -> np.ndarray:
        """The diagonal metric of the model-space distance in the input space: ``scale²``."""
        return self.scale**2


Converter = Callable[[Any, "Affine | None"], nn.Module]
Transform = Callable[[Any], Affine]

#: Estimator class name → converter ``(estimator, affine or None) -> nn.Module``.
CONVERTERS: dict[str, Converter] = {}
#: Preprocessing class name → its per-feature affine map.
TRANSFORMS: dict[str, Transform] = {}


def converter(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for the scikit-learn estimator classes ``names``."""

    def decorator(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return decorator


def transform(*names: str) -> Callable[[Transform], Transform]:
    """Register the affine map of the scikit-learn preprocessing classes ``names``."""

    def decorator(fn: Transform) -> Transform:
        for name in names:
            TRANSFORMS[name] = fn
        return fn

    return decorator


def supported() -> list[str]:
    """Names of the estimator classes :func:`neuralize` converts."""
    return sorted(CONVERTERS)


def _registered(obj: Any, registry: dict[str, Any]) -> Any:
    """The entry of the first scikit-learn class in ``obj``'s MRO that ``registry`` knows."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("sklearn.") and cls.__name__ in registry:
            return registry[cls.__name__]
    return None


def _fitted(estimator: Any, *attributes: str) -> None:
    missing = [a for a in attributes if getattr(estimator, a, None) is None]
    if missing:
        raise ConfigurationError(
            f"{type(estimator).__name__} is not fitted (it has no {missing[0]}); call fit before explaining it."
        )


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    return np.asarray(value, dtype=np.float64)


def _tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(_array(value), dtype=DTYPE)


# -- preprocessing ----------------------------------------------------------------------------------
@transform("StandardScaler")
def _standard_scaler(scaler: Any) -> Affine:
    _fitted(scaler, "n_features_in_")
    n = scaler.n_features_in_
    mean = _array(scaler.mean_) if scaler.with_mean else np.zeros(n)
    scale = _array(scaler.scale_) if scaler.with_std else np.ones(n)
    return Affine(1.0 / scale, -mean / scale)


@transform("MinMaxScaler")
def _min_max_scaler(scaler: Any) -> Affine:
    _fitted(scaler, "scale_")
    if scaler.clip:
        raise UnsupportedEstimatorError(
            "MinMaxScaler(clip=True) clips values and is not affine; refit it with clip=False to explain through it."
        )
    return Affine(_array(scaler.scale_), _array(scaler.min_))


@transform("MaxAbsScaler")
def _max_abs_scaler(scaler: Any) -> Affine:
    _fitted(scaler, "scale_")
    scale = _array(scaler.scale_)
    return Affine(1.0 / scale, np.zeros_like(scale))


@transform("RobustScaler")
def _robust_scaler(scaler: Any) -> Affine:
    _fitted(scaler, "n_features_in_")
    n = scaler.n_features_in_
    center = np.zeros(n) if scaler.center_ is None else _array(scaler.center_)
    scale = np.ones(n) if scaler.scale_ is None else _array(scaler.scale_)
    return Affine(1.0 / scale, -center / scale)


def _unwrap(estimator: Any) -> tuple[Any, Affine | None]:
    """The final model of a pipeline and the composed affine map of the steps before it."""
    if type(estimator).__name__ != "Pipeline" or not hasattr(estimator, "steps"):
        return estimator, None
    affine: Affine | None = None
    for name, step in estimator.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if type(step).__name__ == "Pipeline":
            inner, inner_affine = _unwrap(step)
            parts = [inner_affine, _step_affine(name, inner)]
        else:
            parts = [_step_affine(name, step)]
        for part in parts:
            if part is not None:
                affine = part if affine is None else affine.then(part)
    final, inner = _unwrap(estimator.steps[-1][1])
    if inner is not None:
        affine = inner if affine is None else affine.then(inner)
    return final, affine


def _step_affine(name: str, step: Any) -> Affine:
    fn = _registered(step, TRANSFORMS)
    if fn is None:
        raise UnsupportedEstimatorError(
            f"pipeline step {name!r} ({type(step).__name__}) cannot be folded into the network; NEON folds "
            f"per-feature scalers only ({', '.join(sorted(TRANSFORMS))}) — apply other steps to X before explaining."
        )
    return fn(step)  # type: ignore[no-any-return]


# -- k-means ------------------------------------------------------------------------------------------
@converter("KMeans", "MiniBatchKMeans")
def _kmeans(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "cluster_centers_")
    centers = _array(model.cluster_centers_)
    if centers.shape[0] < 2:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} has {centers.shape[0]} cluster; cluster evidence needs at least 2 clusters."
        )
    affine = affine or Affine.identity(centers.shape[1])
    return NeuralizedKMeans(_tensor(affine.to_input_space(centers)), _tensor(affine.metric))


# -- outlier and density models ------------------------------------------------------------------------
@converter("OneClassSVM")
def _one_class_svm(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "support_vectors_")
    if model.kernel != "rbf":
        raise UnsupportedEstimatorError(
            f"OneClassSVM(kernel={model.kernel!r}) is not supported; NEON explains the RBF kernel (kernel='rbf')."
        )
    gamma = float(model._gamma)
    alpha = _array(model.dual_coef_).reshape(-1)
    rho = float(model.offset_[0] if np.ndim(model.offset_) else model.offset_)
    if rho <= 0 or not bool((alpha > 0).all()):
        raise UnsupportedEstimatorError(
            f"this OneClassSVM has offset {rho:g} and {int((alpha <= 0).sum())} non-positive dual coefficients; "
            "NEON needs offset > 0 and positive coefficients (refit with 0 < nu < 1)."
        )
    vectors = _array(model.support_vectors_)
    affine = affine or Affine.identity(vectors.shape[1])
    shift = -np.log(alpha / rho) / gamma
    return NeuralizedOneClassSVM(
        _tensor(affine.to_input_space(vectors)), _tensor(affine.metric), _tensor(shift), gamma, rho
    )


@converter("KernelDensity")
def _kernel_density(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "tree_")
    if model.kernel != "gaussian" or model.metric not in ("euclidean", "l2"):
        raise UnsupportedEstimatorError(
            f"KernelDensity(kernel={model.kernel!r}, metric={model.metric!r}) is not supported; NEON explains "
            "kernel='gaussian' with metric='euclidean'."
        )
    points = _array(model.tree_.data)
    weights = model.tree_.sample_weight
    weights = np.ones(points.shape[0]) if weights is None else _array(weights)
    keep = weights > 0
    points, weights = points[keep], weights[keep]
    bandwidth = float(model.bandwidth_)
    gamma = 1.0 / (2.0 * bandwidth**2)
    shift = -np.log(weights / weights.sum()) / gamma
    log_norm = -0.5 * points.shape[1] * math.log(2.0 * math.pi * bandwidth**2)
    affine = affine or Affine.identity(points.shape[1])
    return NeuralizedKernelDensity(
        _tensor(affine.to_input_space(points)), _tensor(affine.metric), _tensor(shift), gamma, log_norm
    )


# -- linear models and MLPs -----------------------------------------------------------------------------
def _linear(weight: np.ndarray, bias: np.ndarray, affine: Affine | None) -> nn.Linear:
    """``nn.Linear`` computing ``weight @ (a ⊙ x + c) + bias`` (the affine map folded in)."""
    if affine is not None:
        bias = bias + weight @ affine.shift
        weight = weight * affine.scale
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=DTYPE))
        layer.bias.copy_(torch.as_tensor(bias, dtype=DTYPE))
    return layer.requires_grad_(False)


def _linear_network(
    coef: Any, intercept: Any, affine: Affine | None, probability: str | None, classes: Any
) -> nn.Module:
    weight = np.atleast_2d(_array(coef))
    bias = np.broadcast_to(_array(intercept).reshape(-1), (weight.shape[0],)).copy()
    if probability == "softmax" and weight.shape[0] == 1:
        probability = "sigmoid"
    return TabularNetwork([_linear(weight, bias, affine)], probability, None if classes is None else list(classes))


@converter("LogisticRegression", "LogisticRegressionCV")
def _logistic(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "coef_")
    return _linear_network(model.coef_, model.intercept_, affine, "softmax", model.classes_)


@converter("LinearSVC", "RidgeClassifier", "RidgeClassifierCV", "SGDClassifier", "Perceptron")
def _linear_classifier(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "coef_")
    return _linear_network(model.coef_, model.intercept_, affine, None, model.classes_)


@converter(
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "LinearSVR",
    "SGDRegressor",
)
def _linear_regressor(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "coef_")
    return _linear_network(model.coef_, model.intercept_, affine, None, None)


#: scikit-learn's MLP activations as torch modules.
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": None,
}

#: scikit-learn's MLP output activations and how the network's outputs become probabilities.
OUTPUTS: dict[str, str | None] = {"identity": None, "softmax": "softmax", "logistic": "sigmoid"}


@converter("MLPClassifier", "MLPRegressor")
def _mlp(model: Any, affine: Affine | None) -> nn.Module:
    _fitted(model, "coefs_")
    if model.activation not in ACTIVATIONS:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__}(activation={model.activation!r}) is not supported; choose one of "
            f"{', '.join(ACTIVATIONS)}."
        )
    if model.out_activation_ not in OUTPUTS:
        raise UnsupportedEstimatorError(
            f"{type(model).__name__} with output activation {model.out_activation_!r} is not supported; NEON "
            f"rewrites outputs {', '.join(OUTPUTS)} (loss='squared_error' for regressors)."
        )
    make_activation = ACTIVATIONS[model.activation]
    layers: list[nn.Module] = []
    last = len(model.coefs_) - 1
    for index, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        layers.append(_linear(_array(coef).T, _array(intercept), affine if index == 0 else None))
        if index < last and make_activation is not None:
            layers.append(make_activation())
    probability = OUTPUTS[model.out_activation_]
    if probability == "sigmoid" and model.n_outputs_ > 1:
        probability = "sigmoid-each"  # multi-label
    classes = getattr(model, "classes_", None)
    return TabularNetwork(layers, probability, None if classes is None else list(classes))


def describe(estimator: Any) -> str:
    """The estimator's class name, or its pipeline steps joined by arrows (``"StandardScaler → KMeans"``)."""
    if type(estimator).__name__ == "Pipeline" and hasattr(estimator, "steps"):
        steps = [describe(step) for _, step in estimator.steps if step is not None and step != "passthrough"]
        return " → ".join(steps)
    return type(estimator).__name__


def neuralize(estimator: Any, *, beta: float | None = None) -> nn.Module:
    """Rewrite a fitted scikit-learn estimator (or pipeline of scalers and one) as a float64 torch network.

    Parameters
    ----------
    estimator
        A fitted estimator of a supported type (:func:`supported`), alone or as the last step
        of a :class:`~sklearn.pipeline.Pipeline` whose other steps are per-feature scalers
        (folded into the first layer).
    beta
        k-means only: soft-min stiffness of the network's pooling (default: the exact minimum).

    Returns
    -------
    torch.nn.Module
        :class:`~relprop.neon.networks.NeuralizedKMeans`,
        :class:`~relprop.neon.networks.NeuralizedOneClassSVM`,
        :class:`~relprop.neon.networks.NeuralizedKernelDensity` or
        :class:`~relprop.neon.networks.TabularNetwork`, in eval mode, float64, without
        trainable parameters; the estimator is not modified.

    Raises
    ------
    UnsupportedEstimatorError
        For an estimator type or pipeline step NEON cannot rewrite (the message lists what it can).
    """
    final, affine = _unwrap(estimator)
    convert = _registered(final, CONVERTERS)
    if convert is None:
        raise UnsupportedEstimatorError(
            f"relprop.neon cannot rewrite {type(final).__name__}; supported estimators are {', '.join(supported())}, "
            "alone or after per-feature scalers in a Pipeline."
        )
    network: nn.Module = convert(final, affine)
    if beta is not None:
        if not isinstance(network, NeuralizedKMeans):
            raise ConfigurationError(
                f"beta sets the pooling stiffness of k-means networks, not of {type(final).__name__}; drop it here "
                "(relprop.neon.explain takes beta for the redistribution of any NEON network)."
            )
        network.beta = check_beta(beta)
    return network.eval()
