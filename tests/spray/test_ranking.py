"""The unusualness score: values worked out by hand, and the asymmetry it exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from relprop.spray.ranking import positive_shares, unusualness


def test_surplus_on_one_position_of_four() -> None:
    # Members put half their evidence on position 0, where the rest puts none.
    member = np.array([0.5, 0.5, 0.0, 0.0])
    rest = np.array([0.0, 0.5, 0.25, 0.25])
    score = unusualness(member, rest)
    assert score.displaced == pytest.approx(0.5)
    assert score.concentration == pytest.approx(1.0)  # the surplus sits on one position
    assert score.score == pytest.approx(0.5)


def test_surplus_spread_evenly_is_not_concentrated() -> None:
    member = np.full(8, 1 / 8)
    rest = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    score = unusualness(member, rest)
    assert score.displaced == pytest.approx(7 / 8)
    assert score.concentration == pytest.approx(1 - math.log(7) / math.log(8))  # 7 equal positions of 8


def test_entropy_of_an_uneven_surplus() -> None:
    member = np.array([0.6, 0.2, 0.2, 0.0])
    rest = np.array([0.0, 0.0, 0.2, 0.8])
    score = unusualness(member, rest)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert score.displaced == pytest.approx(0.8)
    assert score.concentration == pytest.approx(1 - entropy / math.log(4))
    assert score.score == pytest.approx(0.8 * (1 - entropy / math.log(4)))


def test_identical_maps_score_zero() -> None:
    same = np.array([0.25, 0.25, 0.5])
    assert unusualness(same, same).score == 0.0


def test_a_mark_outranks_its_complement() -> None:
    """Two-way split: the total variation is symmetric, the concentration of the surplus is not."""
    positions = 64
    rng = np.random.default_rng(0)
    object_map = rng.random(positions)
    object_map[:4] = 0
    object_map /= object_map.sum()
    mark = np.zeros(positions)
    mark[:4] = 0.25
    marked = 0.5 * object_map + 0.5 * mark  # half the evidence moved onto the mark
    with_mark, without = unusualness(marked, object_map), unusualness(object_map, marked)
    assert with_mark.displaced == pytest.approx(without.displaced)
    assert with_mark.score > 2 * without.score


def test_positive_shares() -> None:
    features = np.array([[1.0, -1.0, 3.0], [-1.0, -2.0, 0.0]])
    np.testing.assert_allclose(positive_shares(features), [[0.25, 0.0, 0.75], [0.0, 0.0, 0.0]])
