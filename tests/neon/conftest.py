"""Fitted scikit-learn models on the data sets scikit-learn ships (fitted once per test session)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@pytest.fixture(scope="session")
def wine() -> tuple[np.ndarray, np.ndarray]:
    data = load_wine()
    return data.data, data.target


@pytest.fixture(scope="session")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data, data.target


@pytest.fixture(scope="session")
def wine_kmeans(wine: tuple[np.ndarray, np.ndarray]) -> Any:
    return make_pipeline(StandardScaler(), KMeans(3, n_init=10, random_state=0)).fit(wine[0])
