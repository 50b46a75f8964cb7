"""The relevance store: a chunked Zarr directory that a dataset run fills and analyses read.

Layout (``N`` samples, ``B`` samples per committed chunk, Zarr format 3)::

    STORE/
      zarr.json              group; attributes["relprop"] = the metadata record (below)
      .relprop-lock          the writers' lock (empty when no run holds it)
      relevance              (N, *input)   float32|float16   the input relevance
      inputs                 (N, *input)   float32           only with store_inputs
      downsampled            (N, *small)   float32           Σ over channels, sum-pooled to ≤ analysis_size
      output                 (N, *out)     float32           the model output
      layers/<module path>   (N, C) float32 with layer_reduce="channels", else (N, *module output)
      status                 (N,) uint8    0 pending, 1 ok, 2 failed
      error                  (N,) str      why a sample failed
      source_index           (N,) int64    the sample's index in the source (written by its worker)
      source_path            (N,) str      where it came from
      classes                (N, 3) int64  label, target (explained class), prediction; -1: none
      ledger                 (N, 4) float64  score, input_relevance, absorbed, residual

``classes`` and ``ledger`` keep several per-sample numbers in one array (their column names
are in the array's attributes) because every array costs a write per block: fewer arrays keep
the writer at a few per cent of the explainer's time on small models.
:meth:`RelevanceStore.table` returns every column by name.

Chunking: an array with more than 4096 values per sample (relevance and inputs of images,
whole layer maps) has one sample per chunk row, so one sample is read without reading
others, and the chunks of a block are grouped in one shard file; smaller arrays (the table,
outputs, downsampled and per-channel relevance, 8×8 digits) are chunked by block, one file
per block: writing 256 small samples as 256 inner chunks costs more than explaining them,
and reading the block is as fast as reading one of them. Either way a data set of a million
samples is tens of thousands of files, not millions.

A block is written by exactly one worker, its arrays concurrently and ``status`` once they
are all written: Zarr writes every file through a temporary name and a rename, so a block
is either committed (its status chunk is written) or redone on resume; a killed run never
leaves a half-written sample that counts as done. Floating-point values of pending or
failed samples are NaN.

The metadata record (``RelevanceStore.metadata``) holds ``format``, ``state`` (``writing``,
``interrupted``, ``complete``), ``samples``, ``chunk_size``, ``layout`` (shapes),
``settings`` (method, composite, parameters, target, layers ...), ``model`` (name, class,
SHA-256 of the weights), ``source`` (kind, location, length, class names), the relprop,
torch and zarr versions, ``created`` and one entry per run in ``runs``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigurationError, StoreError
from .lock import lock_holder
from .settings import first_difference, jsonable, model_identity

__all__ = [
    "CLASS_COLUMNS",
    "COLUMNS",
    "FAILED",
    "FORMAT",
    "LEDGER_COLUMNS",
    "OK",
    "PENDING",
    "TABLE",
    "BlockResult",
    "RelevanceStore",
    "SampleArray",
    "StoreLayout",
    "StoreWriter",
    "column",
    "create_store",
    "downsample",
    "downsampled_shape",
    "new_table",
    "read_status",
]

FORMAT = "relprop-dataset/1"
PENDING, OK, FAILED = 0, 1, 2
STATUS_NAMES = {"pending": PENDING, "ok": OK, "failed": FAILED}
LEDGER_COLUMNS = ("score", "input_relevance", "absorbed", "residual")
CLASS_COLUMNS = ("label", "target", "prediction")
#: The small per-sample arrays: name → (numpy dtype, value of pending or failed samples, column names of a
#: 2-D array or ``None`` for a 1-D one).
TABLE: dict[str, tuple[Any, Any, tuple[str, ...] | None]] = {
    "source_index": (np.int64, -1, None),
    "source_path": (str, "", None),
    "error": (str, "", None),
    "classes": (np.int64, -1, CLASS_COLUMNS),
    "ledger": (np.float64, np.nan, LEDGER_COLUMNS),
}
#: Column name → (array, position in it or ``None``).
COLUMNS: dict[str, tuple[str, int | None]] = {
    column: (name, k if columns else None)
    for name, (_, _, columns) in TABLE.items()
    for k, column in enumerate(columns or (name,))
}


def new_table(n: int) -> dict[str, np.ndarray]:
    """The small arrays of ``n`` samples, filled with the values of pending samples."""
    table = {}
    for name, (dtype, fill, columns) in TABLE.items():
        shape = (n,) if columns is None else (n, len(columns))
        table[name] = np.full(shape, fill, dtype=object if dtype is str else dtype)
    return table


def column(table: Mapping[str, Any], name: str) -> Any:
    """Column ``name`` of a table of arrays (a view that can be assigned to, or the zarr array's selection)."""
    array, position = COLUMNS[name]
    return table[array] if position is None else table[array][:, position]


# Arrays of at most this many values per sample are chunked by block; larger ones one sample per chunk.
_SMALL = 4096


# -- downsampling ----------------------------------------------------------------------------------
def _pool_factors(shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(s / size)) for s in shape)


def downsampled_shape(input_shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Shape of :func:`downsample`'s result per sample for inputs shaped ``input_shape``."""
    spatial = input_shape[1:] if len(input_shape) >= 2 else input_shape
    return tuple(math.ceil(s / f) for s, f in zip(spatial, _pool_factors(spatial, size), strict=True))


def downsample(relevance: Tensor, size: int) -> Tensor:
    """Relevance summed over channels (axis 1, when there are axes after it) and sum-pooled.

    Every axis after that is pooled by the smallest integer factor that brings it to at most
    ``size`` (zero-padded at the end), so the total relevance of each sample is kept.
    """
    r = relevance.detach().float()
    if r.dim() >= 3:
        r = r.sum(1)
    factors = _pool_factors(tuple(r.shape[1:]), size)
    for axis, factor in enumerate(factors, start=1):
        if factor == 1:
            continue
        length = r.shape[axis]
        pad = (-length) % factor
        if pad:
            widths = [0, 0] * (r.dim() - 1 - axis) + [0, pad]
            r = torch.nn.functional.pad(r, widths)
        shape = list(r.shape)
        shape[axis : axis + 1] = [shape[axis] // factor, factor]
        r = r.reshape(shape).sum(axis + 1)
    return r


# -- layout ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreLayout:
    """The shapes of a store's arrays (per sample) and its chunking."""

    samples: int
    chunk_size: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    downsampled_shape: tuple[int, ...]
    dtype: str = "float32"
    layer_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    store_inputs: bool = False

    @property
    def blocks(self) -> int:
        """Number of committed chunks (blocks of ``chunk_size`` samples)."""
        return math.ceil(self.samples / self.chunk_size)

    def block_range(self, block: int) -> tuple[int, int]:
        """``(start, stop)`` of the samples in ``block``."""
        start = block * self.chunk_size
        return start, min(self.samples, start + self.chunk_size)

    def arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every data array (not the table): name → (per-sample shape, dtype)."""
        arrays = {
            "relevance": (self.input_shape, self.dtype),
            "downsampled": (self.downsampled_shape, "float32"),
            "output": (self.output_shape, "float32"),
        }
        if self.store_inputs:
            arrays["inputs"] = (self.input_shape, "float32")
        for name, shape in self.layer_shapes.items():
            arrays[f"layers/{name}"] = (shape, "float32" if len(shape) == 1 else self.dtype)
        return arrays

    def record(self) -> dict[str, Any]:
        """The layout as JSON."""
        return jsonable(
            {
                "samples": self.samples,
                "chunk_size": self.chunk_size,
                "input_shape": self.input_shape,
                "output_shape": self.output_shape,
                "downsampled_shape": self.downsampled_shape,
                "dtype": self.dtype,
                "layer_shapes": dict(self.layer_shapes),
                "store_inputs": self.store_inputs,
            }
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StoreLayout:
        """The layout a store's metadata describes."""
        return cls(
            samples=int(record["samples"]),
            chunk_size=int(record["chunk_size"]),
            input_shape=tuple(record["input_shape"]),
            output_shape=tuple(record["output_shape"]),
            downsampled_shape=tuple(record["downsampled_shape"]),
            dtype=str(record["dtype"]),
            layer_shapes={k: tuple(v) for k, v in record["layer_shapes"].items()},
            store_inputs=bool(record["store_inputs"]),
        )


def _chunking(shape: tuple[int, ...], block: int) -> dict[str, Any]:
    if math.prod(shape) <= _SMALL:
        return {"chunks": (block, *shape)}
    return {"chunks": (1, *shape), "shards": (block, *shape)}


def create_store(path: Path, layout: StoreLayout, metadata: Mapping[str, Any]) -> None:
    """Create the arrays of a new store at ``path`` (an empty folder holding only the lock) and its metadata."""
    import zarr

    if (path / "zarr.json").exists():
        raise StoreError(f"{path} already holds a Zarr group; remove it first")
    # Mode "a": the folder already holds the lock file, which modes "w" and "w-" would delete or refuse.
    group = zarr.open_group(str(path), mode="a")
    n, block = layout.samples, layout.chunk_size
    for name, (shape, dtype) in layout.arrays().items():
        group.create_array(
            name, shape=(n, *shape), dtype=dtype, fill_value=np.nan, compressors=None, **_chunking(shape, block)
        )
    for name, (dtype, fill, columns) in TABLE.items():
        width = () if columns is None else (len(columns),)
        array = group.create_array(name, shape=(n, *width), chunks=(block, *width), dtype=dtype, fill_value=fill)
        if columns is not None:
            array.attrs["columns"] = list(columns)
    group.create_array("status", shape=(n,), chunks=(block,), dtype=np.uint8, fill_value=PENDING)
    group.attrs["relprop"] = jsonable(dict(metadata))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata record of the store at ``path``; :class:`StoreError` if it is not a relprop store."""
    import zarr

    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not a relevance store (no zarr.json in it); make one with relprop explain-dataset")
    try:
        meta = zarr.open_group(str(path), mode="r").attrs.get("relprop")
    except Exception as exc:  # zarr raises several types for a damaged zarr.json
        raise StoreError(f"{path} is not a readable Zarr group ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{path} is a Zarr group but not a relprop relevance store ({FORMAT}); choose another path")
    return dict(meta)


def read_status(path: Path) -> np.ndarray:
    """The per-sample status array of the store at ``path``."""
    import zarr

    group: Any = zarr.open_group(str(path), mode="r")
    return np.asarray(group["status"][:])


def write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Replace the store's metadata record (only the run holding the lock does this)."""
    import zarr

    zarr.open_group(str(path), mode="r+").attrs["relprop"] = jsonable(dict(metadata))


# -- writing ---------------------------------------------------------------------------------------
@dataclass
class BlockResult:
    """Everything a block adds to a store: rows of each array, the table columns and the status.

    ``arrays`` and ``table`` hold one row per sample of the block (``stop - start`` rows).
    """

    block: int
    start: int
    stop: int
    arrays: dict[str, np.ndarray]
    table: dict[str, np.ndarray]
    status: np.ndarray

    @property
    def ok(self) -> int:
        """Samples explained."""
        return int((self.status == OK).sum())

    @property
    def failures(self) -> list[tuple[int, str]]:
        """``(sample index, reason)`` of the failed samples."""
        failed = np.flatnonzero(self.status == FAILED)
        errors = column(self.table, "error")
        return [(self.start + int(i), str(errors[i])) for i in failed]


class StoreWriter:
    """Writes blocks into an existing store; any number of processes may write disjoint blocks.

    Only the store path travels (to Ray workers); the arrays are opened once per process.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._arrays: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_arrays": {}}

    def _array(self, name: str) -> Any:
        # Opening an array reads and parses its zarr.json: done once per array and process, not per block.
        array = self._arrays.get(name)
        if array is None:
            import zarr

            array = self._arrays[name] = zarr.open_array(str(self.path / name), mode="r+")
        return array

    def write(self, result: BlockResult) -> None:
        """Write one block; its status chunk goes last, once every other array's is written, which commits it.

        The arrays are written concurrently on Zarr's event loop, in one round trip from this
        thread: a third less CPU than one blocking write per array, which matters when a block of
        small samples costs only a few times more to explain than to write.
        """
        from zarr.core.sync import sync

        rows = slice(result.start, result.stop)
        values = (*result.arrays.items(), *result.table.items())
        arrays = {name: self._array(name).async_array for name in (*(name for name, _ in values), "status")}

        async def commit() -> None:
            await asyncio.gather(*(arrays[name].setitem(rows, value) for name, value in values))
            await arrays["status"].setitem(rows, result.status)

        sync(commit())


# -- reading ---------------------------------------------------------------------------------------
class SampleArray:
    """One per-sample array of a store, read lazily.

    ``a[i]`` is sample ``i`` (a NumPy array), ``a[i:j]`` and ``a[[i, k, ...]]`` stack samples,
    ``a.shape``/``a.dtype``/``len(a)`` describe it, and :meth:`batches` streams it.
    """

    def __init__(self, array: Any, name: str) -> None:
        self._array = array
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *per-sample shape)``."""
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored dtype."""
        return np.dtype(self._array.dtype)

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(index, int | np.integer):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"sample {i} is out of range for {self.name} with {len(self)} samples")
            return np.asarray(self._array[i % len(self)])
        if isinstance(index, slice):
            return np.asarray(self._array[index])
        indices = np.asarray(index, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return np.asarray(self._array.oindex[indices])

    def batches(self, indices: np.ndarray | None = None, size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, values)`` in pieces of at most ``size`` samples (all samples, or ``indices``)."""
        chosen = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, len(chosen), size):
            part = chosen[start : start + size]
            yield part, self[part]

    def __repr__(self) -> str:
        return f"SampleArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def _strings(values: np.ndarray) -> np.ndarray:
    """Zarr's variable-length strings (NumPy ``StringDType``) as an ordinary ``str`` array."""
    return values.astype(object).astype(str)


class RelevanceStore:
    """A relevance store opened read-only for analysis.

    Parameters
    ----------
    path
        The store folder.
    expect
        Settings the analysis relies on (keys of ``metadata["settings"]``, e.g.
        ``{"composite": "epsilon-gamma-box", "layers": ["features.28"]}``); a store written
        with other values is refused with a :class:`~relprop.errors.ConfigurationError` naming
        the first difference.
    model
        If given, the store must have been written with this model's weights (SHA-256).
    strict
        ``False`` turns those refusals into warnings.

    Attributes
    ----------
    relevance, downsampled, output
        :class:`SampleArray` of the input relevance, its downsampled copy and the model outputs.
    inputs
        The preprocessed inputs when the run stored them, else ``None``.
    metadata
        The store's metadata record (a copy).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        expect: Mapping[str, Any] | None = None,
        model: nn.Module | None = None,
        strict: bool = True,
    ) -> None:
        import zarr

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.layout = StoreLayout.from_record(self.metadata["layout"])
        self._group: Any = zarr.open_group(str(self.path), mode="r")
        self.relevance = SampleArray(self._group["relevance"], "relevance")
        self.downsampled = SampleArray(self._group["downsampled"], "downsampled")
        self.output = SampleArray(self._group["output"], "output")
        self.inputs = SampleArray(self._group["inputs"], "inputs") if self.layout.store_inputs else None
        self.check(expect or {}, model=model, strict=strict)

    # -- identity ----------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """The settings the store was written with (method, composite, params, target, layers ...)."""
        return dict(self.metadata["settings"])

    @property
    def classes(self) -> list[str] | None:
        """Class names of the source, when known."""
        classes = self.metadata["source"].get("classes")
        return list(classes) if classes else None

    def check(self, expect: Mapping[str, Any], *, model: nn.Module | None = None, strict: bool = True) -> None:
        """Refuse (or, with ``strict=False``, warn about) a store written with other settings or model."""
        unknown = sorted(set(expect) - set(self.metadata["settings"]))
        if unknown:
            raise ConfigurationError(
                f"unknown store setting {unknown[0]!r}; the settings are {', '.join(self.metadata['settings'])}."
            )
        problem = first_difference(self.metadata["settings"], expect, list(expect))
        if problem is None and model is not None:
            current = model_identity(model)
            problem = first_difference(self.metadata["model"], current, ["weights_sha256"])
        if problem is None:
            return
        message = f"store {self.path} was written with {problem}; open it with matching settings or strict=False"
        if strict:
            raise ConfigurationError(message)
        import warnings

        warnings.warn(message, stacklevel=2)

    # -- state -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.layout.samples

    def status(self) -> np.ndarray:
        """Per-sample status: 0 pending, 1 ok, 2 failed (``relprop.dataset.store.PENDING/OK/FAILED``)."""
        return np.asarray(self._group["status"][:])

    def counts(self) -> dict[str, int]:
        """How many samples are ``ok``, ``failed`` and ``pending``."""
        status = self.status()
        return {name: int((status == value).sum()) for name, value in STATUS_NAMES.items()}

    @property
    def state(self) -> str:
        """``"writing"`` (a live run holds the store), ``"complete"`` or ``"interrupted"``."""
        if lock_holder(self.path) is not None:
            return "writing"
        meta = read_metadata(self.path)
        if meta.get("state") == "complete" and self.counts()["pending"] == 0:
            return "complete"
        return "interrupted"

    @property
    def complete(self) -> bool:
        """Whether every sample is explained or failed and no run is writing."""
        return self.state == "complete"

    def require_complete(self) -> None:
        """Raise :class:`~relprop.errors.StoreError` unless the store is complete (for analyses)."""
        holder = lock_holder(self.path)
        if holder is not None:
            raise StoreError(
                f"store {self.path} is still being written (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}); wait for the run to finish"
            )
        counts = self.counts()
        if counts["pending"] or read_metadata(self.path).get("state") != "complete":
            done = counts["ok"] + counts["failed"]
            raise StoreError(
                f"store {self.path} is incomplete ({done} of {len(self)} samples; the run that wrote it stopped); "
                "finish it with relprop explain-dataset ... --resume"
            )

    # -- data --------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Module paths whose relevance the store holds."""
        return list(self.layout.layer_shapes)

    def layer(self, name: str) -> SampleArray:
        """Relevance at a module's output: ``(N, C)`` per channel or ``(N, *output shape)``."""
        if name not in self.layout.layer_shapes:
            stored = ", ".join(self.layers) or "none"
            raise ConfigurationError(
                f"store {self.path} holds no relevance for layer {name!r} (stored layers: {stored}); explain the data "
                "set again with --layers."
            )
        return SampleArray(self._group[f"layers/{name}"], f"layers/{name}")

    def column(self, name: str) -> np.ndarray:
        """One per-sample column (``label``, ``target``, ``score``, ``source_path`` ... see :data:`COLUMNS`)."""
        if name not in COLUMNS:
            raise ConfigurationError(f"unknown column {name!r}; the columns are {', '.join(COLUMNS)}.")
        array, position = COLUMNS[name]
        values = np.asarray(self._group[array][:])
        values = values if position is None else values[:, position]
        return _strings(values) if TABLE[array][0] is str else values

    def table(self) -> dict[str, np.ndarray]:
        """Every per-sample column as a dict of NumPy arrays: ``index``, ``status`` and :data:`COLUMNS`."""
        table: dict[str, np.ndarray] = {"index": np.arange(len(self)), "status": self.status()}
        for name, (dtype, _, columns) in TABLE.items():
            values = np.asarray(self._group[name][:])
            if columns is None:
                table[name] = _strings(values) if dtype is str else values
            else:
                table.update({c: values[:, k] for k, c in enumerate(columns)})
        return table

    def indices(self, class_: int | None = None, *, by: str = "target", status: str | None = "ok") -> np.ndarray:
        """Sample indices with a given status (``"ok"``, ``"failed"``, ``"pending"``, ``None`` for all),
        optionally of one class by ``"target"`` (explained class), ``"label"`` or ``"prediction"``."""
        if by not in ("target", "label", "prediction"):
            raise ConfigurationError(f"by must be 'target', 'label' or 'prediction', got {by!r}.")
        if status is not None and status not in STATUS_NAMES:
            raise ConfigurationError(f"status must be one of {', '.join(STATUS_NAMES)} or None, got {status!r}.")
        keep = np.ones(len(self), dtype=bool)
        if status is not None:
            keep &= self.status() == STATUS_NAMES[status]
        if class_ is not None:
            keep &= self.column(by) == int(class_)
        return np.flatnonzero(keep)

    def source(self, preprocess: Any = None) -> Any:
        """Open the source the store was made from again (inputs for analyses that need them).

        Works for sources named by a spec (``digits``, a folder, an array file,
        ``package.module:name``) that are still where they were; ``preprocess`` as when the
        store was written (image folders). The length must match the store's.
        """
        from .sources import open_source

        record = self.metadata["source"]
        opened = open_source(str(record["location"]), preprocess)
        if len(opened) != len(self):
            raise StoreError(
                f"source {record['location']} now has {len(opened)} samples, the store {self.path} was made from "
                f"{len(self)}; it changed since"
            )
        return opened

    def failures(self) -> list[tuple[int, str, str]]:
        """``(index, source path, reason)`` of every failed sample."""
        failed = self.indices(status="failed")
        paths, errors = self.column("source_path"), self.column("error")
        return [(int(i), str(paths[i]), str(errors[i])) for i in failed]

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"RelevanceStore({str(self.path)!r}, samples={len(self)}, ok={c['ok']}, failed={c['failed']}, "
            f"pending={c['pending']}, layers={self.layers})"
        )
