"""``relprop concepts``: the top concepts (channels of a layer) of one image, as a figure.

The command object :data:`concepts` is registered on the ``relprop`` group by :mod:`relprop.cli`.
The figure shows the image and its heatmap, then per top concept its conditional heatmap and,
with ``--store``, reference patches from a relevance store written with ``--layers LAYER``
(see :mod:`relprop.concepts`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .clitools import UserError, load_bundle, model_options, refuse_overwrite, write_atomic
from .errors import RelpropError

__all__ = ["concepts"]


def _target(text: str) -> int | None:
    if text == "predicted":
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--target must be 'predicted' or a class index, got {text!r}") from None


def _read_input(path: Path, bundle: Any) -> Any:
    from .images import MAX_PIXELS, ImageReadError, read_image
    from .models.inputs import model_input

    try:
        prepared = model_input(bundle, read_image(path).image, str(path), MAX_PIXELS)
    except ImageReadError as exc:
        raise UserError(str(exc)) from None
    for note in prepared.notes:
        click.echo(f"note: {note}", err=True)
    return prepared.tensor


def _open_store(path: Path | None, model: Any) -> Any:
    if path is None:
        return None
    try:
        from .dataset import RelevanceStore
    except ImportError as exc:
        raise UserError(f"--store needs zarr ({exc}); run pip install 'relprop[dataset]'") from None
    return RelevanceStore(path, model=model)


def _tuned(composite: str) -> Any:
    """The tuned composite of a ``--composite tuned.json`` (``None`` for a name); one with a reference is refused."""
    from .tuning import TunedComposite
    from .tuning.resolve import is_tuned_file

    if not is_tuned_file(composite):
        return None

    try:
        tuned = TunedComposite.load(composite)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    if tuned.candidate.reference is not None:
        # Reference-aware LRP runs the model on the pair [x; x̄] with rules on differences; conditioning a layer's
        # channels (CRP) is defined for the ordinary relevance of one input, not implemented for that pair yet.
        raise UserError(
            f"concepts cannot use tuned composite {composite} ({tuned.spec}): it explains relative to the reference "
            f"{tuned.candidate.reference!r}, and conditional relevance per channel is not available for "
            "reference-aware LRP; tune without a reference (relprop tune --reference none) or give a composite name"
        )
    return tuned


@click.command("concepts")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@model_options
@click.option("--layer", required=True, help="Module path of the layer whose channels are the concepts.")
@click.option("--top", type=click.IntRange(1, 64), default=5, show_default=True, help="How many concepts to show.")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Relevance store holding this layer (explain-dataset --layers): reference samples.")  # fmt: skip
@click.option("--references", type=click.IntRange(1, 32), default=6, show_default=True, help="References per concept.")
@click.option("--target", default="predicted", show_default=True, help="predicted or a class index.")
@click.option("--composite", default="epsilon-gamma-box", show_default=True,
              help="LRP composite name, or a tuned.json from relprop tune (without a reference).")  # fmt: skip
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("concepts.png"),
              show_default=True, help="The figure (PNG); a JSON summary is written beside it.")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def concepts(
    input_path: Path,
    model_spec: str,
    weights: str | None,
    device: str,
    input_size: int | None,
    mean: str | None,
    std: str | None,
    layer: str,
    top: int,
    store: Path | None,
    references: int,
    target: str,
    composite: str,
    out_path: Path,
    force: bool,
) -> None:
    """Explain INPUT by the channels of --layer that carried the decision (Concept Relevance Propagation)."""
    from . import composites as _composites
    from .concepts import concept_figure, explain_concepts
    from .engine.explainer import Explainer

    summary_path = out_path.with_suffix(".json")
    refuse_overwrite([out_path, summary_path], force, what="--out file")
    class_ = _target(target)
    tuned = _tuned(composite)
    bundle = load_bundle(model_spec, weights, device, input_size, mean, std)
    accepted = {n: p for n, _, p in _composites.describe()}
    if tuned is None and composite not in accepted:
        raise UserError(f"unknown composite {composite!r}; choose one of: {', '.join(accepted)}")
    bounds = {"low": bundle.low, "high": bundle.high} if tuned is None and "low" in accepted[composite] else {}
    x = _read_input(input_path, bundle).unsqueeze(0)
    try:
        opened = _open_store(store, bundle.model)
        explainer = Explainer(bundle.model, composite, **bounds)  # a tuned file is checked against the model here
        result = explain_concepts(explainer, x, class_, layer, top=top, store=opened, references=references)
        picture = concept_figure(result, display=bundle.display)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    write_atomic(out_path, lambda p: picture.save(p, format="PNG"))
    summary = {
        "input": str(input_path), "layer": layer, "target": result.target, "composite": composite,
        **({} if tuned is None else {"tuned": tuned.spec}),
        "concepts": [
            {"channel": c.channel, "relevance": c.relevance, "references": [r.index for r in c.references]}
            for c in result.concepts
        ],
    }  # fmt: skip
    write_atomic(summary_path, lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"))
    for concept in result.concepts:
        refs = ", ".join(str(r.index) for r in concept.references) or "-"
        click.echo(f"channel {concept.channel}: relevance {concept.relevance:.4g}; references {refs}")
    click.echo(f"figure: {out_path}")
