"""How unusual is a cluster's relevance? The score SpRAy's clusters are ranked by.

A Clever-Hans shortcut (a watermark, a frame, a source tag) has two marks in the heatmaps:

1. it **displaces** relevance: the images that carry it get a large share of their evidence
   from a place where the other images of the class get little; and
2. the displaced relevance is **concentrated**: an artefact is small and sits at a fixed place,
   so the surplus is piled on a few positions. Ordinary variation within a class (pose, stroke
   width, a second object) also moves relevance around, but by small amounts spread over the
   object; and a cluster that merely *lacks* an artefact the rest has gains its surplus
   everywhere on the object, i.e. diffusely.

For cluster ``c`` with members' positive relevance normalised to shares ``P_i`` (Σ_x P_i(x) = 1)
the mean share maps are ``p_c`` (members) and ``p_r`` (the rest of the class), and

    displaced      = Σ_x max(p_c(x) - p_r(x), 0)                  (total variation distance, in [0, 1])
    concentration  = 1 - H(e) / log X,  e = max(p_c - p_r, 0) / displaced
                     (H the entropy of the surplus, X the number of positions: 1 when the
                     surplus sits on one position, 0 when it is spread evenly over all)
    score          = displaced × concentration

The concentration is measured on the log scale of the entropy, not as an area fraction
``exp(H) / X``: on a 32 × 32 map a surplus on 4 and on 40 positions are both "small" as area
fractions (1 - 4/1024 = 0.996 against 0.96) but clearly apart as normalised entropies (0.80
against 0.47).

``displaced`` alone cannot tell the two sides of a split apart (the total variation distance
is symmetric, so a cluster and the rest of a two-cluster class have the same value); the
concentration of the surplus does: the artefact cluster's surplus is the artefact, the other
side's is the object. Positions are pixels of the pooled map for input heatmaps and channels
for a layer's per-channel relevance (a shortcut carried by a few channels is concentrated there).
Negative relevance is left out: the score is about where the evidence *for* the class comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClusterScore", "positive_shares", "unusualness"]


@dataclass(frozen=True)
class ClusterScore:
    """The ranking score of one cluster and its two factors (see the module notes)."""

    score: float
    displaced: float
    concentration: float


def positive_shares(features: np.ndarray) -> np.ndarray:
    """Each row's positive part as shares (rows without positive relevance become all zeros)."""
    positive = np.maximum(features.astype(np.float64), 0.0)
    totals = positive.sum(1, keepdims=True)
    return positive / np.where(totals > 0, totals, 1.0)


def unusualness(member_mean: np.ndarray, rest_mean: np.ndarray) -> ClusterScore:
    """Score of a cluster from its members' and the rest's mean positive share maps (flattened)."""
    surplus = np.maximum(member_mean - rest_mean, 0.0)
    displaced = float(surplus.sum())
    if displaced <= 0:
        return ClusterScore(0.0, 0.0, 0.0)
    share = surplus / displaced
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    concentration = 1.0 - entropy / np.log(share.size) if share.size > 1 else 1.0
    return ClusterScore(displaced * concentration, displaced, concentration)
