"""Explain one input by its top concepts, and draw it: heatmap, then per concept its conditional heatmap
and reference patches from a relevance store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from .. import viz
from .conditional import channel_relevance, conditional_heatmaps, top_channels
from .maximization import ReferencePatch, reference_patches, reference_samples, store_inputs

__all__ = ["Concept", "ConceptExplanation", "concept_figure", "explain_concepts"]


@dataclass
class Concept:
    """One channel of the layer: its relevance for the prediction, its conditional heatmap, its references."""

    channel: int
    relevance: float
    heatmap: Tensor
    references: list[ReferencePatch] = field(default_factory=list)


@dataclass
class ConceptExplanation:
    """The top concepts of one input (see :func:`explain_concepts`)."""

    layer: str
    input: Tensor
    target: int
    heatmap: Tensor
    channel_relevance: Tensor
    concepts: list[Concept]


def explain_concepts(
    explainer: Any,
    x: Tensor,
    target: Any,
    layer: str,
    *,
    top: int = 5,
    store: Any = None,
    references: int = 6,
    preprocess: Any = None,
    fraction: float = 0.5,
) -> ConceptExplanation:
    """The ``top`` most relevant channels of ``layer`` for one input ``x`` (``(1, ...)``), their conditional
    heatmaps (one backward pass for all), and, with a ``store`` holding ``layer``, their reference patches."""
    base = channel_relevance(explainer, x, target, layer)
    values, channels = top_channels(base.channels, top)
    maps = conditional_heatmaps(
        explainer, x, base.target, layer, channels[0].tolist(), layer_shape=base.layer_shape, batch_size=top
    )
    concepts = [
        Concept(int(c), float(v), maps[0, j]) for j, (c, v) in enumerate(zip(channels[0], values[0], strict=True))
    ]
    if store is not None:
        found = reference_samples(store, layer, [c.channel for c in concepts], count=references)
        targets = store.column("target")
        for concept in concepts:
            indices = [int(i) for i in found[concept.channel][0]]
            inputs = store_inputs(store, indices, preprocess)
            chosen = torch.as_tensor(targets[indices], dtype=torch.long)
            concept.references = reference_patches(
                explainer, inputs.to(x.dtype), chosen, indices, layer, concept.channel, fraction=fraction
            )
    return ConceptExplanation(layer, x[0], int(base.target[0]), base.relevance[0], base.channels[0], concepts)


def concept_figure(result: ConceptExplanation, display: Any = None, cell: int = 96) -> Image.Image:
    """Rows: the input and its heatmap; then per concept (titled with its channel and relevance) its conditional
    heatmap followed by its reference patches."""
    show = display or viz.to_image
    first = [show(result.input.detach().cpu()), viz.heatmap(result.heatmap, clip_percentile=99.5)]
    rows, titles = [first], [f"class {result.target}"]
    for concept in result.concepts:
        row = [viz.heatmap(concept.heatmap, clip_percentile=99.5)]
        row += [show(ref.patch.detach().cpu()) for ref in concept.references]
        rows.append(row)
        titles.append(f"ch {concept.channel}: {concept.relevance:.3g}")
    return viz.grid(rows, row_titles=titles, cell_size=cell)
