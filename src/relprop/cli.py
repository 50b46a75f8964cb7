"""The ``relprop`` command line.

``relprop demo`` explains real test digits with the embedded default model and writes a
contact sheet comparing LRP-0, LRP-ε, LRP-γ and the epsilon-gamma-box composite (the
comparison of the seeds), plus a JSON summary with each explanation's conservation ledger.

User errors (a missing file, an unknown name, an existing output) print one line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from . import composites as _composites
from . import rules as _rules
from .clitools import UserError, refuse_overwrite, write_atomic
from .engine import Explainer
from .errors import RelpropError, first_line

__all__ = ["UserError", "main", "write_atomic"]

DEMO_COMPOSITES: list[tuple[str, str, dict[str, Any]]] = [
    # ASCII titles: PIL's built-in font has no Greek letters.
    ("LRP-0", "lrp-0", {}),
    ("LRP-eps 0.25", "epsilon", {"epsilon": 0.25}),
    ("LRP-gamma 0.25", "gamma", {"gamma": 0.25}),
    ("eps-gamma-box", "epsilon-gamma-box", {"epsilon": 0.25, "gamma": 0.25, "low": 0.0, "high": 1.0}),
]


class _Commands(click.Group):
    """Turns relprop's own errors (bad names, files, options) into one-line user errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RelpropError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relprop")
def main() -> None:
    """Explain neural-network predictions with Layer-wise Relevance Propagation."""


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-demo"),
    show_default=True,
    help="Folder for the contact sheet and summary.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 360),
    default=10,
    show_default=True,
    help="How many test digits to explain (one per class first).",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def demo(out_dir: Path, count: int, force: bool) -> None:
    """Explain real test digits with the embedded model; write a contact sheet and a summary."""
    from . import viz
    from .models.digits import digits_test_set, load_digits_model

    model = load_digits_model()
    test = digits_test_set()
    # One digit of each class first, then the rest in order: every class is shown.
    first_of_class = [int((test.labels == c).nonzero()[0]) for c in range(10)]
    order = first_of_class + [i for i in range(len(test.labels)) if i not in first_of_class]
    chosen = order[:count]
    x = test.images[chosen]
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1)
    rows: list[list[Any]] = [[viz.to_image(img)] for img in x]
    summary: list[dict[str, Any]] = [
        {
            "test_index": int(i),
            "dataset_index": int(test.indices[i]),
            "label": int(test.labels[i]),
            "predicted": int(probabilities[k].argmax()),
            "probability": round(float(probabilities[k].max()), 6),
            "explanations": {},
        }
        for k, i in enumerate(chosen)
    ]
    for title, name, params in DEMO_COMPOSITES:
        result = Explainer(model, name, **params)(x)
        for k in range(len(chosen)):
            rows[k].append(viz.heatmap(result.relevance[k]))
            ledger = result.ledger
            summary[k]["explanations"][name] = {
                "title": title,
                "params": params,
                "explained_score": float(ledger.score[k]),
                "input_relevance": float(ledger.input_relevance[k]),
                "absorbed": float(ledger.absorbed[k]),
                "residual": float(ledger.residual[k]),
            }
    row_titles = [f"{s['label']}->{s['predicted']}" for s in summary]
    sheet = viz.grid(rows, column_titles=["input"] + [t for t, _, _ in DEMO_COMPOSITES], row_titles=row_titles)
    sheet_path = out_dir / "contact_sheet.png"
    summary_path = out_dir / "summary.json"
    refuse_overwrite([sheet_path, summary_path], force)
    write_atomic(sheet_path, lambda p: sheet.save(p, format="PNG"), force=True)
    document = {"model": "digits (embedded)", "composites": [n for _, n, _ in DEMO_COMPOSITES], "digits": summary}
    write_atomic(summary_path, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    click.echo(f"explained {len(chosen)} test digits with {len(DEMO_COMPOSITES)} rules")
    click.echo(f"contact sheet: {sheet_path}")
    click.echo(f"summary:       {summary_path}")


def _parse_target(target: str) -> tuple[Any, str]:
    """``predicted`` → (None, logit); ``log-odds`` → (None, log-odds); ``N`` → (N, logit)."""
    if target == "predicted":
        return None, "logit"
    if target == "log-odds":
        return None, "log-odds"
    try:
        return int(target), "logit"
    except ValueError:
        raise UserError(f"--target must be 'predicted', 'log-odds' or a class index, got {target!r}") from None


def _parse_contrast(contrast: str | None) -> Any:
    if contrast is None or contrast == "rest":
        return contrast
    try:
        return int(contrast)
    except ValueError:
        raise UserError(f"--contrast must be a class index or 'rest', got {contrast!r}") from None


def _parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _output_names(paths: list[Path]) -> list[str]:
    """File stems, made unique (``name``, ``name-2`` ...) when two inputs share one."""
    names: list[str] = []
    used: dict[str, int] = {}
    for path in paths:
        stem = path.stem or "input"
        count = used.get(stem, 0) + 1
        used[stem] = count
        names.append(stem if count == 1 else f"{stem}-{count}")
    return names


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and feed a model, shared by every command that loads one."""
    options = [
        click.option("--model", "model_spec", default="digits", show_default=True,
                     help="digits, a torchvision name, timm:NAME, a saved model or TorchScript file, "
                     "or package.module:factory."),
        click.option("--weights", default=None, help="State-dict file (or torchvision weights name, e.g. DEFAULT)."),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda."),
        click.option("--input-size", type=int, default=None,
                     help="Input size for models without known preprocessing."),
        click.option("--mean", default=None,
                     help="Normalisation mean, comma-separated (models without known preprocessing)."),
        click.option("--std", default=None, help="Normalisation std, comma-separated."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def load_bundle(
    model_spec: str, weights: str | None, device: str, input_size: int | None, mean: str | None, std: str | None
) -> Any:
    """Load the model a command's options name, and print what the user should know about it."""
    from .models.loading import load_model

    bundle = load_model(
        model_spec, weights, device, input_size=input_size, mean=_parse_floats(mean, "--mean"),
        std=_parse_floats(std, "--std"),
    )  # fmt: skip
    for note in bundle.notes:
        click.echo(f"note: {note}", err=True)
    return bundle


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option("--method", default="lrp", show_default=True, help="Attribution method (relprop.methods).")
@click.option("--composite", default="epsilon-gamma-box", show_default=True, help="LRP composite name.")
@click.option("--target", default="predicted", show_default=True, help="predicted, log-odds, or a class index.")
@click.option("--contrast", default=None, help="Explain the target against this class index, or 'rest'.")
@click.option("--epsilon", type=float, default=None, help="LRP-ε stabiliser.")
@click.option("--gamma", type=float, default=None, help="LRP-γ parameter.")
@click.option("--alpha", type=float, default=None, help="LRP-αβ alpha (alpha = beta + 1).")
@click.option("--beta", type=float, default=None, help="LRP-αβ beta.")
@click.option("--low", default=None, help="z^B lower bound(s), comma-separated per channel (default: the model's).")
@click.option("--high", default=None, help="z^B upper bound(s), comma-separated per channel (default: the model's).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-out"),
    show_default=True,
    help="Output folder.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--overlay", is_flag=True, help="Also write the heatmap blended over the input.")
@click.option(
    "--clip-percentile",
    type=click.FloatRange(50, 100),
    default=None,
    help="Colour scale at this percentile of |R| instead of the maximum.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def explain(
    inputs: tuple[str, ...],
    model_spec: str,
    weights: str | None,
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
    out_dir: Path,
    device: str,
    batch_size: int,
    overlay: bool,
    clip_percentile: float | None,
    input_size: int | None,
    mean: str | None,
    std: str | None,
    force: bool,
) -> None:
    """Explain image files, folders or globs; write heatmaps, raw relevance and a summary."""

    from . import viz
    from .images import collect_inputs

    class_index, top = _parse_target(target)
    contrast_value = _parse_contrast(contrast)
    bundle = load_bundle(model_spec, weights, device, input_size, mean, std)
    cli_params: dict[str, Any] = {"epsilon": epsilon, "gamma": gamma, "alpha": alpha, "beta": beta}
    bounds = _bounds(bundle, low, high)
    method_label, run_method, params = _method_runner(
        bundle, method, composite, cli_params, bounds, top, contrast_value
    )

    paths, problems = collect_inputs(list(inputs))
    names = _output_names(paths)
    outputs: list[list[Path]] = []
    for name in names:
        files = [out_dir / f"{name}_heatmap.png", out_dir / f"{name}_relevance.npy"]
        if overlay:
            files.append(out_dir / f"{name}_overlay.png")
        outputs.append(files)
    summary_json, summary_csv = out_dir / "summary.json", out_dir / "summary.csv"
    refuse_overwrite([f for files in outputs for f in files] + [summary_json, summary_csv], force)

    failures = len(problems)
    for _spec, message in problems:
        click.echo(f"error: {message}", err=True)
    loaded, records = _read_inputs(paths, bundle)
    failures += len(records)

    from rich.progress import Progress

    by_shape: dict[tuple[int, ...], list[tuple[int, Any, Any]]] = {}
    for entry in loaded:
        by_shape.setdefault(tuple(entry[1].shape), []).append(entry)
    results: dict[int, dict[str, Any]] = {}
    with Progress(disable=len(loaded) <= 5, transient=True, console=_stderr_console()) as progress:
        task = progress.add_task("explaining", total=len(loaded))
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                x = torch.stack([b[1] for b in batch]).to(device)
                try:
                    result = run_method(x, class_index)
                except RelpropError as exc:
                    raise UserError(str(exc)) from None
                except RuntimeError as exc:
                    first = first_line(exc)
                    raise UserError(
                        f"the model failed on inputs of shape {tuple(x.shape)} ({first}); check --input-size, --mean "
                        "and --std for this model"
                    ) from None
                with torch.no_grad():
                    probabilities = torch.softmax(result.output.float(), 1)
                for k, (position, tensor, item) in enumerate(batch):
                    relevance = result.relevance[k].detach().cpu()
                    files = outputs[position]
                    size = 128 if max(relevance.shape[-2:]) < 128 else None
                    heat = viz.heatmap(relevance, clip_percentile, size=size)
                    write_atomic(files[0], lambda p, heat=heat: heat.save(p, format="PNG"), force=True)
                    write_atomic(files[1], lambda p, r=relevance: _save_npy(p, r.numpy()), force=True)
                    if overlay:
                        picture = bundle.display(tensor)
                        if size is not None:
                            picture = picture.resize((size, size), resample=0)
                        blended = viz.overlay(picture, relevance, clip_percentile=clip_percentile)
                        write_atomic(files[2], lambda p, b=blended: b.save(p, format="PNG"), force=True)
                    predicted = int(probabilities[k].argmax())
                    explained = int(result.target[k])
                    ledger = result.ledger
                    results[position] = {
                        "file": str(item.path),
                        "status": "ok",
                        "predicted": predicted,
                        "predicted_name": bundle.class_name(predicted),
                        "probability": round(float(probabilities[k, predicted]), 6),
                        "target": explained,
                        "target_name": bundle.class_name(explained),
                        "method": method_label,
                        "explained_score": float(ledger.score[k]),
                        "relevance_sum": float(relevance.sum()),
                        "absorbed": float(ledger.absorbed[k]),
                        "residual": float(ledger.residual[k]),
                        "heatmap": str(files[0]),
                        "relevance": str(files[1]),
                        "overlay": str(files[2]) if overlay else None,
                        "notes": item.notes,
                    }
                progress.advance(task, len(batch))
    records.extend(results.values())
    order = {str(p): i for i, p in enumerate(paths)}
    records.sort(key=lambda r: order.get(r["file"], -1))
    document = {
        "model": bundle.name,
        "method": method_label,
        "params": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in params.items()},
        "inputs": records,
    }
    write_atomic(summary_json, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    write_atomic(summary_csv, lambda p: _write_csv(p, records), force=True)
    ok = sum(1 for r in records if r["status"] == "ok")
    click.echo(f"explained {ok} of {ok + failures} inputs; outputs in {out_dir}; summary: {summary_json}")
    if failures:
        sys.exit(1)


def _bounds(bundle: Any, low: str | None, high: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """z^B bounds: the options if given, else what the model's preprocessing makes of pixels in [0, 1]."""
    low_values, high_values = _parse_floats(low, "--low"), _parse_floats(high, "--high")
    bounds_low = torch.tensor(low_values) if low_values else bundle.low
    bounds_high = torch.tensor(high_values) if high_values else bundle.high
    return bounds_low.view(-1), bounds_high.view(-1)


def _method_runner(
    bundle: Any,
    spec: str,
    composite: str,
    cli_params: dict[str, Any],
    bounds: tuple[torch.Tensor, torch.Tensor],
    top: str,
    contrast: Any,
) -> tuple[str, Callable[[torch.Tensor, Any], Any], dict[str, Any]]:
    """Turn a method spec (``lrp:epsilon``, ``smoothgrad:n=20`` ...) into a label and a callable.

    LRP options given as flags (``--composite``, ``--epsilon`` ...) apply where the spec leaves
    them open; z^B bounds default to the model's.
    """
    from . import methods as _methods
    from .engine import explain as explain_fn

    name, params = _methods.resolve(spec)
    given = {k: v for k, v in cli_params.items() if v is not None}
    if name == "lrp":
        composite = params.pop("composite", composite)
        accepted = {n: p for n, _, p in _composites.describe()}
        if composite not in accepted:
            raise UserError(f"unknown composite {composite!r}; choose one of: {', '.join(accepted)}")
        for key, value in given.items():
            params.setdefault(key, value)
        if "low" in accepted[composite]:
            params.setdefault("low", bounds[0])
            params.setdefault("high", bounds[1])
        unknown = sorted(set(params) - set(accepted[composite]) - {"top", "contrast", "canonize", "ledger"})
        if unknown:
            raise UserError(
                f"composite {composite!r} does not take --{', --'.join(unknown)}; its parameters are "
                f"{', '.join(accepted[composite])}"
            )
        explainer = Explainer(bundle.model, composite, top=top, contrast=contrast, **params)
        return f"lrp:{composite}", explainer, params
    if top != "logit" or contrast is not None:
        raise UserError(f"--target log-odds and --contrast apply to LRP, not to method {name!r}")
    if given:
        raise UserError(
            f"--{', --'.join(sorted(given))} apply to LRP; give {name!r} its parameters as {name}:key=value"
        )
    accepted_params = _methods.parameters(name)
    if "low" in accepted_params:
        params.setdefault("low", bounds[0])
        params.setdefault("high", bounds[1])

    def run_other(x: torch.Tensor, target: Any) -> Any:
        return explain_fn(bundle.model, x, target, method=name, **params)

    return spec, run_other, params


def _read_inputs(paths: list[Path], bundle: Any) -> tuple[list[tuple[int, Any, Any]], list[dict[str, Any]]]:
    """Read and preprocess each file; failures print one line and become error records."""
    from .images import ImageReadError, read_image

    loaded: list[tuple[int, Any, Any]] = []
    errors: list[dict[str, Any]] = []
    for position, path in enumerate(paths):
        try:
            item = read_image(path)
        except ImageReadError as exc:
            click.echo(f"error: {exc}", err=True)
            errors.append({"file": str(path), "status": "error", "error": str(exc)})
            continue
        if bundle.channels == 3 and item.image.mode == "L":
            item.notes.append(f"{path.name}: grey-level image repeated on three channels for an RGB model")
        elif bundle.channels == 1 and item.image.mode == "RGB" and bundle.name != "digits":
            item.notes.append(f"{path.name}: colour image converted to grey for a one-channel model")
        for note in item.notes:
            click.echo(f"note: {note}", err=True)
        loaded.append((position, bundle.preprocess(item.image), item))
    return loaded, errors


def _save_npy(path: Path, array: Any) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array)


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    import csv

    columns = [
        "file", "status", "predicted", "predicted_name", "probability", "target", "target_name", "method",
        "explained_score", "relevance_sum", "absorbed", "residual", "heatmap", "relevance", "overlay", "error",
    ]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


DEFAULT_COMPARE = (
    "lrp:epsilon-gamma-box",
    "lrp:epsilon-plus-flat",
    "gradient",
    "gradient-x-input",
    "integrated-gradients",
    "guided-backprop",
    "deeplift",
)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option(
    "--method",
    "specs",
    multiple=True,
    help="A method spec (repeat the option): lrp:COMPOSITE, gradient, smoothgrad:n=20,sigma=0.1 ... "
    f"Default: {', '.join(DEFAULT_COMPARE)}.",
)
@click.option("--target", default="predicted", show_default=True, help="predicted or a class index.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compare.png"),
    show_default=True,
    help="Contact sheet (PNG); a JSON summary is written beside it.",
)
@click.option("--clip-percentile", type=click.FloatRange(50, 100), default=None)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def compare(
    inputs: tuple[str, ...],
    model_spec: str,
    weights: str | None,
    specs: tuple[str, ...],
    target: str,
    out_file: Path,
    device: str,
    clip_percentile: float | None,
    input_size: int | None,
    mean: str | None,
    std: str | None,
    force: bool,
) -> None:
    """Put several methods side by side: one row per input, one column per method."""
    from . import viz
    from .images import collect_inputs

    class_index, top = _parse_target(target)
    if top != "logit":
        raise UserError("compare explains logits; use `relprop explain --target log-odds` for log-odds")
    bundle = load_bundle(model_spec, weights, device, input_size, mean, std)
    bounds = _bounds(bundle, None, None)
    runners = [
        _method_runner(bundle, spec, "epsilon-gamma-box", {}, bounds, "logit", None)
        for spec in (specs or DEFAULT_COMPARE)
    ]
    summary_file = out_file.with_suffix(".json")
    refuse_overwrite([out_file, summary_file], force, "--out file")
    paths, problems = collect_inputs(list(inputs))
    for _spec, message in problems:
        click.echo(f"error: {message}", err=True)
    loaded, errors = _read_inputs(paths, bundle)
    if not loaded:
        raise UserError("no input could be read; nothing to compare")
    x = torch.stack([entry[1] for entry in loaded]).to(device)
    rows = [[bundle.display(entry[1])] for entry in loaded]
    summary: list[dict[str, Any]] = [{"file": str(entry[2].path), "methods": {}} for entry in loaded]
    from rich.progress import Progress

    with Progress(disable=len(runners) <= 2, transient=True, console=_stderr_console()) as progress:
        task = progress.add_task("methods", total=len(runners))
        for label, run_method, _ in runners:
            try:
                result = run_method(x, class_index)
            except RuntimeError as exc:
                first = first_line(exc)
                raise UserError(f"method {label} failed on inputs of shape {tuple(x.shape)} ({first})") from None
            for k in range(len(loaded)):
                rows[k].append(viz.heatmap(result.relevance[k].detach().cpu(), clip_percentile))
                summary[k]["methods"][label] = {
                    "target": int(result.target[k]),
                    "explained_score": float(result.score[k]),
                    "relevance_sum": float(result.relevance[k].sum()),
                }
            progress.advance(task)
    titles = ["input", *[label for label, _, _ in runners]]
    sheet = viz.grid(rows, column_titles=titles, row_titles=[Path(s["file"]).stem[:12] for s in summary])
    write_atomic(out_file, lambda p: sheet.save(p, format="PNG"), force=True)
    document = {"model": bundle.name, "methods": titles[1:], "inputs": summary, "errors": errors}
    write_atomic(summary_file, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    click.echo(f"compared {len(runners)} methods on {len(loaded)} inputs: {out_file}")
    if errors or problems:
        sys.exit(1)


@main.command("composites")
def list_composites() -> None:
    """List the named composites with their parameters."""
    for name, description, params in _composites.describe():
        click.echo(f"{name:<26} {description}")
        click.echo(f"{'':<26} parameters: {', '.join(params)}")


@main.command("rules")
def list_rules() -> None:
    """List the rules with the operations they apply to."""
    for name in _rules.__all__:
        cls = getattr(_rules, name)
        if isinstance(cls, type) and issubclass(cls, _rules.Rule) and cls not in (_rules.Rule, _rules.LinearRule):
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            kinds = ", ".join(sorted(cls.kinds))
            click.echo(f"{name:<26} {doc}")
            click.echo(f"{'':<26} applies to: {kinds}")


def _register_commands() -> None:
    # Commands with heavy dependencies (FastAPI, matplotlib) import them only when they run.
    from .evaluate import evaluate
    from .text_cli import explain_text
    from .tune_cli import tune_command
    from .web.command import serve

    main.add_command(evaluate)
    main.add_command(explain_text)
    main.add_command(serve)
    main.add_command(tune_command)


_register_commands()


def run() -> None:
    """Console entry point (``relprop``)."""
    main(prog_name="relprop")


if __name__ == "__main__":
    run()
