"""What every worker does: load a block of samples, explain it batch by batch, shape the rows.

The same :class:`BlockExplainer` runs in the local executor's main thread and inside each Ray
actor, so both executors store the same numbers for the same batch composition: a block of
``chunk_size`` samples (a multiple of ``batch_size``) is explained in consecutive batches of
``batch_size``, as a plain loop over the data set would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import methods as _methods
from ..composites import Composite
from ..engine import Explainer
from ..errors import ConfigurationError, RelpropError, first_line
from ..explanation import Explanation
from .settings import RunSettings
from .sources import Sample, SampleError, Source
from .store import FAILED, LEDGER_COLUMNS, OK, BlockResult, StoreLayout, column, downsample, new_table

__all__ = ["BlockExplainer", "LoadedBlock", "Probe", "make_runner", "probe"]

Runner = Callable[[Tensor, Any], Explanation]


def make_runner(model: nn.Module, settings: RunSettings, composite: str | Composite | None = None) -> Runner:
    """``(inputs, target) -> Explanation`` for the settings (one prepared Explainer for LRP)."""
    params = dict(settings.params)
    if settings.method != "lrp":
        method = _methods.get(settings.method)  # what relprop.explain(..., method=...) calls

        def run_method(x: Tensor, target: Any) -> Explanation:
            return method(model, x, target, **params)  # type: ignore[no-any-return]

        return run_method
    explainer = Explainer(
        model, composite or settings.composite or "epsilon-gamma-box", top=settings.top, contrast=settings.contrast,
        **params,
    )  # fmt: skip
    if not settings.layers:
        return explainer
    layers, reduce = list(settings.layers), settings.layer_reduce

    def run_with_layers(x: Tensor, target: Any) -> Explanation:
        return explainer(x, target, layers=layers, layer_reduce=reduce)  # type: ignore[call-arg]

    return run_with_layers


@dataclass
class LoadedBlock:
    """The samples of one block as loaded: a :class:`Sample` or the reason it could not be loaded."""

    block: int
    start: int
    stop: int
    samples: list[Sample | str]


@dataclass(frozen=True)
class Probe:
    """Shapes found by explaining the first readable sample (they decide a new store's layout)."""

    index: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layer_shapes: dict[str, tuple[int, ...]]


def probe(runner: Runner, source: Source, settings: RunSettings) -> Probe:
    """Explain the first sample that loads; raise a one-line error if none does or the model fails on it."""
    first_error: str | None = None
    for index in range(len(source)):
        try:
            sample = source.load(index)
        except SampleError as exc:
            first_error = first_error or str(exc)
            continue
        target = sample.label if settings.target == "label" else settings.target
        if target == -1:
            raise ConfigurationError(
                f"target 'label' needs labelled samples, but {sample.path} has no label; choose another target."
            )
        x = sample.x.unsqueeze(0)
        try:
            result = runner(x, target)
        except RelpropError:
            raise
        except RuntimeError as exc:
            raise ConfigurationError(
                f"the model failed on {sample.path} (input shape {tuple(sample.x.shape)}): {first_line(exc)}; check "
                "the source and the model's input size"
            ) from None
        layers = getattr(result, "layers", {}) or {}
        return Probe(
            index,
            tuple(sample.x.shape),
            tuple(result.output.shape[1:]),
            {name: tuple(layers[name].shape[1:]) for name in settings.layers},
        )
    raise ConfigurationError(
        f"none of the {len(source)} samples of {source.location()} could be read (first: {first_error})."
    )


class BlockExplainer:
    """Loads and explains the blocks of one store (one per worker process)."""

    def __init__(self, runner: Runner, source: Source, settings: RunSettings, layout: StoreLayout) -> None:
        self.runner = runner
        self.source = source
        self.settings = settings
        self.layout = layout
        self._arrays = layout.arrays()

    def load(self, block: int) -> LoadedBlock:
        """Read and preprocess the samples of ``block``; unusable ones become their reason."""
        start, stop = self.layout.block_range(block)
        samples: list[Sample | str] = []
        for index in range(start, stop):
            try:
                samples.append(self.source.load(index))
            except SampleError as exc:
                samples.append(str(exc))
        return LoadedBlock(block, start, stop, samples)

    def explain(self, loaded: LoadedBlock) -> BlockResult:
        """Explain the loaded samples in batches and return the block's rows."""
        n = loaded.stop - loaded.start
        arrays = {name: np.full((n, *shape), np.nan, dtype=dtype) for name, (shape, dtype) in self._arrays.items()}
        table = new_table(n)
        table["source_index"][:] = np.arange(loaded.start, loaded.stop)
        status = np.full(n, FAILED, dtype=np.uint8)
        ready: list[tuple[int, Sample]] = []
        for row, sample in enumerate(loaded.samples):
            if isinstance(sample, str):
                table["source_path"][row], table["error"][row] = _path_of(sample), sample
                continue
            table["source_path"][row], column(table, "label")[row] = sample.path, sample.label
            problem = self._unusable(sample)
            if problem:
                table["error"][row] = problem
            else:
                ready.append((row, sample))
        size = self.settings.batch_size
        for first in range(0, len(ready), size):
            for rows, x, outcome in self._explain_batch(ready[first : first + size]):
                if isinstance(outcome, str):
                    table["error"][rows[0]] = outcome
                else:
                    self._fill(arrays, table, status, np.asarray(rows), x, outcome)
        return BlockResult(loaded.block, loaded.start, loaded.stop, arrays, table, status)

    def __call__(self, block: int) -> BlockResult:
        return self.explain(self.load(block))

    def _unusable(self, sample: Sample) -> str | None:
        if tuple(sample.x.shape) != self.layout.input_shape:
            return (
                f"{sample.path}: input shape {tuple(sample.x.shape)} differs from the store's {self.layout.input_shape}"
            )
        if self.settings.target == "label" and sample.label < 0:
            return f"{sample.path}: no label to explain (target 'label')"
        return None

    def _explain_batch(self, batch: list[tuple[int, Sample]]) -> list[tuple[list[int], Tensor, Explanation | str]]:
        """Explain a batch: ``(rows, inputs, explanation)``; if the model fails on it, sample by sample."""
        x = torch.stack([s.x for _, s in batch])
        rows = [row for row, _ in batch]
        try:
            return [(rows, x, self.runner(x, self._target(batch)))]
        except RelpropError:
            raise
        except RuntimeError as exc:
            if len(batch) == 1:
                return [(rows, x, f"{batch[0][1].path}: the model failed ({first_line(exc)})")]
            return [outcome for item in batch for outcome in self._explain_batch([item])]

    def _target(self, batch: list[tuple[int, Sample]]) -> Any:
        if self.settings.target == "label":
            return torch.tensor([s.label for _, s in batch], dtype=torch.long)
        return self.settings.target

    def _fill(
        self,
        arrays: dict[str, np.ndarray],
        table: dict[str, np.ndarray],
        status: np.ndarray,
        rows: np.ndarray,
        x: Tensor,
        result: Explanation,
    ) -> None:
        """Copy a batch's explanation into its rows; samples with non-finite values fail instead."""
        relevance = result.relevance.detach().cpu().float()
        output = result.output.detach().cpu().float()
        finite = torch.isfinite(relevance).flatten(1).all(1) & torch.isfinite(output).flatten(1).all(1)
        ledger = result.ledger
        values: dict[str, Tensor] = {
            "relevance": relevance,
            "downsampled": downsample(relevance, self.settings.analysis_size),
            "output": output,
        }
        if "inputs" in arrays:
            values["inputs"] = x.detach().cpu().float()
        layers = getattr(result, "layers", None) or {}
        for name in self.settings.layers:
            values[f"layers/{name}"] = layers[name].detach().cpu().float()
        for name, value in values.items():
            arrays[name][rows] = value.numpy()
        column(table, "target")[rows] = result.target.cpu().numpy()
        column(table, "prediction")[rows] = output.argmax(1).numpy() if output.dim() == 2 else -1
        for name in LEDGER_COLUMNS:
            column(table, name)[rows] = getattr(ledger, name).detach().cpu().double().numpy()
        status[rows] = OK
        bad = rows[~finite.numpy()]
        for name in arrays:
            arrays[name][bad] = np.nan
        table["ledger"][bad] = np.nan
        column(table, "target")[bad] = column(table, "prediction")[bad] = -1
        table["error"][bad] = "the explanation is not finite (NaN or Inf); try a larger epsilon"
        status[bad] = FAILED


def _path_of(reason: str) -> str:
    """The path a load failure's message starts with (``PATH: reason``), else empty."""
    head, sep, _ = reason.partition(": ")
    return head if sep else ""
