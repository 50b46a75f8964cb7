"""Heatmaps → features: channel sums, pooling, normalisation, batched reading, bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relprop.errors import AnalysisError
from relprop.spray.features import heatmap_features, pooled_size, read_rows


def test_map_view_sums_channels_pools_and_normalises() -> None:
    rng = np.random.default_rng(0)
    heatmaps = rng.normal(size=(7, 3, 64, 48)).astype(np.float32)
    features = heatmap_features(heatmaps, size=16, batch_size=3)
    assert features.shape == (16, 12) and features.source_shape == (3, 64, 48)
    # Independent reference: sum channels, mean over 4×4 blocks, divide by Σ|·|.
    summed = heatmaps.astype(np.float64).sum(1)
    pooled = summed.reshape(7, 16, 4, 12, 4).mean((2, 4)).reshape(7, -1)
    expected = pooled / np.abs(pooled).sum(1, keepdims=True)
    np.testing.assert_allclose(features.values, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.abs(features.values).sum(1), 1.0, rtol=1e-5)


def test_channels_view_sums_over_space_and_rows_select() -> None:
    heatmaps = torch.arange(5 * 4 * 2 * 2, dtype=torch.float32).reshape(5, 4, 2, 2)
    features = heatmap_features(heatmaps, np.array([1, 3]), view="channels", normalize="none")
    np.testing.assert_array_equal(features.values, heatmaps[[1, 3]].sum((2, 3)).numpy())
    assert features.shape == (4,)


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("l2", lambda v: np.linalg.norm(v, axis=1)),
        ("max", lambda v: np.abs(v).max(1)),
    ],
)
def test_other_normalisations(name: str, check) -> None:  # type: ignore[no-untyped-def]
    heatmaps = np.random.default_rng(1).normal(size=(4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(check(heatmap_features(heatmaps, normalize=name).values), 1.0, rtol=1e-5)


def test_zero_heatmaps_are_reported_not_divided_by_zero() -> None:
    heatmaps = np.ones((4, 8, 8), dtype=np.float32)
    heatmaps[2] = 0
    features = heatmap_features(heatmaps)
    assert np.all(np.isfinite(features.values))
    assert features.zero.tolist() == [2]


def test_pooled_size() -> None:
    assert pooled_size(224, 224, 32) == (32, 32)
    assert pooled_size(25, 25, 32) == (25, 25)
    assert pooled_size(100, 50, 32) == (25, 13)
    assert pooled_size(100, 50, None) == (100, 50)


def test_read_rows_uses_slices_for_contiguous_rows() -> None:
    class SliceOnly:
        shape = (10, 2)

        def __getitem__(self, key):  # type: ignore[no-untyped-def]
            assert isinstance(key, slice), "contiguous rows must be read as one slice"
            return np.arange(20).reshape(10, 2)[key]

    np.testing.assert_array_equal(read_rows(SliceOnly(), np.array([3, 4, 5])), np.arange(6, 12).reshape(3, 2))


def test_bad_values_and_options() -> None:
    heatmaps = np.ones((3, 4, 4), dtype=np.float32)
    heatmaps[1, 2, 2] = np.nan
    with pytest.raises(AnalysisError, match=r"^the heatmap at row 1 contains NaN or Inf; recompute it or leave"):
        heatmap_features(heatmaps)
    with pytest.raises(AnalysisError, match=r"^unknown view 'pixels'; choose one of: map, channels, flat\.$"):
        heatmap_features(heatmaps, view="pixels")
    with pytest.raises(AnalysisError, match=r"^unknown normalisation 'l3'; choose one of: l1, l2, max, none\.$"):
        heatmap_features(heatmaps, normalize="l3")
    with pytest.raises(AnalysisError, match=r"^view 'map' needs heatmaps shaped \(N, H, W\) or \(N, C, H, W\), got"):
        heatmap_features(np.ones((3, 5), dtype=np.float32))
