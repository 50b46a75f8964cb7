"""``relprop tune``: choose a composite and its parameters by measured faithfulness, write ``tuned.json``.

::

    relprop tune --model digits --data digits --objective pixel-flipping:replacement=blur --out tuned.json
    relprop tune --data marked.pt --objective localisation --target 3 --out tuned.json
    relprop tune --model minilm --data pairs.tsv --objective token-deletion --out tuned-text.json
    relprop tune --data digits --objective pixel-flipping:replacement=dataset-mean --reference none,mean

The command object :data:`tune_command` is registered on the ``relprop`` group by
:mod:`relprop.cli`. It shows every candidate as it is measured (search and held-out score,
rate, ETA), prints the table of all candidates and writes the tuned composite atomically;
``--held-out-data FILE`` also writes the held-out split, so that
``relprop evaluate`` can measure the chosen setting on it (the command is printed).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import torch

from .clitools import UserError, refuse_overwrite, write_atomic
from .errors import RelpropError

__all__ = ["tune_command"]


def _load_text_model(spec: str) -> tuple[Any, Any]:
    if spec == "minilm":
        from .text import load_minilm

        return load_minilm()
    try:
        import transformers
    except ImportError:
        raise UserError(
            "tuning on sentence pairs needs the transformers package: pip install relprop[transformers]"
        ) from None
    try:
        model = transformers.AutoModel.from_pretrained(spec).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a sentence encoder from --model {spec}: {str(exc).splitlines()[0]}") from None
    return model, tokenizer


def _scalar_bounds(low: torch.Tensor, high: torch.Tensor) -> tuple[float, float] | None:
    """The model's z^B bounds if they are one value for every channel."""
    if torch.unique(low).numel() == 1 and torch.unique(high).numel() == 1:
        return float(low.flatten()[0]), float(high.flatten()[0])
    return None


def _load(model_spec: str, weights: str | None, data_spec: str, device: str) -> tuple[Any, Any, Any]:
    """``(model, data, default bounds)`` for the command's options."""
    from .evaluate import load_data
    from .tuning import SentencePairs

    if data_spec.endswith(".tsv"):
        model, tokenizer = _load_text_model("minilm" if model_spec == "digits" else model_spec)
        return model.to(device), SentencePairs.from_tsv(tokenizer, data_spec), None
    from .models.loading import load_model

    bundle = load_model(model_spec, weights, device)
    return bundle.model, load_data(data_spec), _scalar_bounds(bundle.low, bundle.high)


def _target(value: str) -> Any:
    if value == "predicted":
        return None
    if value == "label":
        return "label"
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--target must be 'predicted', 'label' or a class index, got {value!r}") from None


def _split(values: tuple[str, ...]) -> list[str]:
    from .evaluate import split_method_specs

    return split_method_specs(values)


@click.command("tune")
@click.option("--model", "model_spec", default="digits", show_default=True, help="Model spec as for relprop explain.")
@click.option("--weights", default=None, help="Weights file for --model (as for relprop explain).")
@click.option(
    "--data",
    "data_spec",
    default="digits",
    show_default=True,
    help="'digits', a .pt/.npz file with images, labels and optional masks and reference, or a .tsv file of "
    "sentence pairs (token-deletion; --model minilm or a Hugging Face folder).",
)
@click.option(
    "--objective",
    "objective_values",
    multiple=True,
    default=("pixel-flipping:replacement=blur",),
    show_default=True,
    help="Objective spec (repeatable; weight=W combines them): pixel-flipping:replacement=zeros|dataset-mean|blur|"
    "inpaint|uniform[,patch_size=P], localisation[:measure=rank], token-deletion.",
)
@click.option(
    "--candidates",
    "candidate_values",
    multiple=True,
    help="Only these candidates, in this order (comma-separated lrp specs or composite names). Default: the search "
    "space.",
)
@click.option(
    "--reference",
    "reference_values",
    multiple=True,
    help="References the default search tries with every composite (repeatable or comma-separated): none (plain "
    "LRP), zeros, mean (the data's mean), blur. Default: none and the one the objective's replacement names.",
)
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="Seconds.")
@click.option("--max-candidates", type=click.IntRange(1), default=None, help="Stop after this many candidates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, the order and all noise.")
@click.option(
    "--held-out",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="Share of the data held out (never used to choose).",
)
@click.option("--target", "target_value", default="predicted", show_default=True, help="predicted, label or a class.")
@click.option("--bounds", nargs=2, type=float, default=None, help="Data range LOW HIGH (z^B bounds, uniform noise).")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Inputs per call.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tuned.json"),
    show_default=True,
    help="The tuned composite (JSON).",
)
@click.option(
    "--held-out-data",
    "held_out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the held-out split (.pt) for relprop evaluate --data.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def tune_command(
    model_spec: str,
    weights: str | None,
    data_spec: str,
    objective_values: tuple[str, ...],
    candidate_values: tuple[str, ...],
    reference_values: tuple[str, ...],
    budget: float,
    max_candidates: int | None,
    seed: int,
    held_out: float,
    target_value: str,
    bounds: tuple[float, float] | None,
    batch_size: int,
    device: str,
    out_path: Path,
    held_out_path: Path | None,
    force: bool,
) -> None:
    """Choose a composite and its parameters by measured faithfulness; report every candidate on held-out data."""
    refuse_overwrite([p for p in (out_path, held_out_path) if p is not None], force, "--out file")
    references = _references(reference_values, candidate_values)
    try:
        tuned, data = _run(
            model_spec, weights, data_spec, objective_values, candidate_values, references, budget, max_candidates,
            seed, held_out, target_value, bounds, batch_size, device,
        )  # fmt: skip
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: nothing written", err=True)
        raise SystemExit(130) from None
    click.echo(tuned.table())
    click.echo(f"chosen: {tuned.summary()}")
    if held_out_path is not None and tuned.evaluate_options is None:
        click.echo(f"not writing {held_out_path}: relprop evaluate does not measure {tuned.objective}", err=True)
    elif held_out_path is not None:
        _write_held_out(data, tuned, held_out_path)
        command = ["relprop", "evaluate", "--model", model_spec, "--data", str(held_out_path), *tuned.evaluate_options]
        click.echo(f"held-out split: {held_out_path}; measure it again with:\n  {shlex.join(command)}")
    tuned.save(out_path)
    click.echo(f"wrote {out_path}")


def _references(values: tuple[str, ...], candidates: tuple[str, ...]) -> tuple[str | None, ...] | None:
    """``--reference`` as ``tune(references=...)`` takes it (checked before the model loads)."""
    from .tuning.candidates import as_references

    if not values:
        return None
    if candidates:
        raise UserError(
            "--reference restricts the default search space; with --candidates write the reference into each "
            "candidate instead (e.g. lrp:gamma,reference=blur)"
        )
    try:
        return as_references(values, "--reference")
    except RelpropError as exc:
        raise UserError(str(exc).rstrip(".")) from None


def _write_held_out(data: Any, tuned: Any, path: Path) -> None:
    from .tuning import load_split

    split = load_split(data, tuned.held_out_indices)
    content = {
        "images": split.images,
        "labels": split.labels,
        "masks": split.masks,
        "reference": data.images.mean(0) if data.reference is None else data.reference,
        "name": f"held-out split of {data.name} (seed {tuned.seed})",
    }
    write_atomic(path, lambda p: torch.save(content, p))


def _run(
    model_spec: str,
    weights: str | None,
    data_spec: str,
    objective_values: tuple[str, ...],
    candidate_values: tuple[str, ...],
    references: tuple[str | None, ...] | None,
    budget: float,
    max_candidates: int | None,
    seed: int,
    held_out: float,
    target_value: str,
    bounds: tuple[float, float] | None,
    batch_size: int,
    device: str,
) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .tuning import TuneProgress, as_objective, tune

    objective = as_objective(list(objective_values))
    model, data, model_bounds = _load(model_spec, weights, data_spec, device)
    target = _target(target_value)
    if target == "label":
        target = getattr(data, "labels", None)
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("tuning", total=None)

    def show(progress: TuneProgress) -> None:
        if not bar.live.is_started:  # started at the first result, so that early errors stay one line
            bar.start()
        bar.console.print(progress.line(), highlight=False, soft_wrap=True)
        rate = 1 / max(progress.seconds_per_candidate, 1e-9)
        bar.update(
            task,
            completed=progress.done,
            total=progress.planned,
            description=f"tuning: {rate:.2f} candidates/s, ETA {progress.eta:.0f} s",
        )

    try:
        tuned = tune(
            model,
            data,
            target,
            objective=objective,
            candidates=_split(candidate_values) or None,
            references=references,
            budget=budget,
            seed=seed,
            bounds=bounds or model_bounds,
            held_out=held_out,
            max_candidates=max_candidates,
            batch_size=batch_size,
            progress=show,
        )
    finally:
        if bar.live.is_started:
            bar.stop()
    return tuned, data


def tuned_runner(
    model: torch.nn.Module, path: str, given: dict[str, Any], top: str, contrast: Any
) -> tuple[str, Any, dict[str, Any]]:
    """``relprop explain --composite tuned.json``: the label, ``explain(x, target)`` and the chosen parameters.

    The file is refused for another model and when LRP flags would override what it chose.
    """
    from .engine import Explainer
    from .tuning import TunedComposite

    try:
        tuned = TunedComposite.load(path)
        tuned.check_model(model, path)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    if given:
        raise UserError(
            f"--{', --'.join(sorted(given))} would override the tuned composite {path} ({tuned.spec}); drop them"
        )
    params: dict[str, Any] = tuned.candidate.param_dict
    if tuned.candidate.reference is not None:
        if top != "logit" or contrast is not None:
            raise UserError(
                f"--target log-odds and --contrast do not apply to {tuned.spec}, which explains f(x) - f(x̄)"
            )
        params["reference"] = tuned.candidate.reference
    # The Explainer runs the tuned reference, if there is one (reference-aware LRP, relprop.reference).
    return tuned.spec, Explainer(model, tuned, top=top, contrast=contrast, nonfinite="report"), params
