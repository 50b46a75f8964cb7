"""NEON's rules against independent float64 implementations written from the papers' formulas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from relprop import neon
from relprop.neon import MidpointRule, SoftMinPoolingRule, SquaredDistanceRule

from .fitting import assert_exact

INF = float("inf")


def _shares(h: np.ndarray, beta: float | None) -> np.ndarray:
    """Soft-min probabilities exp(-β h_k) / Σ exp(-β h_k'); winner-takes-all (ties split) for β = ∞."""
    if beta is None or math.isinf(beta):
        winners = (h == h.min()).astype(float)
        return winners / winners.sum()
    e = np.exp(-beta * (h - h.min()))
    return e / e.sum()


def _kmeans_reference(z: np.ndarray, centers: np.ndarray, c: int, beta: float | None) -> tuple[np.ndarray, float]:
    """Kauffmann et al. (2024): f_c = min_k h_k; R_k = p_k f_c; R_i = Σ_k (z - m_k)_i w_ki / h_k · R_k."""
    others = [k for k in range(len(centers)) if k != c]
    w = [centers[c] - centers[k] for k in others]
    m = [(centers[c] + centers[k]) / 2 for k in others]
    h = np.array([w_k @ (z - m_k) for w_k, m_k in zip(w, m, strict=True)])
    f = float(h.min())
    p = _shares(h, beta)
    relevance = np.zeros_like(z)
    for w_k, m_k, h_k, p_k in zip(w, m, h, p, strict=True):
        relevance += (z - m_k) * w_k / h_k * (p_k * f)
    return relevance, f


@pytest.mark.parametrize("beta", [None, 0.3, 3.0, INF])
@pytest.mark.parametrize("target", [None, 1])
def test_kmeans_midpoint_and_soft_min_rules_against_the_paper(
    wine: tuple[np.ndarray, np.ndarray], beta: float | None, target: int | None
) -> None:
    x = wine[0][::9]
    estimator = make_pipeline(StandardScaler(), KMeans(4, n_init=3, random_state=1)).fit(wine[0])
    z = estimator[0].transform(x)
    centers = estimator[-1].cluster_centers_
    result = neon.explain(estimator, x, target, beta=beta)
    assigned = estimator.predict(x)
    for n in range(len(x)):
        c = int(assigned[n]) if target is None else target
        expected, f = _kmeans_reference(z[n], centers, c, beta)
        assert int(result.target[n]) == c
        assert_exact(result.score[n], f)
        # The scaler is folded into the network; relevance per original feature equals the paper's
        # rule applied in the scaled space (the midpoint rule is invariant to per-feature affine maps).
        assert_exact(result.relevance[n], expected)
    residual = result.ledger.residual.abs() / result.score.abs().clamp(min=1)
    assert float(residual.max()) < 1e-12


def test_beta_to_infinity_is_winner_takes_all_and_beta_to_zero_is_uniform(wine_kmeans: Any, wine: Any) -> None:
    x = wine[0]
    hard = neon.explain(wine_kmeans, x, beta=INF)
    default = neon.explain(wine_kmeans, x)
    assert torch.equal(hard.relevance, default.relevance)
    # Rows whose two nearest competitors are not tied: a large finite β reaches the limit.
    h = default.info["pool_shares"]
    assert h.shape == (len(x), 2)
    steep = neon.explain(wine_kmeans, x, beta=1e4)
    pairs = neon.neuralize(wine_kmeans).pairs(torch.as_tensor(x))
    gap = (pairs.gather(1, default.target.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1)).diff(dim=1).abs().squeeze(1)
    separated = gap > 0.01
    assert int(separated.sum()) > 100
    assert_exact(steep.relevance[separated], hard.relevance[separated].numpy(), tol=1e-12)
    # β → 0: every competitor gets the same share.
    flat = SoftMinPoolingRule(1e-14).shares(pairs[:, 0])
    assert_exact(flat, np.full((len(x), 2), 0.5))


@pytest.mark.parametrize("beta", [1e-3, 0.5, 7.0, 1e6, INF, None])
def test_soft_min_pooling_rule_against_the_formula(beta: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    h[0, 1] = h[0, 3] = h[0].min() - 1.0  # a tie for winner-takes-all
    score = torch.randn(6, generator=generator, dtype=torch.float64)
    rule = SoftMinPoolingRule(beta)
    relevance = rule(h, score)
    expected = np.stack([_shares(h[n].numpy(), beta) * float(score[n]) for n in range(6)])
    assert_exact(relevance, expected, tol=1e-13)
    assert_exact(relevance.sum(1), score.numpy(), tol=1e-13)
    if beta is None or math.isinf(beta):
        assert relevance[0, 1] == relevance[0, 3] == score[0] / 2


def test_midpoint_rule_absorbs_only_zero_units() -> None:
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    weight = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    midpoint = torch.tensor([[[1.0, 5.0], [0.0, -2.0]]], dtype=torch.float64)  # unit 0: h = 0
    relevance = torch.tensor([[0.7, -1.5]], dtype=torch.float64)
    lower, absorbed = MidpointRule()(x, weight, midpoint, relevance)
    # Unit 1: h = 1·1 + 1·2 = 3; R_i = (x - m)_i w_i / 3 · (-1.5).
    assert_exact(lower, np.array([[1 * 1 / 3 * -1.5, 2 * 1 / 3 * -1.5]]), tol=1e-15)
    assert_exact(absorbed, np.array([0.7]), tol=1e-15)


def test_soft_kmeans_network_books_zero_units_in_the_ledger() -> None:
    model = KMeans(3, n_init=1).fit(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.1, 0.0], [2.1, 0.0], [0.0, 3.1]]))
    model.cluster_centers_ = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    network = neon.neuralize(model, beta=1.0)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # on the boundary of clusters 0 and 1
    result = network.explain_inputs(x, target=0)
    pairs = result.ledger.entries[0]
    assert float(result.score[0]) < 0 and float(pairs.absorbed[0]) != 0.0
    assert result.ledger.closes(rtol=1e-12)


def _distance_reference(
    z: np.ndarray, centers: np.ndarray, shift: np.ndarray, gamma: float, beta: float | None
) -> tuple[np.ndarray, float]:
    """Kauffmann et al. (2020): o = softmin_γ(d_j); R_j = p_j o; R_i = Σ_j (z_i - u_ji)² / ‖z - u_j‖² R_j.

    A unit at distance 0 (the row is a support vector) has no squared differences to share by and
    hands down nothing.
    """
    squared = (z[None] - centers) ** 2
    d = squared.sum(1) + shift
    o = float(d.min() - np.log(np.exp(-gamma * (d - d.min())).sum()) / gamma)
    p = _shares(d, gamma if beta is None else beta)
    total = squared.sum(1, keepdims=True)
    shares = np.divide(squared, total, out=np.zeros_like(squared), where=total > 0)
    return (shares * (p * o)[:, None]).sum(0), o


@pytest.mark.parametrize("beta", [None, 0.02, INF])
def test_one_class_svm_rules_against_the_paper(cancer: tuple[np.ndarray, np.ndarray], beta: float | None) -> None:
    x = cancer[0]
    estimator = make_pipeline(StandardScaler(), OneClassSVM(nu=0.1)).fit(x)
    svm = estimator[-1]
    rows = x[::23]
    z = estimator[0].transform(rows)
    shift = -np.log(svm.dual_coef_[0] / svm.offset_[0]) / svm._gamma
    result = neon.explain(estimator, rows, beta=beta)
    for n in range(len(rows)):
        expected, o = _distance_reference(z[n], svm.support_vectors_, shift, svm._gamma, beta)
        assert_exact(result.score[n], o)
        assert_exact(result.relevance[n], expected)
    assert float(result.ledger.residual.abs().max()) < 1e-10
    # Rows that are support vectors: the unit at distance 0 is booked as absorbed by its shift.
    on_vector = [n for n in range(len(rows)) if (np.abs(z[n] - svm.support_vectors_).sum(1) == 0).any()]
    absorbed = result.ledger.entries[0].absorbed
    assert on_vector and all(float(absorbed[n]) != 0 for n in on_vector)
    assert_exact(result.ledger.entries[0].bias, absorbed.numpy(), tol=1e-12)
    # Positive score exactly for the SVM's outliers.
    assert np.array_equal((result.score > 0).numpy(), estimator.predict(rows) == -1)


def test_kernel_density_rules_against_the_paper(cancer: tuple[np.ndarray, np.ndarray]) -> None:
    x = cancer[0]
    estimator = make_pipeline(StandardScaler(), KernelDensity(bandwidth=2.0)).fit(x[:400])
    rows = x[400::13]
    z = estimator[0].transform(rows)
    points = estimator[0].transform(x[:400])
    gamma = 1 / (2 * 2.0**2)
    shift = np.full(400, np.log(400) / gamma)
    result = neon.explain(estimator, rows)
    for n in range(len(rows)):
        expected, o = _distance_reference(z[n], points, shift, gamma, None)
        assert_exact(result.score[n], o)
        assert_exact(result.relevance[n], expected)
    assert bool((result.relevance >= 0).all())  # a soft nearest-neighbour distance splits into squares


def test_squared_distance_rule_absorbs_zero_distance_units() -> None:
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    centers = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    metric = torch.tensor([1.0, 0.25], dtype=torch.float64)
    relevance = torch.tensor([[0.4, 2.0]], dtype=torch.float64)
    lower, absorbed = SquaredDistanceRule()(x, centers, metric, relevance)
    # Unit 1: g ⊙ (x - u)² = [1, 1], split evenly.
    assert_exact(lower, np.array([[1.0, 1.0]]), tol=1e-15)
    assert_exact(absorbed, np.array([0.4]), tol=1e-15)
