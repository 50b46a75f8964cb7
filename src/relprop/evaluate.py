"""``relprop evaluate``: every method × every metric on a model and data set, as numbers.

The seeds criticise the LRP literature for showing no empirical comparison and no formal
evaluation; this command makes both a one-liner::

    relprop evaluate --methods lrp:epsilon-gamma-box,low=0,high=1 --methods lrp:epsilon,epsilon=0.25 \\
        --methods random --count 200 --out evaluation/digits

It explains the inputs with each method, measures the explanations with :mod:`relprop.metrics`
(mean ± standard error over the inputs), prints the table, and writes ``results.csv``,
``results.md``, ``pixel_flipping.png`` (the MoRF/LeRF curves) and ``randomisation.png``
next to each other, atomically, refusing to overwrite without ``--force``.

The library entry point is :func:`evaluate_methods` (a model, an :class:`EvaluationData` of
tensors, method specs and metric names → :class:`EvaluationResult`).

Methods are named as in ``relprop explain``: ``"lrp:<composite>"`` with optional
``,name=value`` parameters, or another method's name (``"gradient"``,
``"smoothgrad:n=20,sigma=0.1"``) — resolved by :func:`relprop.methods.resolve`. ``"random"``
is an evaluation baseline: Gaussian noise as relevance, a floor every method should beat.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import Tensor, nn

from . import metrics as M
from .api import explain as _explain
from .clitools import UserError, prepare_output_folder, refuse_overwrite, write_atomic
from .engine import model_device
from .errors import ConfigurationError, RelpropError
from .explanation import Explanation
from .ledger import Ledger
from .metrics import families
from .metrics.families import DATASET_MEAN, EvaluationSettings, Measurement, MetricBatch, MetricColumn
from .targets import initial_relevance

__all__ = [
    "DATASET_MEAN",
    "METRICS",
    "REPLACEMENT_NAMES",
    "EvaluationData",
    "EvaluationResult",
    "EvaluationSettings",
    "MetricColumn",
    "evaluate",
    "evaluate_methods",
    "format_cell",
    "load_data",
    "load_model",
    "resolve_method",
    "split_method_specs",
]

#: The built-in metric families, in table order (:mod:`relprop.metrics.families` registers them;
#: families registered later are accepted too).
METRICS = tuple(families.names())
RANDOM_BASELINE = "random"
#: Every replacement ``relprop evaluate`` accepts: those of :data:`relprop.metrics.REPLACEMENTS` and
#: ``dataset-mean`` (:data:`relprop.metrics.families.DATASET_MEAN`: the data's reference input). As a method
#: parameter ``dataset-mean`` is accepted for ``baseline`` (Integrated Gradients), ``reference`` (DeepLIFT,
#: reference-aware LRP) and ``value`` (occlusion): ``integrated-gradients:baseline=dataset-mean``.
REPLACEMENT_NAMES = (*M.REPLACEMENTS, DATASET_MEAN)
_REFERENCE_PARAMETERS = ("baseline", "reference", "value")


# ----------------------------------------------------------------------------------------------
# Methods by name


def resolve_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``(method name, parameters for relprop.explain)`` of a method spec such as ``"lrp:epsilon,epsilon=0.25"``."""
    if spec.strip() == RANDOM_BASELINE:
        return RANDOM_BASELINE, {}
    from . import methods

    name, params = methods.resolve(spec)
    return name, dict(params)


def split_method_specs(values: Iterable[str]) -> list[str]:
    """Split ``--methods`` values on commas, keeping ``name=value`` items with the spec before them.

    ``"lrp:epsilon,epsilon=0.25,gradient"`` → ``["lrp:epsilon,epsilon=0.25", "gradient"]``.
    """
    specs: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" in item and ":" not in item.split("=", 1)[0] and specs:
                specs[-1] = f"{specs[-1]},{item}"
            else:
                specs.append(item)
    return specs


def _explanation_call(
    spec: str, seed: int, reference: Tensor | None = None
) -> Callable[[nn.Module, Tensor, Tensor], Explanation]:
    """``call(model, inputs, target) -> Explanation`` for a method spec (``dataset-mean`` values → ``reference``)."""
    name, params = resolve_method(spec)
    if reference is not None:
        params.update({k: reference for k in _REFERENCE_PARAMETERS if params.get(k) == DATASET_MEAN})
    if name == RANDOM_BASELINE:
        generator = torch.Generator().manual_seed(seed)

        def random_explanation(model: nn.Module, inputs: Tensor, target: Tensor) -> Explanation:
            with torch.no_grad():
                output = model(inputs)
            head = initial_relevance(output, target)
            noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype).to(inputs.device)
            ledger = Ledger(score=head.score, input_relevance=noise.reshape(len(noise), -1).sum(1))
            return Explanation(noise, output, head.target, ledger)

        return random_explanation

    def call(model: nn.Module, inputs: Tensor, target: Tensor) -> Explanation:
        return _explain(model, inputs, target, method=name, **params)

    return call


# ----------------------------------------------------------------------------------------------
# Models and data


@dataclass
class EvaluationData:
    """Inputs to evaluate on, with labels and optional ground-truth masks (for localisation).

    Attributes
    ----------
    images
        ``(N, ...)`` model inputs.
    labels
        ``(N,)`` class labels.
    masks
        ``(N, H, W)``, ``(N, 1, H, W)`` or input-shaped ground-truth regions, or ``None``.
    name
        Shown in reports.
    reference
        A reference input shaped like one input (e.g. the training set's per-feature mean): the
        ``dataset-mean`` replacement and method parameter; ``None``: the mean of ``images``.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor | None = None
    name: str = "data"
    reference: Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels) or (self.masks is not None and len(self.masks) != len(self.images)):
            raise ConfigurationError(
                f"data {self.name!r}: {len(self.images)} images, {len(self.labels)} labels"
                f"{'' if self.masks is None else f' and {len(self.masks)} masks'}; give one of each per input."
            )

    def head(self, count: int | None) -> EvaluationData:
        """The first ``count`` inputs (all if ``None``)."""
        if count is None:
            return self
        masks = None if self.masks is None else self.masks[:count]
        return EvaluationData(self.images[:count], self.labels[:count], masks, self.name, self.reference)

    def reference_input(self) -> Tensor:
        """The ``dataset-mean`` reference: :attr:`reference`, else the mean of :attr:`images` over the batch."""
        return self.images.mean(0) if self.reference is None else self.reference


# What torch.load / np.load raise on a file that is not what we expect.
_LOAD_ERRORS = (
    RuntimeError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    EOFError,
    OSError,
    pickle.UnpicklingError,
)


def load_model(spec: str, device: str | torch.device = "cpu") -> nn.Module:
    """``"digits"`` (the embedded CNN) or a path to a state dict of :class:`~relprop.models.DigitsCNN`."""
    from .models.digits import DigitsCNN, load_digits_model

    if spec == "digits":
        return load_digits_model(device=device)
    path = Path(spec)
    if not path.is_file():
        raise ConfigurationError(f"--model {spec!r} is neither 'digits' nor an existing file; pass one of them.")
    try:
        return load_digits_model(path, device=device)
    except _LOAD_ERRORS as exc:
        raise ConfigurationError(
            f"--model {spec}: not a state dict of relprop's DigitsCNN ({type(exc).__name__}); save one with "
            f"torch.save({DigitsCNN.__name__}().state_dict(), path)."
        ) from None


def load_data(spec: str) -> EvaluationData:
    """``"digits"`` (the 360 bundled held-out digits) or a ``.pt``/``.npz`` file with ``images``,
    ``labels`` and optionally ``masks`` and ``reference`` (see :class:`EvaluationData`)."""
    if spec == "digits":
        from .models.digits import digits_test_set

        test = digits_test_set()
        return EvaluationData(test.images, test.labels, None, "digits test set (360 held-out digits)")
    path = Path(spec)
    if not path.is_file():
        raise ConfigurationError(f"--data {spec!r} is neither 'digits' nor an existing .pt or .npz file.")
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                content: Any = {k: torch.from_numpy(archive[k]) for k in archive.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        raise ConfigurationError(
            f"--data {spec}: cannot read it as a .pt or .npz file ({type(exc).__name__})."
        ) from None
    if not isinstance(content, dict) or "images" not in content or "labels" not in content:
        raise ConfigurationError(
            f"--data {spec}: expected a dict with 'images', 'labels' and optionally 'masks' tensors."
        )
    return EvaluationData(
        torch.as_tensor(content["images"]).float(),
        torch.as_tensor(content["labels"]).long(),
        None if content.get("masks") is None else torch.as_tensor(content["masks"]).bool(),
        str(content.get("name", path.name)),
        None if content.get("reference") is None else torch.as_tensor(content["reference"]).float(),
    )


# ----------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvaluationResult:
    """Per-input values of every method × metric column, with the curves behind them.

    Attributes
    ----------
    methods
        Method specs, in order.
    columns
        The reported metric columns.
    values
        ``values[method][column title]``: ``(N,)`` float64, NaN where undefined.
    curves
        ``curves[method][(replacement, order)]``: mean perturbation curve ``(L + 1,)``.
    fractions
        Fraction of regions removed at each curve step.
    randomisation
        ``randomisation[method]``: ``{"layers": [...], "spearman": (K,), "ssim": (K,)}`` means per stage.
    """

    methods: list[str]
    columns: list[MetricColumn]
    values: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    curves: dict[str, dict[tuple[str, str], Tensor]] = field(default_factory=dict)
    fractions: Tensor | None = None
    randomisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_inputs: int = 0
    description: dict[str, str] = field(default_factory=dict)

    def summary(self, method: str, column: str) -> tuple[float, float, int]:
        """``(mean, standard error, count)`` over the inputs where the value is defined."""
        v = self.values[method][column]
        finite = v[torch.isfinite(v)]
        n = int(finite.numel())
        if n == 0:
            return math.nan, math.nan, 0
        mean = float(finite.mean())
        se = float(finite.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
        return mean, se, n

    def cell(self, method: str, column: str) -> str:
        """``"mean ± se"`` (see :func:`format_cell`)."""
        return format_cell(*self.summary(method, column))


def format_cell(mean: float, se: float, n: int) -> str:
    """``"mean ± se"`` rounded to two significant digits of the standard error; ``"n/a"`` without data."""
    if n == 0 or not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(se) or se == 0:
        return f"{mean:.4g}"
    if se < 1e-4:  # e.g. exact conservation: fixed-point digits would print 0.000000 ± 0.000000
        return f"{mean:.2e} ± {se:.1e}"
    digits = max(0, 1 - math.floor(math.log10(se)))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _concat(chunks: list[Tensor]) -> Tensor:
    return torch.cat([c.detach().double().cpu() for c in chunks])


def evaluate_methods(
    model: nn.Module,
    data: EvaluationData,
    methods: Sequence[str],
    metrics: Sequence[str] = METRICS,
    settings: EvaluationSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Explain ``data`` with every method and measure every metric, per input.

    Every method sees the same random perturbations (continuity noise, uniform replacement)
    and the same global random state per batch, so a method's numbers do not depend on which
    other methods are evaluated with it; the caller's random state is restored.

    Parameters
    ----------
    model
        The classifier in eval mode (never modified; the randomisation check works on a copy).
    data
        Inputs, labels and (for localisation) masks.
    methods
        Method specs (``"lrp:epsilon-gamma-box,low=0,high=1"``, ``"gradient"``, ``"random"`` …).
    metrics
        Family names (:data:`METRICS`, or any registered in :mod:`relprop.metrics.families`);
        ``"localisation"`` needs ``data.masks``.
    settings
        Metric options.
    progress
        Called with a description after each unit of work (method × batch × metric family, and
        the explanation itself).

    Returns
    -------
    EvaluationResult
    """
    settings = settings or EvaluationSettings()
    chosen = _chosen_families(metrics, data, methods)
    columns = [c for family in chosen for c in family.columns(settings)]
    device = model_device(model) or torch.device("cpu")
    reference = data.reference_input().to(device)
    calls = {spec: _explanation_call(spec, settings.seed, reference) for spec in methods}
    _probe(model, data, calls, device)

    result = EvaluationResult(list(methods), columns, n_inputs=len(data.images))
    states = {spec: _MethodState(columns, settings.seed) for spec in methods}
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    n = len(data.images)
    for start in range(0, n, settings.batch_size):
        stop = min(n, start + settings.batch_size)
        x = data.images[start:stop].to(device)
        target = _batch_target(model, data, settings.target, start, stop, x)
        masks = None if data.masks is None else data.masks[start:stop].to(device)
        for spec, call in calls.items():
            where = f"{spec} (inputs {start + 1}-{stop} of {n})"

            def step(family: str, where: str = where) -> None:
                if progress is not None:
                    progress(f"{where}: {family}")

            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(settings.seed + start)
                _evaluate_batch(model, call, x, target, masks, chosen, settings, states[spec], step, reference)

    for spec in methods:
        states[spec].finish(result, spec, n)
    result.description = _description(data, settings, n)
    return result


def _chosen_families(
    metrics: Sequence[str], data: EvaluationData, methods: Sequence[str]
) -> list[families.MetricFamily]:
    """The registered families asked for, in report order; refuse unknown names, missing masks, no methods."""
    for name in metrics:
        families.get(name)  # names the valid ones
    needing = [name for name in metrics if families.get(name).needs_masks]
    if needing and data.masks is None:
        raise ConfigurationError(
            f"metric {needing[0]!r} needs ground-truth masks, and data {data.name!r} has none; drop it from --metrics "
            "or pass data with masks."
        )
    if not methods:
        raise ConfigurationError("no methods to evaluate; pass at least one, e.g. --methods lrp:epsilon-gamma-box.")
    return [families.get(name) for name in families.names() if name in metrics]


def _probe(
    model: nn.Module,
    data: EvaluationData,
    calls: dict[str, Callable[[nn.Module, Tensor, Tensor], Explanation]],
    device: torch.device,
) -> None:
    """Fail on a wrong method name or parameter before any long computation."""
    probe = data.images[:2].to(device)
    for call in calls.values():
        call(model, probe, M.predicted_class(model, probe))


def _batch_target(
    model: nn.Module, data: EvaluationData, choice: str | int, start: int, stop: int, inputs: Tensor
) -> Tensor:
    """The classes explained for inputs ``start:stop``: predicted, labelled, or one fixed class."""
    if choice == "predicted":
        return M.predicted_class(model, inputs)
    if choice == "label":
        return data.labels[start:stop].to(inputs.device)
    return torch.full((len(inputs),), int(choice), dtype=torch.long, device=inputs.device)


def _description(data: EvaluationData, settings: EvaluationSettings, n: int) -> dict[str, str]:
    """The settings as the report's bullet list."""
    return {
        "inputs": f"{n} from {data.name}",
        "target": str(settings.target),
        "pixel flipping": (
            f"patch {settings.patch_size}, {settings.regions_per_step} region(s) per step, score {settings.score}, "
            f"replacements {', '.join(settings.replacements)}"
        ),
        "continuity": (
            f"{settings.noise_samples} Gaussian perturbations, sigma {settings.sigma}, bounds {settings.bounds}"
        ),
        "localisation": f"relevance mass on {settings.mass_mode} relevance",
        "seed": str(settings.seed),
    }


class _MethodState:
    """What one method accumulates over the batches."""

    def __init__(self, columns: Sequence[MetricColumn], seed: int) -> None:
        self.values: dict[str, list[Tensor]] = {c.title: [] for c in columns}
        self.curve_sums: dict[tuple[str, str], Tensor] = {}
        self.fractions: Tensor | None = None
        self.randomisation: dict[str, Any] = {}
        # The same noise for every method: each has its own generator with the same seed.
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, measured: Measurement) -> None:
        """Keep one family's per-input values; sum its curves; keep its randomisation stages."""
        for title, values in measured.values.items():
            self.values[title].append(values)
        for key, curve in measured.curves.items():
            total = curve.scores.double().sum(0).cpu()
            previous = self.curve_sums.get(key)
            self.curve_sums[key] = total if previous is None else previous + total
            self.fractions = curve.fractions
        rnd = measured.randomisation
        if rnd is not None:
            self.randomisation.setdefault("layers", rnd.layers)
            for name in ("spearman", "ssim"):
                self.randomisation.setdefault(name, []).append(rnd.similarity[name].cpu())

    def finish(self, result: EvaluationResult, spec: str, n: int) -> None:
        """Write the method's per-input values, mean curves and mean randomisation stages into ``result``."""
        result.values[spec] = {title: _concat(chunks) for title, chunks in self.values.items()}
        result.curves[spec] = {key: total / n for key, total in self.curve_sums.items()}
        if self.fractions is not None:
            result.fractions = self.fractions
        stages = self.randomisation
        if stages:
            result.randomisation[spec] = {
                "layers": stages["layers"],
                "spearman": torch.cat(stages["spearman"], 1).nanmean(1),
                "ssim": torch.cat(stages["ssim"], 1).nanmean(1),
            }


def _evaluate_batch(
    model: nn.Module,
    call: Callable[[nn.Module, Tensor, Tensor], Explanation],
    x: Tensor,
    target: Tensor,
    masks: Tensor | None,
    chosen: Sequence[families.MetricFamily],
    settings: EvaluationSettings,
    state: _MethodState,
    step: Callable[[str], None],
    reference: Tensor | None = None,
) -> None:
    """Explain one batch with one method and measure it with every chosen family."""

    def explain_fn(m: nn.Module, inputs: Tensor, t: Tensor) -> Tensor:
        return call(m, inputs, t).relevance

    explanation = call(model, x, target)
    step("explained")
    batch = MetricBatch(model, x, target, masks, explanation, explain_fn, settings, state.generator, reference)
    for family in chosen:
        state.add(family.measure(batch))
        step(family.name)


# ----------------------------------------------------------------------------------------------
# Reports


def result_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    """Long-format rows ``method, family, metric, better, mean, se, n`` (one per method × column)."""
    rows = []
    for spec in result.methods:
        for column in result.columns:
            mean, se, n = result.summary(spec, column.title)
            rows.append(
                {
                    "method": spec,
                    "family": column.family,
                    "metric": column.title,
                    "better": column.better,
                    "mean": mean,
                    "se": se,
                    "n": n,
                }
            )
    return rows


def to_csv(result: EvaluationResult) -> str:
    """The summary as CSV (long format)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["method", "family", "metric", "better", "mean", "se", "n"])
    writer.writeheader()
    for row in result_rows(result):
        writer.writerow({**row, "mean": f"{row['mean']:.10g}", "se": f"{row['se']:.10g}"})
    return buffer.getvalue()


def to_markdown(result: EvaluationResult, title: str = "Evaluation", command: str | None = None) -> str:
    """A Markdown report: settings, and the method × metric table of ``mean ± standard error``."""
    lines = [f"# {title}", ""]
    if command:
        lines += ["Regenerate with:", "", "    " + command, ""]
    for key, value in result.description.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Mean ± standard error over the inputs (↑ higher is better, ↓ lower is better).", ""]
    lines += markdown_table(result)
    return "\n".join(lines) + "\n"


def markdown_table(result: EvaluationResult, families: Sequence[str] | None = None) -> list[str]:
    """Rows: methods; columns: metrics (of ``families`` only, if given)."""
    columns = [c for c in result.columns if families is None or c.family in families]
    header = ["method", *[f"{c.title} {c.arrow}".strip() for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for spec in result.methods:
        cells = [f"`{spec}`", *[result.cell(spec, c.title) for c in columns]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_curves(result: EvaluationResult, path: Path) -> None:
    """Mean pixel-flipping curves per replacement (MoRF solid, LeRF dashed, one colour per method)."""
    from matplotlib.figure import Figure

    replacements = list(dict.fromkeys(key[0] for curves in result.curves.values() for key in curves))
    fig = Figure(figsize=(5.2 * max(1, len(replacements)), 4.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(replacements)), squeeze=False)[0]
    fractions = (result.fractions if result.fractions is not None else torch.zeros(1)).numpy()
    colours = [f"C{i}" for i in range(10)]
    for ax, replacement in zip(axes, replacements, strict=False):
        for i, spec in enumerate(result.methods):
            for order, style in (("morf", "-"), ("lerf", "--")):
                curve = result.curves[spec].get((replacement, order))
                if curve is not None:
                    label = spec if order == "morf" else None
                    ax.plot(fractions, curve.numpy(), style, color=colours[i % 10], label=label, linewidth=1.4)
        ax.set_title(f"pixel flipping, replacement: {replacement}\n(solid: MoRF, dashed: LeRF)")
        ax.set_xlabel("fraction of regions removed")
        ax.set_ylabel("mean score of the explained class")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    _save_figure(fig, path)


def plot_randomisation(result: EvaluationResult, path: Path) -> None:
    """Mean Spearman and SSIM to the original explanation after each randomisation stage."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, spec in enumerate(result.methods):
        stages = result.randomisation.get(spec)
        if stages is None:
            continue
        labels = ["original", *stages["layers"]]
        for ax, name in zip(axes, ("spearman", "ssim"), strict=True):
            values = [1.0, *stages[name].tolist()]
            ax.plot(range(len(values)), values, "-o", color=f"C{i % 10}", label=spec, markersize=3)
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    for ax, name in zip(axes, ("Spearman |R|", "SSIM |R|"), strict=True):
        ax.set_title(f"cascading randomisation (top down): {name}")
        ax.set_ylabel("similarity to the original explanation")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))


def write_report(
    result: EvaluationResult, out_dir: Path, force: bool = False, title: str = "Evaluation", command: str | None = None
) -> list[Path]:
    """Write ``results.csv``, ``results.md``, ``pixel_flipping.png`` and ``randomisation.png`` (those that apply).

    Raises
    ------
    ConfigurationError
        If a file exists and ``force`` is false (nothing is written then).
    """
    outputs: list[tuple[Path, Callable[[Path], object]]] = [
        (out_dir / "results.csv", lambda p: p.write_text(to_csv(result), encoding="utf-8")),
        (out_dir / "results.md", lambda p: p.write_text(to_markdown(result, title, command), encoding="utf-8")),
    ]
    if any(result.curves.values()):
        outputs.append((out_dir / "pixel_flipping.png", lambda p: plot_curves(result, p)))
    if result.randomisation:
        outputs.append((out_dir / "randomisation.png", lambda p: plot_randomisation(result, p)))
    existing = [p for p, _ in outputs if p.exists()]
    if existing and not force:
        raise ConfigurationError(
            f"{existing[0]} already exists; pass --force to overwrite it or choose another --out folder."
        )
    for path, writer in outputs:
        if path.suffix == ".png":
            writer(path)  # the plot functions write atomically themselves
        else:
            write_atomic(path, writer)
    return [p for p, _ in outputs]


# ----------------------------------------------------------------------------------------------
# The command


def _split(values: Sequence[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _command_line(ctx: click.Context) -> str:
    """The ``relprop evaluate ...`` invocation that reproduces this run (options that differ from defaults)."""
    parts = ["relprop", "evaluate"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None or param.name == "force":
            continue
        value = ctx.params.get(param.name)
        default = param.get_default(ctx, call=True)
        if param.multiple and default is not None:
            default = tuple(default)
        if value == default or value is None:
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            parts.append(flag)
        elif param.multiple:
            parts += [a for v in value for a in (flag, shlex.quote(str(v)))]
        elif isinstance(value, tuple):
            parts += [flag, *(shlex.quote(str(v)) for v in value)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _target(value: str) -> str | int:
    if value in ("predicted", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--target must be 'predicted', 'label' or a class index, got {value!r}.") from None


@click.command("evaluate")
@click.option("--model", "model_spec", default="digits", show_default=True, help="'digits' or a DigitsCNN state dict.")
@click.option(
    "--data",
    "data_spec",
    default="digits",
    show_default=True,
    help="'digits' (bundled test set) or a .pt/.npz file with images, labels and optional masks and reference.",
)
@click.option(
    "--methods",
    "method_values",
    multiple=True,
    default=("lrp:epsilon-gamma-box",),
    show_default=True,
    help="Comma-separated method specs (repeatable): lrp:<composite>[,k=v], gradient, smoothgrad:n=20,sigma=0.1, "
    "random (noise baseline).",
)
@click.option(
    "--metrics",
    "metric_values",
    multiple=True,
    default=(),
    help=f"Comma-separated metric families (default: all that apply): {', '.join(METRICS)}.",
)
@click.option("--count", type=click.IntRange(1), default=None, help="Evaluate the first COUNT inputs (default: all).")
@click.option("--target", "target_value", default="predicted", show_default=True, help="predicted, label or a class.")
@click.option(
    "--replacement",
    "replacement_values",
    multiple=True,
    default=("zeros",),
    show_default=True,
    help=f"Pixel-flipping replacements, comma-separated: {', '.join(REPLACEMENT_NAMES)} (dataset-mean: the data "
    "file's 'reference', else the mean of its images).",
)
@click.option("--patch-size", type=click.IntRange(1), default=1, show_default=True, help="Pixel-flipping region side.")
@click.option("--regions-per-step", type=click.IntRange(1), default=1, show_default=True, help="Regions per step.")
@click.option(
    "--score", type=click.Choice(["logit", "probability"]), default="logit", show_default=True, help="Tracked score."
)
@click.option("--noise-samples", type=click.IntRange(1), default=10, show_default=True, help="Continuity samples.")
@click.option(
    "--sigma", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True, help="Noise std."
)
@click.option("--bounds", nargs=2, type=float, default=None, help="Data range LOW HIGH (clamps noisy inputs).")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Inputs per call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of all noise and randomisation.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("relprop-evaluation"),
    show_default=True,
    help="Folder for results.csv, results.md and the PNG curves.",
)
@click.option("--title", default="Evaluation", show_default=True, help="Title of results.md.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def evaluate(
    model_spec: str,
    data_spec: str,
    method_values: tuple[str, ...],
    metric_values: tuple[str, ...],
    count: int | None,
    target_value: str,
    replacement_values: tuple[str, ...],
    patch_size: int,
    regions_per_step: int,
    score: str,
    noise_samples: int,
    sigma: float,
    bounds: tuple[float, float] | None,
    batch_size: int,
    seed: int,
    out_dir: Path,
    title: str,
    force: bool,
) -> None:
    """Measure explanation quality: every method × every metric, mean ± standard error."""
    try:
        torch.manual_seed(seed)
        methods = split_method_specs(method_values)
        settings = EvaluationSettings(
            target=_target(target_value),
            replacements=_replacements(replacement_values),
            patch_size=patch_size,
            regions_per_step=regions_per_step,
            score=score,
            noise_samples=noise_samples,
            sigma=sigma,
            bounds=bounds,
            batch_size=batch_size,
            seed=seed,
        )
        model = load_model(model_spec)
        data = load_data(data_spec).head(count)
        chosen = _split(metric_values) or [
            name for name in families.names() if data.masks is not None or not families.get(name).needs_masks
        ]
        refuse_overwrite([out_dir / "results.csv", out_dir / "results.md"], force)
        prepare_output_folder(out_dir)  # a folder that cannot be written fails now, not after the evaluation
        result = _evaluate_with_progress(model, data, methods, chosen, settings)
        command = _command_line(click.get_current_context())
        written = write_report(result, out_dir, force=force, title=title, command=command)
    except RelpropError as exc:
        raise UserError(str(exc)) from None
    _print_table(result, title)
    for path in written:
        click.echo(f"wrote {path}")


def _replacements(values: Sequence[str]) -> tuple[str, ...]:
    replacements = tuple(_split(values))
    unknown = [r for r in replacements if r not in REPLACEMENT_NAMES]
    if unknown:
        raise UserError(f"--replacement {unknown[0]!r} is unknown; choose from {', '.join(REPLACEMENT_NAMES)}.")
    return replacements


def _evaluate_with_progress(
    model: nn.Module, data: EvaluationData, methods: list[str], chosen: list[str], settings: EvaluationSettings
) -> EvaluationResult:
    """:func:`evaluate_methods` with a progress bar on stderr (one step per method × batch × family)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    batches = math.ceil(len(data.images) / settings.batch_size)
    steps = batches * len(methods) * (len(set(chosen)) + 1)
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("evaluating", total=steps)

        def advance(description: str) -> None:
            bar.update(task, advance=1, description=description[:60])

        result = evaluate_methods(model, data, methods, chosen, settings, progress=advance)
        bar.update(task, completed=steps, description="done")
    return result


def _print_table(result: EvaluationResult, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: mean ± SE over {result.n_inputs} inputs", show_lines=False)
    table.add_column("metric")
    for spec in result.methods:
        table.add_column(spec, justify="right", overflow="fold")
    for column in result.columns:
        table.add_row(
            f"{column.title} {column.arrow}".strip(), *[result.cell(spec, column.title) for spec in result.methods]
        )
    Console().print(table)


if __name__ == "__main__":
    evaluate()
