"""Explain whole data sets into a resumable, chunked Zarr store, on one machine or on Ray.

    from relprop.dataset import explain_dataset, RelevanceStore
    store = explain_dataset(model, "digits", "digits.zarr", composite="epsilon-gamma-box", low=0.0, high=1.0)
    store.relevance[0], store.table()["score"], store.indices(class_=3)

:func:`explain_dataset` writes the store (see :mod:`relprop.dataset.store` for its layout);
:class:`RelevanceStore` reads it for analyses; :mod:`relprop.dataset.sources` defines where
samples come from. Needs the ``dataset`` extra (zarr); the Ray executor the ``distributed`` extra.
"""

from __future__ import annotations

from .run import EXECUTORS, explain_dataset, register_executor
from .sources import (
    ArraySource,
    DigitsSource,
    ImageFolderSource,
    Sample,
    SampleError,
    Source,
    SourceKind,
    TorchDatasetSource,
    as_source,
    open_source,
    register_source,
)
from .store import FAILED, OK, PENDING, RelevanceStore, SampleArray

__all__ = [
    "EXECUTORS",
    "FAILED",
    "OK",
    "PENDING",
    "ArraySource",
    "DigitsSource",
    "ImageFolderSource",
    "RelevanceStore",
    "Sample",
    "SampleArray",
    "SampleError",
    "Source",
    "SourceKind",
    "TorchDatasetSource",
    "as_source",
    "explain_dataset",
    "open_source",
    "register_executor",
    "register_source",
]
