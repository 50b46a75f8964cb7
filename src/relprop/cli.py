"""The ``relprop`` command line.

``relprop demo`` explains real test digits with the embedded default model and writes a
contact sheet comparing LRP-0, LRP-ε, LRP-γ and the epsilon-gamma-box composite (the
comparison of the seeds), plus a JSON summary with each explanation's conservation ledger.

User errors (a missing file, an unknown name, an existing output, an unusable value, a disk
that cannot be written) print one line and exit with status 2, without a traceback; inputs
that fail one by one (unreadable, or explained as NaN/Inf) are reported and exit with status 1
once the rest is done. Ctrl-C exits with status 130 (SIGTERM 143), leaving no temporary file.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from . import composites as _composites
from . import rules as _rules
from .clitools import (
    UserError,
    load_bundle,
    model_options,
    os_error_message,
    output_names,
    prepare_output_folder,
    refuse_overwrite,
    stopping_quietly,
    write_atomic,
)
from .clitools import parse_floats as _parse_floats
from .dense_targets import is_dense_target, output_map_image, parse_dense_target, region_record
from .engine import Explainer
from .errors import InputError, NonFiniteError, RelpropError, first_line
from .finite import check_finite
from .regions import LAYOUTS, EmptyRegionError, Region, RegionTarget

__all__ = ["UserError", "main", "write_atomic"]

#: The LRP composite of ``relprop explain`` when neither ``--composite`` nor the method spec names one.
DEFAULT_COMPOSITE = "epsilon-gamma-box"
DEMO_COMPOSITES: list[tuple[str, str, dict[str, Any]]] = [
    # ASCII titles: PIL's built-in font has no Greek letters.
    ("LRP-0", "lrp-0", {}),
    ("LRP-eps 0.25", "epsilon", {"epsilon": 0.25}),
    ("LRP-gamma 0.25", "gamma", {"gamma": 0.25}),
    ("eps-gamma-box", "epsilon-gamma-box", {"epsilon": 0.25, "gamma": 0.25, "low": 0.0, "high": 1.0}),
]


class _Commands(click.Group):
    """Runs every command so that it stops quietly (Ctrl-C: 130, SIGTERM: 143, no temporary files
    left) and turns relprop's own errors and operating-system errors into one-line user errors."""

    def invoke(self, ctx: click.Context) -> Any:
        with stopping_quietly():
            try:
                return super().invoke(ctx)
            except click.UsageError as exc:  # a bad option value: one line too, not click's three
                where = exc.ctx.command_path if exc.ctx is not None else "relprop"
                raise UserError(f"{exc.format_message().rstrip('.')} (see {where} --help)") from None
            except RelpropError as exc:
                raise UserError(str(exc)) from None
            except OSError as exc:  # a file or folder the command could not use (each writer names its own)
                path = Path(exc.filename) if exc.filename else Path(".")
                raise UserError(os_error_message(path, exc, "use")) from None


class FiniteFloat(click.ParamType):
    """A finite number (``nan`` and ``inf``, which ``float()`` accepts, are refused)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: The largest class index the command line accepts (no model has more classes; torch indexes with int64).
MAX_CLASS_INDEX = 2**31 - 1


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
    prepare_output_folder(out_dir)
    write_atomic(sheet_path, lambda p: sheet.save(p, format="PNG"), force=True)
    document = {"model": "digits (embedded)", "composites": [n for _, n, _ in DEMO_COMPOSITES], "digits": summary}
    write_atomic(summary_path, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    click.echo(f"explained {len(chosen)} test digits with {len(DEMO_COMPOSITES)} rules")
    click.echo(f"contact sheet: {sheet_path}")
    click.echo(f"summary:       {summary_path}")


def _parse_target(target: str) -> tuple[Any, str]:
    """``predicted`` → (None, logit); ``log-odds`` → (None, log-odds); ``N`` → (N, logit).

    A region of a dense output (``region:...``, ``class:K``) stays text until the model is loaded
    (its output layout decides how the region is read): (text, logit).
    """
    if is_dense_target(target):
        return target, "logit"
    if target == "predicted":
        return None, "logit"
    if target == "log-odds":
        return None, "log-odds"
    try:
        return _class_index(target, "--target"), "logit"
    except ValueError:
        raise UserError(
            f"--target must be 'predicted', 'log-odds' or a class index, got {target!r} (for a dense output map: "
            "region:x0,y0,x1,y1, region:MASK.png or class:K)"
        ) from None


def _class_index(text: str, option: str) -> int:
    """An integer class index; one beyond any model's classes is refused here (torch would overflow)."""
    index = int(text)
    if abs(index) > MAX_CLASS_INDEX:
        raise UserError(
            f"{option} {text} is not a class index of any model (at most {MAX_CLASS_INDEX:,}); give a class between "
            "0 and the model's number of classes - 1"
        )
    return index


def _parse_contrast(contrast: str | None) -> Any:
    if contrast is None or contrast == "rest":
        return contrast
    try:
        return _class_index(contrast, "--contrast")
    except ValueError:
        raise UserError(f"--contrast must be a class index or 'rest', got {contrast!r}") from None


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option("--method", default="lrp", show_default=True, help="Attribution method (relprop.methods).")
@click.option(
    "--composite",
    default=None,
    help=f"LRP composite name, or a tuned.json from relprop tune (method lrp).  [default: {DEFAULT_COMPOSITE}]",
)
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="predicted, log-odds or a class index; for dense outputs region:x0,y0,x1,y1 (a box on the output map), "
    "region:MASK.png (white = region), either with ,channel=K, or class:K (the pixels predicted as class K).",
)
@click.option(
    "--contrast",
    default=None,
    help="Explain the target against this class index (a region: this channel on the same pixels), or 'rest' "
    "(a region: against everything but the region).",
)
@click.option(
    "--output",
    "output",
    default=None,
    help="Which tensor of the model's output to explain: a key (out), an index (0) or a dotted path (aux.0).  "
    "[default: the model's]",
)
@click.option(
    "--output-layout",
    type=click.Choice(LAYOUTS),
    default=None,
    help="Where a dense output keeps its channels (region targets).  [default: the model's, else channels_first]",
)
@click.option("--epsilon", type=FiniteFloat(), default=None, help="LRP-ε stabiliser.")
@click.option("--gamma", type=FiniteFloat(), default=None, help="LRP-γ parameter.")
@click.option("--alpha", type=FiniteFloat(), default=None, help="LRP-αβ alpha (alpha = beta + 1).")
@click.option("--beta", type=FiniteFloat(), default=None, help="LRP-αβ beta.")
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
@click.option("--recursive", is_flag=True, help="Also explain the images in sub-folders of input folders.")
@click.option("--overlay", is_flag=True, help="Also write the heatmap blended over the input.")
@click.option(
    "--clip-percentile",
    type=click.FloatRange(50, 100),
    default=None,
    help="Colour scale at this percentile of |R| instead of the maximum.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def explain(**options: Any) -> None:
    """Explain image files, folders or globs; write heatmaps, raw relevance and a summary.

    Output files are named after the input's stem (``scan.png`` → ``scan_heatmap.png``), or,
    when several inputs share a stem, after their whole relative path (``a.png`` →
    ``a.png_heatmap.png``, ``sub/a.png`` → ``sub_a.png_heatmap.png``).
    """
    from .images import find_inputs

    settings = ExplainSettings(**options)
    run = _prepare_explain(settings)
    found = find_inputs(settings.inputs, recursive=settings.recursive)
    outputs = [settings.output_files(name, run.layout is not None) for name in output_names(found.paths)]
    planned = [f for files in outputs for f in files.paths()]
    refuse_overwrite([*planned, settings.summary_json, settings.summary_csv], settings.force)
    prepare_output_folder(settings.out_dir)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    for _spec, message in found.problems:
        click.echo(f"error: {message}", err=True)
    loaded, records = _read_inputs(found.paths, run.bundle)
    records.extend(_explain_loaded(run, loaded, outputs))
    order = {str(p): i for i, p in enumerate(found.paths)}
    records.sort(key=lambda r: order.get(r["file"], -1))
    _write_summary(run, records)
    ok = sum(1 for r in records if r["status"] == "ok")
    failures = len(found.problems) + len(records) - ok
    click.echo(
        f"explained {ok} of {ok + failures} inputs; outputs in {settings.out_dir}; summary: {settings.summary_json}"
    )
    if failures:
        sys.exit(1)


@dataclass(frozen=True)
class OutputFiles:
    """The files ``relprop explain`` writes for one input."""

    heatmap: Path
    relevance: Path
    overlay: Path | None
    output_map: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.heatmap, self.relevance, self.overlay, self.output_map) if p is not None]


@dataclass(frozen=True)
class ExplainSettings:
    """The options of ``relprop explain``, as click parsed them (see its ``--help``)."""

    inputs: tuple[str, ...]
    model_spec: str
    weights: str | None
    device: str
    input_size: int | None
    mean: str | None
    std: str | None
    method: str
    composite: str | None
    target: str
    contrast: str | None
    output: str | None
    output_layout: str | None
    epsilon: float | None
    gamma: float | None
    alpha: float | None
    beta: float | None
    low: str | None
    high: str | None
    out_dir: Path
    batch_size: int
    recursive: bool
    overlay: bool
    clip_percentile: float | None
    force: bool

    @property
    def rule_params(self) -> dict[str, float | None]:
        """The LRP parameters given as flags (``None``: not given)."""
        return {"epsilon": self.epsilon, "gamma": self.gamma, "alpha": self.alpha, "beta": self.beta}

    @property
    def summary_json(self) -> Path:
        return self.out_dir / "summary.json"

    @property
    def summary_csv(self) -> Path:
        return self.out_dir / "summary.csv"

    def output_files(self, name: str, dense: bool = False) -> OutputFiles:
        """Where the outputs of the input with output name ``name`` go (``dense``: also its output map)."""
        overlay = self.out_dir / f"{name}_overlay.png" if self.overlay else None
        output_map = self.out_dir / f"{name}_output.png" if dense else None
        return OutputFiles(
            self.out_dir / f"{name}_heatmap.png", self.out_dir / f"{name}_relevance.npy", overlay, output_map
        )


@dataclass
class _ExplainRun:
    """A prepared ``relprop explain``: the model, the method and what it explains."""

    settings: ExplainSettings
    bundle: Any
    label: str
    method: Callable[[torch.Tensor, Any], Any]
    params: dict[str, Any]
    class_index: Any
    layout: str | None = None


def _prepare_explain(settings: ExplainSettings) -> _ExplainRun:
    """Check the target options, load the model and resolve the method (all before any input is read)."""
    class_index, top = _parse_target(settings.target)
    contrast = _parse_contrast(settings.contrast)
    bundle = load_bundle(
        settings.model_spec, settings.weights, settings.device, settings.input_size, settings.mean, settings.std
    )
    output = settings.output if settings.output is not None else bundle.output
    class_index, layout = _dense_target(bundle, settings.target, class_index, settings.output, settings.output_layout)
    bounds = _bounds(bundle, settings.low, settings.high)
    label, method, params = _method_runner(
        bundle, settings.method, settings.composite, settings.rule_params, bounds, top, contrast, output
    )
    if (settings.low is not None or settings.high is not None) and "low" not in params:
        raise UserError(
            f"--low and --high set z^B bounds, which {label} does not use; drop them or choose a composite with a "
            "z^B input rule (e.g. epsilon-gamma-box)"
        )
    return _ExplainRun(settings, bundle, label, method, params, class_index, layout)


def _dense_target(
    bundle: Any, text: str, target: Any, output: str | None = None, output_layout: str | None = None
) -> tuple[Any, str | None]:
    """The region a ``region:``/``class:`` target names, and the output layout (``None``: not dense).

    ``text`` is the ``--target`` value, ``target`` what :func:`_parse_target` made of it; ``output``
    and ``output_layout`` the options of the same names. A region target on a classifier, and a
    class target on a model known to be dense, are refused.
    """
    from .models.loading import is_classifier

    layout = output_layout or bundle.output_layout
    if not isinstance(target, str):
        if bundle.dense and output is None:
            raise UserError(
                f"model {bundle.name} returns a dense output map, not class scores; explain a region of it with "
                "--target region:x0,y0,x1,y1, region:MASK.png or class:K"
            )
        return target, None
    if is_classifier(bundle) and output is None:
        raise UserError(
            f"--target {text} explains a region of a dense output map, but model {bundle.name} returns "
            "class scores; use --target predicted or a class index, or a segmentation model (e.g. digit-scenes)"
        )
    layout = layout or "channels_first"
    return parse_dense_target(text, layout), layout


def _explain_loaded(
    run: _ExplainRun, loaded: list[tuple[int, Any, Any]], outputs: list[OutputFiles]
) -> list[dict[str, Any]]:
    """Explain the read inputs in batches of one shape, write their files; one record per input."""
    from rich.progress import Progress

    by_shape: dict[tuple[int, ...], list[tuple[int, Any, Any]]] = {}
    for entry in loaded:
        by_shape.setdefault(tuple(entry[1].shape), []).append(entry)
    batch_size = run.settings.batch_size
    records: list[dict[str, Any]] = []
    with Progress(disable=len(loaded) <= 5, transient=True, console=_stderr_console()) as progress:
        task = progress.add_task("explaining", total=len(loaded))
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                records.extend(_explain_batch(run, batch, outputs))
                progress.advance(task, len(batch))
    return records


def _explain_batch(
    run: _ExplainRun, batch: list[tuple[int, Any, Any]], outputs: list[OutputFiles]
) -> list[dict[str, Any]]:
    """Explain one batch; write each input's heatmap, relevance (and overlay); return their records."""
    x = torch.stack([b[1] for b in batch]).to(run.settings.device)
    try:
        result = run.method(x, run.class_index)
    except EmptyRegionError as exc:
        if not (isinstance(run.class_index, Region) and run.class_index.kind == "class"):
            raise UserError(str(exc)) from None
        # The pixels predicted as a class depend on the input: one without them is that input's error.
        if len(batch) > 1:
            return [record for entry in batch for record in _explain_batch(run, [entry], outputs)]
        message = (
            f"{batch[0][2].path}: no output position is predicted as class {run.class_index.class_index}; choose a "
            "class the model predicts for this input"
        )
        click.echo(f"error: {message}", err=True)
        return [{"file": str(batch[0][2].path), "status": "error", "error": message}]
    except InputError as exc:
        raise UserError(f"{str(exc).rstrip('.')}; check --input-size, --mean and --std for this model") from None
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        first = first_line(exc)
        raise UserError(
            f"the model failed on inputs of shape {tuple(x.shape)} ({first}); check --input-size, --mean "
            "and --std for this model"
        ) from None
    for note in getattr(run.class_index, "notes", []):
        click.echo(f"note: {note}", err=True)
    dense = isinstance(result.target, RegionTarget)
    with torch.no_grad():
        probabilities = None if dense else torch.softmax(result.output.float(), 1)
    records = []
    for k, (position, tensor, item) in enumerate(batch):
        try:
            check_finite(result, k, str(item.path))
        except NonFiniteError as exc:
            click.echo(f"error: {exc}", err=True)
            records.append({"file": str(item.path), "status": "error", "error": str(exc)})
            continue
        relevance = result.relevance[k].detach().cpu()
        files = outputs[position]
        _write_outputs(run, files, relevance, tensor)
        if files.output_map is not None:
            _write_output_map(files.output_map, result.output[k], run.layout or "channels_first")
        scores = None if probabilities is None else probabilities[k]
        records.append(_record(run, item, files, result, k, scores, relevance))
    return records


def _write_outputs(run: _ExplainRun, files: OutputFiles, relevance: torch.Tensor, tensor: torch.Tensor) -> None:
    """The heatmap (enlarged to 128 px when small), the raw relevance and, if asked, the overlay."""
    from . import viz

    clip = run.settings.clip_percentile
    size = 128 if max(relevance.shape[-2:]) < 128 else None
    heat = viz.heatmap(relevance, clip, size=size)
    write_atomic(files.heatmap, lambda p: heat.save(p, format="PNG"), force=True)
    write_atomic(files.relevance, lambda p: _save_npy(p, relevance.numpy()), force=True)
    if files.overlay is not None:
        picture = run.bundle.display(tensor)
        if size is not None:
            picture = picture.resize((size, size), resample=0)
        blended = viz.overlay(picture, relevance, clip_percentile=clip)
        write_atomic(files.overlay, lambda p: blended.save(p, format="PNG"), force=True)


def _write_output_map(path: Path, output: torch.Tensor, layout: str) -> None:
    """The model's output map, one pixel per output position (so that box coordinates can be read off it)."""
    picture = output_map_image(output, layout)
    write_atomic(path, lambda p: picture.save(p, format="PNG"), force=True)


def _record(
    run: _ExplainRun,
    item: Any,
    files: OutputFiles,
    result: Any,
    k: int,
    probabilities: torch.Tensor | None,
    relevance: torch.Tensor,
) -> dict[str, Any]:
    """The summary row of sample ``k`` of ``result`` (a region target: its description and score)."""
    ledger = result.ledger
    if probabilities is None:
        described = region_record(result.target, k)
        about: dict[str, Any] = {
            "output_shape": list(result.output.shape[1:]),
            "target": result.target.to_dict(k),
            "target_name": described.pop("target_description"),
            **described,
            "region_score": float(ledger.score[k]),
        }
    else:
        predicted = int(probabilities.argmax())
        explained = int(result.target[k])
        about = {
            "predicted": predicted,
            "predicted_name": run.bundle.class_name(predicted),
            "probability": round(float(probabilities[predicted]), 6),
            "target": explained,
            "target_name": run.bundle.class_name(explained),
        }
    return {
        "file": str(item.path),
        "status": "ok",
        **about,
        "method": run.label,
        "explained_score": float(ledger.score[k]),
        "relevance_sum": float(relevance.sum()),
        "absorbed": float(ledger.absorbed[k]),
        "residual": float(ledger.residual[k]),
        "heatmap": str(files.heatmap),
        "relevance": str(files.relevance),
        "overlay": None if files.overlay is None else str(files.overlay),
        **({} if files.output_map is None else {"output_map": str(files.output_map)}),
        "notes": item.notes,
    }


def _write_summary(run: _ExplainRun, records: list[dict[str, Any]]) -> None:
    """``summary.json`` (model, method, parameters, one record per input) and ``summary.csv``."""
    params = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in run.params.items()}
    document = {"model": run.bundle.name, "method": run.label, "params": params, "inputs": records}
    settings = run.settings
    write_atomic(settings.summary_json, lambda p: p.write_text(json.dumps(document, indent=2)), force=True)
    write_atomic(settings.summary_csv, lambda p: _write_csv(p, records), force=True)


def _bounds(bundle: Any, low: str | None, high: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """z^B bounds: the options if given, else what the model's preprocessing makes of pixels in [0, 1]."""
    low_values, high_values = _parse_floats(low, "--low"), _parse_floats(high, "--high")
    bounds_low = torch.tensor(low_values) if low_values else bundle.low
    bounds_high = torch.tensor(high_values) if high_values else bundle.high
    return bounds_low.view(-1), bounds_high.view(-1)


def _method_runner(
    bundle: Any,
    spec: str,
    composite: str | None,
    cli_params: dict[str, Any],
    bounds: tuple[torch.Tensor, torch.Tensor],
    top: str,
    contrast: Any,
    output: Any = None,
) -> tuple[str, Callable[[torch.Tensor, Any], Any], dict[str, Any]]:
    """Turn a method spec (``lrp:epsilon``, ``smoothgrad:n=20`` ...) into a label and a callable.

    LRP options given as flags (``--composite``, ``--epsilon`` ...) apply where the spec leaves
    them open (``composite=None``: not given, :data:`DEFAULT_COMPOSITE`), and are refused for
    other methods; z^B bounds default to the model's.
    """
    from . import methods as _methods
    from .api import explain as explain_fn

    name, params = _methods.resolve(spec)
    given = {k: v for k, v in cli_params.items() if v is not None}
    from .tune_cli import tuned_runner  # --composite tuned.json (relprop tune)
    from .tuning.resolve import is_tuned_file

    if name == "lrp" and is_tuned_file(composite or params.get("composite")):
        path = composite or params.pop("composite")
        return tuned_runner(bundle.model, path, {**given, **params}, top, contrast)
    if name == "lrp":
        named = params.pop("composite", None)
        if named is not None and composite is not None and named != composite:
            raise UserError(
                f"--method {spec} names composite {named!r} and --composite {composite!r}; give one of them"
            )
        composite = named or composite or DEFAULT_COMPOSITE
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
        # NaN or Inf becomes one error line per input (check_finite), not the end of the batch.
        explainer = Explainer(
            bundle.model, composite, top=top, contrast=contrast, output=output, nonfinite="report", **params
        )
        return f"lrp:{composite}", explainer, params
    if composite is not None:
        raise UserError(f"--composite applies to method lrp, not to {name!r}; drop it or use --method lrp")
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
        return explain_fn(bundle.model, x, target, method=name, nonfinite="report", output=output, **params)

    return spec, run_other, params


def _read_inputs(paths: list[Path], bundle: Any) -> tuple[list[tuple[int, Any, Any]], list[dict[str, Any]]]:
    """Read and preprocess each file; failures print one line and become error records.

    Conversions and caveats (a picture clearly outside the model's domain) are printed as
    notes and kept in the input's record.
    """
    from .images import MAX_PIXELS, ImageReadError, read_image
    from .models.inputs import model_input

    loaded: list[tuple[int, Any, Any]] = []
    errors: list[dict[str, Any]] = []
    for position, path in enumerate(paths):
        try:
            item = read_image(path)
            prepared = model_input(bundle, item.image, str(path), MAX_PIXELS)
        except ImageReadError as exc:
            click.echo(f"error: {exc}", err=True)
            errors.append({"file": str(path), "status": "error", "error": str(exc)})
            continue
        item.notes += [f"{path.name}: {note}" for note in prepared.notes]
        item.notes += [f"{path.name}: out of the model's domain? {caveat}" for caveat in prepared.caveats]
        for note in item.notes:
            click.echo(f"note: {note}", err=True)
        loaded.append((position, prepared.tensor, item))
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
    if any("region_score" in record for record in records):  # a region target: what it was and its score
        columns[columns.index("method") : columns.index("method")] = [
            "target_kind", "target_channels", "target_area", "region_score"
        ]  # fmt: skip
        columns.insert(columns.index("overlay") + 1, "output_map")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = dict(record)
            if isinstance(row.get("target"), dict):
                row["target"] = row.get("target_kind")
            writer.writerow(row)


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
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="predicted or a class index; for dense models region:x0,y0,x1,y1|MASK.png[,channel=K] or class:K.",
)
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
    from .images import find_inputs

    class_index, top = _parse_target(target)
    if top != "logit":
        raise UserError("compare explains logits; use `relprop explain --target log-odds` for log-odds")
    bundle = load_bundle(model_spec, weights, device, input_size, mean, std)
    class_index, _ = _dense_target(bundle, target, class_index)
    bounds = _bounds(bundle, None, None)
    runners = [
        _method_runner(bundle, spec, None, {}, bounds, "logit", None, bundle.output)
        for spec in (specs or DEFAULT_COMPARE)
    ]
    summary_file = out_file.with_suffix(".json")
    refuse_overwrite([out_file, summary_file], force, "--out file")
    prepare_output_folder(out_file.parent)
    found = find_inputs(inputs)
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    for _spec, message in found.problems:
        click.echo(f"error: {message}", err=True)
    loaded, errors = _read_inputs(found.paths, bundle)
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
                check_finite(result, k, f"{loaded[k][2].path} with method {label}")
                rows[k].append(viz.heatmap(result.relevance[k].detach().cpu(), clip_percentile))
                explained = result.target
                summary[k]["methods"][label] = {
                    "target": explained.to_dict(k) if isinstance(explained, RegionTarget) else int(explained[k]),
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
    if errors or found.problems:
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
    from .concepts_cli import concepts
    from .dataset_cli import explain_dataset_command
    from .evaluate import evaluate
    from .spray_cli import spray
    from .table_cli import explain_table
    from .text_cli import explain_text
    from .tune_cli import tune_command
    from .web.command import serve

    main.add_command(concepts)
    main.add_command(evaluate)
    main.add_command(explain_dataset_command)
    main.add_command(explain_table)
    main.add_command(explain_text)
    main.add_command(serve)
    main.add_command(spray)
    main.add_command(tune_command)


_register_commands()


def run() -> None:
    """Console entry point (``relprop``)."""
    main(prog_name="relprop")


if __name__ == "__main__":
    run()
