"""The rewritten networks reproduce the scikit-learn estimators exactly (float64, 1e-10)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.datasets import load_diabetes
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.neighbors import KernelDensity
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.svm import LinearSVC, LinearSVR, OneClassSVM

from relprop import neon
from relprop.errors import ConfigurationError, UnsupportedEstimatorError

from .fitting import assert_exact, fit_quietly


def _x(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def _cluster_evidence(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """f_c(z) = min_{k≠c} ½(‖z − μ_k‖² − ‖z − μ_c‖²), written out in float64."""
    d = ((z[:, None, :] - centers[None]) ** 2).sum(-1)
    k = centers.shape[0]
    f = np.empty((z.shape[0], k))
    for c in range(k):
        f[:, c] = np.min([0.5 * (d[:, j] - d[:, c]) for j in range(k) if j != c], axis=0)
    return f


# -- k-means -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaler", [None, StandardScaler(), MinMaxScaler(), RobustScaler(), MaxAbsScaler()])
@pytest.mark.parametrize("cls", [KMeans, MiniBatchKMeans])
def test_kmeans_network_is_the_cluster_evidence_and_its_argmax_the_assignment(
    wine: tuple[np.ndarray, np.ndarray], cls: type, scaler: Any
) -> None:
    x = wine[0]
    model = cls(4, n_init=3, random_state=0)
    estimator = model if scaler is None else make_pipeline(scaler, model)
    estimator.fit(x)
    z = x if scaler is None else estimator[0].transform(x)
    network = neon.neuralize(estimator)
    out = network(_x(x))
    assert_exact(out, _cluster_evidence(z, model.cluster_centers_))
    assert np.array_equal(out.argmax(1).numpy(), estimator.predict(x))
    # f_c > 0 exactly for the assigned cluster.
    assert bool((out.gather(1, out.argmax(1, keepdim=True)) > 0).all())
    assert int((out > 0).sum()) == len(x)


def test_kmeans_soft_min_pooling_is_the_published_option(wine_kmeans: Any, wine: tuple[np.ndarray, np.ndarray]) -> None:
    x = wine[0]
    z = wine_kmeans[0].transform(x)
    centers = wine_kmeans[-1].cluster_centers_
    beta = 0.7
    d = ((z[:, None, :] - centers[None]) ** 2).sum(-1)
    expected = np.empty((len(x), 3))
    for c in range(3):
        h = np.stack([0.5 * (d[:, j] - d[:, c]) for j in range(3) if j != c], axis=1)
        expected[:, c] = -np.log(np.exp(-beta * h).sum(1)) / beta
    assert_exact(neon.neuralize(wine_kmeans, beta=beta)(_x(x)), expected)
    # The exact min is the beta → inf limit.
    assert_exact(neon.neuralize(wine_kmeans, beta=float("inf"))(_x(x)), neon.neuralize(wine_kmeans)(_x(x)))


# -- one-class SVM and kernel density ---------------------------------------------------------------------
@pytest.mark.parametrize("scaled", [False, True])
def test_one_class_svm_network_gives_decision_function_and_predict(
    cancer: tuple[np.ndarray, np.ndarray], scaled: bool
) -> None:
    x = cancer[0]
    svm = OneClassSVM(nu=0.05, gamma="scale")
    estimator = make_pipeline(StandardScaler(), svm).fit(x) if scaled else svm.fit(x / x.std(0))
    data = x if scaled else x / x.std(0)
    network = neon.neuralize(estimator)
    assert_exact(network.decision_function(_x(data)), estimator.decision_function(data))
    assert_exact(network.score_samples(_x(data)), estimator.score_samples(data))
    outlier = network(_x(data))[:, 0] > 0
    assert np.array_equal(outlier.numpy(), estimator.predict(data) == -1)
    # The network output, written out: -1/γ log(Σ α_j exp(-γ‖z - u_j‖²) / ρ).
    z = estimator[0].transform(data) if scaled else data
    k = np.exp(-svm._gamma * ((z[:, None, :] - svm.support_vectors_[None]) ** 2).sum(-1))
    o = -np.log((k @ svm.dual_coef_[0]) / svm.offset_[0]) / svm._gamma
    assert_exact(network(_x(data))[:, 0], o)


def _log_density(z: np.ndarray, points: np.ndarray, weights: np.ndarray, bandwidth: float) -> np.ndarray:
    """log Σ_j π_j N(z; x_j, h²I), written out in float64 (log-sum-exp)."""
    from scipy.special import logsumexp

    d = ((z[:, None, :] - points[None]) ** 2).sum(-1)
    log_pi = np.log(weights / weights.sum())
    return logsumexp(log_pi - d / (2 * bandwidth**2), axis=1) - 0.5 * z.shape[1] * np.log(2 * np.pi * bandwidth**2)


@pytest.mark.parametrize(
    ("bandwidth", "weighted", "scaled", "sklearn_exact"),
    [(3.0, False, True, True), (0.9, False, True, False), ("scott", True, True, False), (150.0, True, False, True)],
)
def test_kernel_density_network_gives_score_samples(
    cancer: tuple[np.ndarray, np.ndarray], bandwidth: Any, weighted: bool, scaled: bool, sklearn_exact: bool
) -> None:
    x = cancer[0][:300]
    weights = np.linspace(0.5, 2.0, len(x)) if weighted else np.ones(len(x))
    kde = KernelDensity(bandwidth=bandwidth)
    estimator = make_pipeline(StandardScaler(), kde) if scaled else kde
    estimator.fit(x, **({"kerneldensity__sample_weight": weights} if scaled else {"sample_weight": weights}))
    network = neon.neuralize(estimator)
    rows = cancer[0][250:]
    transform = estimator[0].transform if scaled else (lambda v: v)
    exact = _log_density(transform(rows), transform(x), weights, kde.bandwidth_)
    assert_exact(network.score_samples(_x(rows)), exact)
    if sklearn_exact:
        assert_exact(network.score_samples(_x(rows)), estimator.score_samples(rows))
    else:
        # scikit-learn's tree sum is itself approximate at small bandwidths even with atol = rtol = 0 (2e-7 at
        # h = 0.9, 2e-3 with Scott's h and sample weights, against the written-out sum); the network is exact.
        assert np.abs(network.score_samples(_x(rows)).numpy() - estimator.score_samples(rows)).max() < 1e-2
    assert bool((network(_x(rows)) >= 0).all())


# -- linear models and MLPs ---------------------------------------------------------------------------
def _classifiers() -> list[Any]:
    return [
        LogisticRegression(max_iter=50),
        LogisticRegressionCV(Cs=3, max_iter=50),
        LinearSVC(max_iter=200),
        RidgeClassifier(),
        SGDClassifier(random_state=0, max_iter=20),
    ]


@pytest.mark.parametrize("model", _classifiers(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("data", ["cancer", "wine"])
def test_linear_classifiers_reproduce_decision_function_and_probabilities(
    model: Any, data: str, request: pytest.FixtureRequest
) -> None:
    x, y = request.getfixturevalue(data)
    estimator = fit_quietly(make_pipeline(StandardScaler(), model), x, y)
    network = neon.neuralize(estimator)
    out = network(_x(x))
    decision = estimator.decision_function(x)
    assert_exact(out, decision.reshape(len(x), -1))
    if hasattr(estimator, "predict_proba"):
        assert_exact(network.predict_proba(_x(x)), estimator.predict_proba(x))
    predicted = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
    assert np.array_equal(np.asarray(network.classes)[predicted.numpy()], estimator.predict(x))


@pytest.mark.parametrize(
    "model", [LinearRegression(), Ridge(1.0), Lasso(0.1), ElasticNet(0.1), LinearSVR(max_iter=500)]
)
@pytest.mark.parametrize("outputs", [1, 2])
def test_linear_regressors_reproduce_predict(model: Any, outputs: int) -> None:
    if outputs == 2 and isinstance(model, LinearSVR):
        pytest.skip("LinearSVR has one output")
    x, y = load_diabetes(return_X_y=True)
    target = y if outputs == 1 else np.stack([y, np.sqrt(y)], 1)
    estimator = fit_quietly(make_pipeline(RobustScaler(), StandardScaler(), model), x * 10 + 3, target)
    network = neon.neuralize(estimator)
    assert_exact(network(_x(x * 10 + 3)), estimator.predict(x * 10 + 3).reshape(len(x), -1))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression", "regression-2"])
def test_mlps_reproduce_predict_proba_and_predict(
    wine: tuple[np.ndarray, np.ndarray], activation: str, task: str
) -> None:
    x, y = wine
    targets = {
        "binary": y == 0,
        "multiclass": y,
        "multilabel": np.stack([y == 0, y == 1, x[:, 0] > 13], 1).astype(int),
        "regression": x[:, 0] + y,
        "regression-2": np.stack([x[:, 0], y], 1),
    }
    cls = MLPRegressor if task.startswith("regression") else MLPClassifier
    model = cls(hidden_layer_sizes=(12, 7), activation=activation, max_iter=60, random_state=0)
    estimator = fit_quietly(make_pipeline(StandardScaler(), model), x, targets[task])
    network = neon.neuralize(estimator)
    if cls is MLPClassifier:
        assert_exact(network.predict_proba(_x(x)), estimator.predict_proba(x))
    else:
        assert_exact(network(_x(x)), estimator.predict(x).reshape(len(x), -1))


def test_neuralize_leaves_the_estimator_unchanged(wine_kmeans: Any, wine: tuple[np.ndarray, np.ndarray]) -> None:
    before = pickle.dumps(wine_kmeans)
    network = neon.neuralize(wine_kmeans)
    network(_x(wine[0]))
    neon.explain(wine_kmeans, wine[0][:5])
    assert pickle.dumps(wine_kmeans) == before
    assert not any(p.requires_grad for p in network.parameters())


# -- what cannot be rewritten ---------------------------------------------------------------------------
def test_unsupported_estimator_names_what_is_supported(wine: tuple[np.ndarray, np.ndarray]) -> None:
    forest = RandomForestClassifier(n_estimators=2).fit(*wine)
    with pytest.raises(
        UnsupportedEstimatorError, match=r"cannot rewrite RandomForestClassifier; supported estimators"
    ) as e:
        neon.neuralize(forest)
    message = str(e.value)
    for name in ("KMeans", "OneClassSVM", "KernelDensity", "LogisticRegression", "MLPClassifier", "Ridge"):
        assert name in message


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (OneClassSVM(kernel="linear"), "OneClassSVM(kernel='linear') is not supported; NEON explains the RBF kernel"),
        (KernelDensity(kernel="tophat"), "KernelDensity(kernel='tophat', metric='euclidean') is not supported"),
        (make_pipeline(PCA(3), KMeans(2, n_init=1)), "pipeline step 'pca' (PCA) cannot be folded into the network"),
        (make_pipeline(MinMaxScaler(clip=True), KMeans(2, n_init=1)), "MinMaxScaler(clip=True) clips values"),
    ],
)
def test_models_without_an_exact_rewrite_are_refused(
    estimator: Any, message: str, wine: tuple[np.ndarray, np.ndarray]
) -> None:
    estimator.fit(wine[0])
    with pytest.raises(UnsupportedEstimatorError) as error:
        neon.neuralize(estimator)
    assert message in str(error.value)


def test_unfitted_estimator_and_misplaced_beta(wine: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ConfigurationError, match=r"KMeans is not fitted \(it has no cluster_centers_\); call fit"):
        neon.neuralize(KMeans(2))
    ridge = Ridge().fit(*wine)
    with pytest.raises(ConfigurationError, match="beta sets the pooling stiffness of k-means networks, not of Ridge"):
        neon.neuralize(ridge, beta=1.0)
    with pytest.raises(ConfigurationError, match="beta must be a positive number or inf"):
        neon.neuralize(KMeans(2, n_init=1).fit(wine[0]), beta=-1.0)
