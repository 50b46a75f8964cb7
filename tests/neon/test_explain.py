"""``relprop.neon.explain``: linear models against closed forms and SHAP, MLPs through the engine, targets."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import relprop
from relprop import neon
from relprop.errors import ConfigurationError, TargetError

from .fitting import assert_exact, fit_quietly


@pytest.fixture(scope="module")
def wine_logistic(wine: tuple[np.ndarray, np.ndarray]) -> Any:
    return fit_quietly(LogisticRegression(max_iter=300), *wine)


@pytest.fixture(scope="module")
def cancer_logistic(cancer: tuple[np.ndarray, np.ndarray]) -> Any:
    return fit_quietly(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)), *cancer)


@pytest.fixture(scope="module")
def wine_mlp(wine: tuple[np.ndarray, np.ndarray]) -> Any:
    model = MLPClassifier(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=300, random_state=0)
    return fit_quietly(make_pipeline(StandardScaler(), model), *wine)


# -- linear models: closed forms and SHAP -------------------------------------------------------------------
def test_lrp0_of_a_linear_model_is_weight_times_input(wine: Any, wine_logistic: Any) -> None:
    x = wine[0][:40]
    for target in (None, 2):
        result = neon.explain(wine_logistic, x, target, composite="lrp-0")
        classes = wine_logistic.predict(x) if target is None else np.full(len(x), target)
        assert np.array_equal(result.target.numpy(), classes)
        assert_exact(result.relevance, wine_logistic.coef_[classes] * x)
        # What the relevance does not cover is the intercept, booked in the ledger.
        assert_exact(result.ledger.bias_absorbed, wine_logistic.intercept_[classes])
        assert result.ledger.closes(rtol=1e-12)


def test_lrp0_with_a_folded_scaler_is_weight_over_scale_times_input(cancer: Any, cancer_logistic: Any) -> None:
    x = cancer[0][:50]
    scaler, model = cancer_logistic[0], cancer_logistic[-1]
    result = neon.explain(cancer_logistic, x, 1, composite="lrp-0")
    assert_exact(result.relevance, model.coef_[0] / scaler.scale_ * x)
    # Binary: class 0 explains the negative decision value.
    negative = neon.explain(cancer_logistic, x, 0, composite="lrp-0")
    assert_exact(negative.relevance, -result.relevance.numpy())
    assert_exact(negative.score, -cancer_logistic.decision_function(x))
    predicted = neon.explain(cancer_logistic, x, composite="lrp-0")
    assert np.array_equal(predicted.target.numpy(), cancer_logistic.predict(x))
    assert bool((predicted.score >= 0).all())


@pytest.mark.parametrize("composite", ["lrp-0", "epsilon"])
def test_mean_reference_of_a_linear_model_is_the_closed_form(cancer: Any, cancer_logistic: Any, composite: str) -> None:
    x = cancer[0]
    rows = x[::17]
    model, scaler = cancer_logistic[-1], cancer_logistic[0]
    params = {"epsilon": 0.0} if composite == "epsilon" else {}
    result = neon.explain(cancer_logistic, rows, 1, reference=x.mean(0), composite=composite, **params)
    closed_form = model.coef_[0] / scaler.scale_ * (rows - x.mean(0))
    assert_exact(result.relevance, closed_form)
    delta = cancer_logistic.decision_function(rows) - cancer_logistic.decision_function(x.mean(0, keepdims=True))
    assert_exact(result.score, delta)
    assert_exact(result.ledger.input_relevance, delta)


def _shap_against_mean_reference(wine: Any, wine_logistic: Any, explainer_name: str) -> None:
    shap = pytest.importorskip("shap")
    x = wine[0]
    background = x[::15]  # 12 rows; interventional SHAP takes expectations over them
    rows = x[[1, 70, 150]]
    for c in (0, 2):
        result = neon.explain(wine_logistic, rows, c, reference=background.mean(0), composite="lrp-0")

        def logit(data: np.ndarray, c: int = c) -> np.ndarray:
            return wine_logistic.decision_function(data)[:, c]

        masker = shap.maskers.Independent(background, max_samples=len(background))
        values = getattr(shap.explainers, explainer_name)(logit, masker)(rows).values
        assert_exact(result.relevance, values)
        assert_exact(result.relevance, wine_logistic.coef_[c] * (rows - background.mean(0)))


@pytest.mark.heavy
@pytest.mark.parametrize("explainer_name", ["ExactExplainer", "PermutationExplainer"])
def test_mean_reference_equals_exact_interventional_shap(wine: Any, wine_logistic: Any, explainer_name: str) -> None:
    # ExactExplainer enumerates all 2^13 coalitions; for an additive model every permutation gives a
    # feature the same marginal contribution, so the permutation estimate is exact too. Heavy: shap
    # compiles its numba kernels on first use (~20 s).
    _shap_against_mean_reference(wine, wine_logistic, explainer_name)


def test_mean_reference_equals_linear_shap(cancer: Any, cancer_logistic: Any, wine: Any, wine_logistic: Any) -> None:
    shap = pytest.importorskip("shap")
    background = wine[0][::15]
    rows3 = wine[0][[1, 70, 150]]
    linear = shap.LinearExplainer(wine_logistic, shap.maskers.Independent(background, max_samples=len(background)))
    values = linear(rows3).values  # (rows, features, classes)
    for c in range(3):
        result = neon.explain(wine_logistic, rows3, c, reference=background.mean(0), composite="lrp-0")
        assert_exact(result.relevance, values[:, :, c])
    x = cancer[0]
    rows = x[::29]
    z = cancer_logistic[0].transform(x)
    model = cancer_logistic[-1]
    explainer = shap.LinearExplainer(model, shap.maskers.Independent(z, max_samples=len(z)))
    expected = explainer(cancer_logistic[0].transform(rows)).values
    result = neon.explain(cancer_logistic, rows, 1, reference=x.mean(0), composite="lrp-0")
    assert_exact(result.relevance, expected)
    # "mean" is the mean of the explained rows.
    own = neon.explain(cancer_logistic, rows, 1, reference="mean", composite="lrp-0")
    assert_exact(own.relevance, model.coef_[0] / cancer_logistic[0].scale_ * (rows - rows.mean(0)))


# -- MLPs: the engine, and the reference by difference propagation ---------------------------------------
def test_mlp_reference_with_lrp0_is_deeplift_rescale_and_sums_to_the_difference(wine: Any, wine_mlp: Any) -> None:
    x = wine[0]
    rows = x[::7]
    reference = x.mean(0)
    ours = neon.explain(wine_mlp, rows, reference=reference, composite="lrp-0")
    network = neon.neuralize(wine_mlp)
    engine = relprop.explain(
        network,
        torch.as_tensor(rows),
        ours.target,
        method="deeplift",
        reference=torch.as_tensor(reference).expand(len(rows), -1),
    )
    assert_exact(ours.relevance, engine.relevance.numpy())
    logits = network(torch.as_tensor(rows)) - network(torch.as_tensor(reference[None]))
    delta = logits.gather(1, ours.target.view(-1, 1)).squeeze(1)
    assert_exact(ours.score, delta.numpy())
    assert_exact(ours.ledger.input_relevance, delta.numpy())
    # LRP-ε on the differences absorbs, and the ledger shows where.
    eps = neon.explain(wine_mlp, rows, reference=reference, composite="epsilon", epsilon=0.5)
    assert float(eps.ledger.absorbed.abs().max()) > 1e-3
    assert eps.ledger.closes(rtol=1e-12)
    assert [e.path for e in eps.ledger.entries] == ["layers.0", "layers.2", "layers.4"]
    # DeepLIFT and Integrated Gradients take it as their reference / baseline.
    deeplift = neon.explain(wine_mlp, rows, reference=reference, method="deeplift")
    assert_exact(deeplift.relevance, ours.relevance.numpy())
    ig = neon.explain(wine_mlp, rows, reference=reference, method="integrated-gradients", steps=64)
    assert float(ig.info["completeness_gap"].abs().max()) < 1e-3


COMPOSITES = ["lrp-0", "epsilon", "gamma", "alpha1-beta0", "epsilon-plus-flat", "epsilon-gamma-box"]


@pytest.mark.parametrize("composite", COMPOSITES)
def test_mlp_explained_by_the_engine_with_any_composite(wine: Any, wine_mlp: Any, composite: str) -> None:
    x = wine[0][::10]
    result = neon.explain(wine_mlp, x, composite=composite)
    assert result.relevance.shape == x.shape and result.relevance.dtype == torch.float64
    assert np.array_equal(result.target.numpy(), wine_mlp.predict(x))
    assert result.ledger.closes(rtol=1e-10)
    assert bool(torch.isfinite(result.relevance).all())


@pytest.mark.parametrize("method", [m for m in relprop.methods.names() if m != "lrp"])
def test_mlp_explained_by_the_engine_with_any_method(wine: Any, method: str) -> None:
    x, y = wine
    model = MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, random_state=0)
    estimator = fit_quietly(make_pipeline(StandardScaler(), model), x, np.stack([y, x[:, 0]], 1))
    params = {"n": 4, "seed": 0} if method == "smoothgrad" else {"patch": 1} if method == "occlusion" else {}
    result = neon.explain(estimator, x[:6], 1, method=method, **params)
    assert result.relevance.shape == (6, 13)
    assert bool(torch.isfinite(result.relevance).all())
    assert result.target.tolist() == [1] * 6
    if method == "gradient-x-input":
        assert_exact(result.ledger.score, estimator.predict(x[:6])[:, 1])


def test_binary_target_flips_the_sign_for_every_method(cancer: Any, cancer_logistic: Any) -> None:
    rows = cancer[0][:8]
    for method in ("gradient-x-input", "occlusion"):
        params = {"patch": 1, "value": 0.0} if method == "occlusion" else {}
        one = neon.explain(cancer_logistic, rows, 1, method=method, **params)
        zero = neon.explain(cancer_logistic, rows, 0, method=method, **params)
        assert_exact(zero.relevance, -one.relevance.numpy())
        assert zero.target.tolist() == [0] * 8


# -- targets, options and errors ------------------------------------------------------------------------
def test_kmeans_targets_per_row_and_errors(wine: Any, wine_kmeans: Any) -> None:
    x = wine[0][:6]
    per_row = neon.explain(wine_kmeans, x, [0, 1, 2, 0, 1, 2])
    assert per_row.target.tolist() == [0, 1, 2, 0, 1, 2]
    assert_exact(per_row.score, neon.neuralize(wine_kmeans)(torch.as_tensor(x)).numpy()[range(6), [0, 1, 2] * 2])
    with pytest.raises(TargetError, match=r"target 3 is out of range; valid indices are 0..2"):
        neon.explain(wine_kmeans, x, 3)
    with pytest.raises(ConfigurationError, match="NEON's own rules, which take beta only; drop composite"):
        neon.explain(wine_kmeans, x, composite="epsilon")
    with pytest.raises(ConfigurationError, match="drop method, gamma"):
        neon.explain(wine_kmeans, x, method="gradient", gamma=0.1)


def test_options_that_do_not_apply_are_refused(wine: Any, wine_logistic: Any, cancer: Any) -> None:
    x = wine[0][:4]
    with pytest.raises(ConfigurationError, match="beta applies to NEON networks"):
        neon.explain(wine_logistic, x, beta=1.0)
    with pytest.raises(ConfigurationError, match="reference must be 'mean' or an array, got 'median'"):
        neon.explain(wine_logistic, x, reference="median")
    with pytest.raises(ConfigurationError, match=r"reference must have 13 values \(one row\) or shape \(4, 13\)"):
        neon.explain(wine_logistic, x, reference=np.zeros(5))
    with pytest.raises(ConfigurationError, match="with reference= the composites lrp-0, epsilon are available"):
        neon.explain(wine_logistic, x, reference="mean", composite="gamma")
    with pytest.raises(ConfigurationError, match="reference= works with method 'lrp'"):
        neon.explain(wine_logistic, x, reference="mean", method="smoothgrad")
    from sklearn.svm import OneClassSVM

    svm = OneClassSVM().fit(cancer[0] / cancer[0].std(0))
    with pytest.raises(TargetError, match="the outlier score is a single output; pass target=None"):
        neon.explain(svm, cancer[0][:3] / cancer[0].std(0), 1)
    zeros = neon.explain(svm, cancer[0][:3] / cancer[0].std(0), [0, 0, 0])
    assert zeros.target.tolist() == [0, 0, 0]


def test_explain_leaves_every_estimator_unchanged(wine: Any, wine_mlp: Any, wine_logistic: Any) -> None:
    for estimator in (wine_mlp, wine_logistic):
        before = pickle.dumps(estimator)
        neon.explain(estimator, wine[0][:5])
        neon.explain(estimator, wine[0][:5], reference="mean")
        assert pickle.dumps(estimator) == before


def test_regressor_explains_each_output(wine: Any) -> None:
    x, y = wine
    ridge = Ridge().fit(x, np.stack([y, x[:, 1]], 1))
    for output in (0, 1):
        result = neon.explain(ridge, x[:5], output, composite="lrp-0")
        assert_exact(result.relevance, ridge.coef_[output] * x[:5])
        assert result.target.tolist() == [output] * 5
