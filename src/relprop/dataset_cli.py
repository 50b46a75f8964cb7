"""``relprop explain-dataset``: explain a whole data set into a resumable relevance store.

The command object :data:`explain_dataset_command` is registered on the ``relprop`` group by
:mod:`relprop.cli`. Exit status: 0 when every sample was explained, 1 when some samples
failed (listed in the summary and in the store), 2 for a user error (one line), 130 after
Ctrl-C (the chunk in flight is committed; ``--resume`` continues).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .clitools import UserError, load_bundle, model_options, parse_floats

__all__ = ["explain_dataset_command"]


def _target(text: str) -> tuple[Any, str]:
    """``--target`` → (target, top)."""
    if text in ("predicted", "label"):
        return text, "logit"
    if text == "log-odds":
        return None, "log-odds"
    try:
        return int(text), "logit"
    except ValueError:
        raise UserError(f"--target must be 'predicted', 'label', 'log-odds' or a class index, got {text!r}") from None


def _contrast(text: str | None) -> Any:
    if text is None or text == "rest":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--contrast must be a class index or 'rest', got {text!r}") from None


def _method(spec: str, composite: str, given: dict[str, Any], bundle: Any) -> tuple[str, str, dict[str, Any]]:
    """(method, composite, parameters) from ``--method`` and the LRP flags; z^B bounds default to the model's."""
    from . import composites as _composites
    from . import methods as _methods

    name, params = _methods.resolve(spec)
    if name != "lrp":
        if given:
            flags = ", --".join(sorted(given))
            raise UserError(f"--{flags} apply to LRP; give {name!r} its parameters as {name}:key=value")
        return name, composite, params
    composite = params.pop("composite", composite)
    for key, value in given.items():
        params.setdefault(key, value)
    accepted = {n: p for n, _, p in _composites.describe()}
    if "low" in accepted.get(composite, ()):
        params.setdefault("low", bundle.low.view(-1))
        params.setdefault("high", bundle.high.view(-1))
    return name, composite, params


def _layers(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@click.command("explain-dataset")
@click.argument("source")
@model_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="The store folder.")
@click.option("--method", default="lrp", show_default=True, help="Attribution method spec (relprop.methods).")
@click.option("--composite", default="epsilon-gamma-box", show_default=True,
              help="LRP composite name, or a tuned.json from relprop tune.")  # fmt: skip
@click.option("--target", default="predicted", show_default=True, help="predicted, label, log-odds, or a class index.")
@click.option("--contrast", default=None, help="Explain the target against this class index, or 'rest'.")
@click.option("--epsilon", type=float, default=None, help="LRP-ε stabiliser.")
@click.option("--gamma", type=float, default=None, help="LRP-γ parameter.")
@click.option("--alpha", type=float, default=None, help="LRP-αβ alpha.")
@click.option("--beta", type=float, default=None, help="LRP-αβ beta.")
@click.option("--low", default=None, help="z^B lower bound(s), comma-separated per channel (default: the model's).")
@click.option("--high", default=None, help="z^B upper bound(s), comma-separated per channel (default: the model's).")
@click.option("--layers", multiple=True, help="Also store the relevance at these module outputs (repeat or a,b).")
@click.option("--layer-reduce", type=click.Choice(["channels", "none"]), default="channels", show_default=True,
              help="channels: one number per channel; none: the whole map.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Samples per explainer call [32].")
@click.option("--chunk-size", type=click.IntRange(1), default=None,
              help="Samples per committed chunk, a multiple of --batch-size.")  # fmt: skip
@click.option("--float16", is_flag=True, help="Store relevance as float16 (half the size).")
@click.option("--store-inputs", is_flag=True, help="Also store the preprocessed inputs.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run on Ray: alone, a local instance; --ray=ADDRESS joins a `ray start` cluster.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="Ray workers.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Torch threads per worker (Ray: 1).")
@click.option("--resume", is_flag=True, help="Continue an existing store written with the same settings.")
@click.option("--force", is_flag=True, help="Replace an existing store.")
@click.option("--progress", type=click.Choice(["auto", "bar", "lines", "none"]), default="auto", show_default=True)
def explain_dataset_command(
    source: str,
    model_spec: str,
    weights: str | None,
    device: str,
    input_size: int | None,
    mean: str | None,
    std: str | None,
    out_dir: Path,
    method: str,
    composite: str,
    target: str,
    contrast: str | None,
    epsilon: float | None,
    gamma: float | None,
    alpha: float | None,
    beta: float | None,
    low: str | None,
    high: str | None,
    layers: tuple[str, ...],
    layer_reduce: str,
    batch_size: int | None,
    chunk_size: int | None,
    float16: bool,
    store_inputs: bool,
    ray_address: str | None,
    workers: int,
    threads: int | None,
    resume: bool,
    force: bool,
    progress: str,
) -> None:
    """Explain every sample of SOURCE into the relevance store --out.

    SOURCE is `digits` (the bundled test digits), a folder of images (class sub-folders give
    labels), a .npz (x, y) or .npy file of model inputs, or package.module:dataset (a torch
    Dataset). Put --ray after SOURCE, or write --ray=ADDRESS.
    """
    try:
        from .dataset import explain_dataset
    except ImportError as exc:
        raise UserError(f"explain-dataset needs zarr ({exc}); run pip install 'relprop[dataset]'") from None
    if resume and force:
        raise UserError("--resume continues a store and --force replaces it; pass one of them")
    class_target, top = _target(target)
    bundle = load_bundle(model_spec, weights, device, input_size, mean, std)
    flags: dict[str, Any] = {"epsilon": epsilon, "gamma": gamma, "alpha": alpha, "beta": beta}
    given = {k: v for k, v in flags.items() if v is not None}
    for key, text in (("low", low), ("high", high)):
        values = parse_floats(text, f"--{key}")
        if values is not None:
            given[key] = values
    method_name, composite_name, params = _method(method, composite, given, bundle)
    try:
        store = explain_dataset(
            bundle.model, source, out_dir, composite=composite_name, method=method_name, target=class_target, top=top,
            contrast=_contrast(contrast), batch_size=batch_size, chunk_size=chunk_size, layers=_layers(layers),
            layer_reduce=None if layer_reduce == "none" else layer_reduce, dtype="float16" if float16 else "float32",
            store_inputs=store_inputs, executor="local" if ray_address is None else "ray", workers=workers,
            ray_address=None if ray_address in (None, "local") else ray_address, threads=threads,
            device=None if device == "cpu" else device, resume=resume, overwrite=force, preprocess=bundle.preprocess,
            model_name=bundle.name, progress=progress, summary=True, **params,
        )  # fmt: skip
    except KeyboardInterrupt:
        click.echo(f"interrupted; the store {out_dir} keeps every committed chunk; --resume continues it", err=True)
        sys.exit(130)
    if store.counts()["failed"]:
        sys.exit(1)
