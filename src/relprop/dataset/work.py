"""What every worker does: load a block of samples, explain it batch by batch, shape the rows.

The same :class:`BlockExplainer` runs in the local executor's main thread and inside each Ray
actor, so both executors store the same numbers for the same batch composition: a block of
``chunk_size`` samples (a multiple of ``batch_size``) is explained in consecutive batches of
``batch_size``, as a plain loop over the data set would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from .sources import SampleError, Source
from .store import FAILED, LEDGER_COLUMNS, OK, BlockResult, StoreLayout, column, downsample, new_table

__all__ = ["BlockExplainer", "ExplainedBlock", "LoadedBlock", "Probe", "make_runner", "probe"]

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
    """The samples of one block as loaded, one row per sample.

    ``x`` stacks the inputs (rows of samples that could not be used are left as they were
    allocated); ``errors`` is ``""`` for a usable sample, else why it is not.
    """

    block: int
    start: int
    stop: int
    x: Tensor | None
    labels: np.ndarray
    paths: np.ndarray
    errors: np.ndarray


# The dtype each kept value is copied to (others: float32), as the store holds it.
_KEEP_DTYPES = {"target": torch.int64, **dict.fromkeys(LEDGER_COLUMNS, torch.float64)}


@dataclass
class ExplainedBlock:
    """A block's explanations and per-row failures, before they are shaped into store rows.

    ``batches`` holds the rows of each explained batch, in order; ``values`` one row per
    sample of the block of the relevance, output, target, ledger columns and layer relevance
    (``layers/<module path>``), copied there batch by batch as they were explained.
    """

    loaded: LoadedBlock
    errors: np.ndarray
    batches: list[np.ndarray] = field(default_factory=list)
    values: dict[str, Tensor] = field(default_factory=dict)

    def keep(self, rows: np.ndarray, result: Explanation, layers: Sequence[str]) -> None:
        """Copy a batch's explanation into its rows.

        Copying at once lets the batch's own tensors go, as in a plain loop: keeping a block's
        worth of small result tensors alive until the writer takes them costs the explainer
        several per cent (the allocator can no longer reuse that memory).
        """
        found = getattr(result, "layers", None) or {}
        parts = {
            "relevance": result.relevance,
            "output": result.output,
            "target": result.target,
            **{name: getattr(result.ledger, name) for name in LEDGER_COLUMNS},
            **{f"layers/{name}": found[name] for name in layers},
        }
        n, where = len(self.errors), _rows_index(rows)
        for name, value in parts.items():
            kept = self.values.get(name)
            if kept is None:
                dtype = _KEEP_DTYPES.get(name, torch.float32)
                kept = self.values[name] = torch.zeros((n, *value.shape[1:]), dtype=dtype)
            kept[where] = value.detach().to(device="cpu", dtype=kept.dtype)
        self.batches.append(rows)


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
        """Read and preprocess the samples of ``block`` into one tensor; unusable ones get their reason."""
        start, stop = self.layout.block_range(block)
        n = stop - start
        loaded = self.source.load_range(start, stop)
        if loaded is not None and tuple(loaded.x.shape[1:]) == self.layout.input_shape:
            errors = np.full(n, "", dtype=object)
            return LoadedBlock(block, start, stop, loaded.x, loaded.labels, np.asarray(loaded.paths, object), errors)
        x: Tensor | None = None
        labels, paths, errors = np.full(n, -1, dtype=np.int64), np.full(n, "", object), np.full(n, "", object)
        for row in range(n):
            try:
                sample = self.source.load(start + row)
            except SampleError as exc:
                paths[row], errors[row] = _path_of(str(exc)), str(exc)
                continue
            paths[row], labels[row] = sample.path, sample.label
            if tuple(sample.x.shape) != self.layout.input_shape:
                errors[row] = (
                    f"{sample.path}: input shape {tuple(sample.x.shape)} differs from the store's "
                    f"{self.layout.input_shape}"
                )
                continue
            if x is None:
                x = torch.zeros((n, *self.layout.input_shape), dtype=sample.x.dtype)
            x[row] = sample.x
        return LoadedBlock(block, start, stop, x, labels, paths, errors)

    def explain(self, loaded: LoadedBlock) -> ExplainedBlock:
        """Explain the usable samples of a loaded block in batches of ``batch_size``."""
        errors = loaded.errors.copy()
        if self.settings.target == "label":
            unlabelled = np.flatnonzero((loaded.labels < 0) & (errors == ""))
            for row in unlabelled:
                errors[row] = f"{loaded.paths[row]}: no label to explain (target 'label')"
        ready = np.flatnonzero(errors == "")
        explained = ExplainedBlock(loaded, errors)
        size = self.settings.batch_size
        for first in range(0, len(ready), size):
            rows = ready[first : first + size]
            assert loaded.x is not None  # a usable sample was loaded into it
            x = loaded.x[_rows_index(rows)]  # consecutive rows: a view, as a plain loop would slice
            self._explain_batch(explained, rows, x)
        return explained

    def assemble(self, explained: ExplainedBlock) -> BlockResult:
        """The store rows of an explained block (run in the writer thread by the local executor)."""
        loaded = explained.loaded
        n = loaded.stop - loaded.start
        arrays = {name: np.full((n, *shape), np.nan, dtype=dtype) for name, (shape, dtype) in self._arrays.items()}
        table = new_table(n)
        table["source_index"][:] = np.arange(loaded.start, loaded.stop)
        table["source_path"][:] = loaded.paths
        table["error"][:] = explained.errors
        column(table, "label")[:] = loaded.labels
        status = np.full(n, FAILED, dtype=np.uint8)
        if explained.batches:
            self._fill(arrays, table, status, explained)
        return BlockResult(loaded.block, loaded.start, loaded.stop, arrays, table, status)

    def __call__(self, block: int) -> BlockResult:
        return self.assemble(self.explain(self.load(block)))

    def _explain_batch(self, explained: ExplainedBlock, rows: np.ndarray, x: Tensor) -> None:
        """Explain a batch into ``explained``; if the model fails on it, sample by sample (failures get the reason)."""
        loaded = explained.loaded
        try:
            result = self.runner(x, self._target(loaded, rows))
        except RelpropError:
            raise
        except RuntimeError as exc:
            if len(rows) == 1:
                explained.errors[rows[0]] = f"{loaded.paths[rows[0]]}: the model failed ({first_line(exc)})"
                return
            for k in range(len(rows)):
                self._explain_batch(explained, rows[k : k + 1], x[k : k + 1])
            return
        explained.keep(rows, result, self.settings.layers)

    def _target(self, loaded: LoadedBlock, rows: np.ndarray) -> Any:
        if self.settings.target == "label":
            return torch.from_numpy(loaded.labels[rows].astype(np.int64))
        return self.settings.target

    def _fill(
        self,
        arrays: dict[str, np.ndarray],
        table: dict[str, np.ndarray],
        status: np.ndarray,
        explained: ExplainedBlock,
    ) -> None:
        """Copy the explained rows into the block's arrays; samples with non-finite values fail instead."""
        kept = {name: value.numpy() for name, value in explained.values.items()}
        rows = np.concatenate(explained.batches)
        relevance = explained.values["relevance"]
        # per batch, as a plain loop would call it: the same sums bit for bit
        size = self.settings.analysis_size
        arrays["downsampled"][rows] = torch.cat(
            [downsample(relevance[_rows_index(batch)], size) for batch in explained.batches]
        ).numpy()
        for name in ("relevance", "output", *(f"layers/{name}" for name in self.settings.layers)):
            arrays[name][rows] = kept[name][rows]
        if "inputs" in arrays:
            assert explained.loaded.x is not None
            arrays["inputs"][rows] = explained.loaded.x.float().numpy()[rows]
        output = kept["output"][rows]
        column(table, "target")[rows] = kept["target"][rows]
        column(table, "prediction")[rows] = output.argmax(1) if output.ndim == 2 else -1
        for name in LEDGER_COLUMNS:
            column(table, name)[rows] = kept[name][rows]
        status[rows] = OK
        finite = np.isfinite(kept["relevance"][rows].reshape(len(rows), -1)).all(1)
        finite &= np.isfinite(output.reshape(len(rows), -1)).all(1)
        bad = rows[~finite]
        for name in arrays:
            arrays[name][bad] = np.nan
        table["ledger"][bad] = np.nan
        column(table, "target")[bad] = column(table, "prediction")[bad] = -1
        table["error"][bad] = "the explanation is not finite (NaN or Inf); try a larger epsilon"
        status[bad] = FAILED


def _rows_index(rows: np.ndarray) -> slice | Tensor:
    """Index of sorted block rows: a slice when they are consecutive (a view), else the rows."""
    if rows[-1] - rows[0] + 1 == len(rows):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return torch.from_numpy(rows)


def _path_of(reason: str) -> str:
    """The path a load failure's message starts with (``PATH: reason``), else empty."""
    head, sep, _ = reason.partition(": ")
    return head if sep else ""
