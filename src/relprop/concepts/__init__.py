"""Concepts: which channels of an inner layer carried a decision, where they are, and what they look like.

Concept Relevance Propagation (CRP, Achtibat et al. 2023) on top of the engine's ``layers=`` and
``conditions=``:

* :func:`channel_relevance` / :func:`top_channels` — the relevance of each channel of a layer for
  the prediction (which concepts mattered);
* :func:`conditional_heatmaps` — input relevance of single channels (where each concept is), many
  channels in one backward pass; over all channels they add up to the unconditional heatmap;
* :func:`reference_samples` — relevance maximisation over a relevance store
  (:mod:`relprop.dataset` with ``layers=[layer]``): the samples where each channel received the
  most relevance; :func:`reference_patches` cuts where the concept is out of them;
* :func:`explain_concepts` / :func:`concept_figure` — all of it for one input, and its figure
  (``relprop concepts``).

    explainer = relprop.Explainer(model, "epsilon-gamma-box", low=0.0, high=1.0)
    result = explain_concepts(explainer, x, None, "features.5", top=4, store=RelevanceStore("digits.zarr"))
    concept_figure(result).save("concepts.png")
"""

from __future__ import annotations

from .conditional import ConceptRelevance, channel_masks, channel_relevance, conditional_heatmaps, top_channels
from .figure import Concept, ConceptExplanation, concept_figure, explain_concepts
from .maximization import ReferencePatch, reference_patches, reference_samples, store_inputs

__all__ = [
    "Concept",
    "ConceptExplanation",
    "ConceptRelevance",
    "ReferencePatch",
    "channel_masks",
    "channel_relevance",
    "concept_figure",
    "conditional_heatmaps",
    "explain_concepts",
    "reference_patches",
    "reference_samples",
    "store_inputs",
    "top_channels",
]
