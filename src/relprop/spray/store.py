"""SpRAy on a relevance store: pick a class and a layer, read in batches, analyse.

The store is the one :func:`relprop.dataset.explain_dataset` writes (read with
``relprop.dataset.RelevanceStore``). This module uses only its read API:

* ``store.indices(class_=k)`` — the ids of the successfully explained samples of class ``k``
  (all of them for ``None``);
* ``store.relevance`` — input relevance ``(N, C, H, W)``; ``store.downsampled`` (optional) — its
  downsampled copy, read instead when present (analyses pool heatmaps anyway);
* ``store.layer(name)`` — relevance at a layer, ``(N, C, h, w)`` or ``(N, C)``; ``store.layers``
  (optional) — the names it holds;
* ``store.column("target")`` (``store.table()["labels"]`` for array files) — to name the classes
  a store has when one is missing;
* ``store.require_complete()`` — raises while a run is still writing or after it stopped
  (array files: ``store.complete``).

:class:`ArrayStore` offers the same API over heatmaps saved with NumPy (a ``.npy`` file of
heatmaps, or a ``.npz`` with ``relevance`` and optional ``labels``), so heatmaps computed
elsewhere can be analysed too; :func:`open_store` opens either kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnalysisError, StoreError
from .analysis import SprayResult, analyze_heatmaps

__all__ = ["ArrayStore", "analyze", "heatmaps_of", "open_store"]


class ArrayStore:
    """Heatmaps in a ``.npy`` file (``(N, ...)``) or a ``.npz`` file (``relevance``, optional ``labels``), read
    through the relevance store's API. A ``.npy`` file is memory-mapped, not loaded."""

    layers: tuple[str, ...] = ()
    complete = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AnalysisError(f"{self.path} does not exist; give a relevance store folder, a .npy or a .npz file.")
        try:
            data = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"{self.path} is not a NumPy .npy or .npz file ({exc}).") from None
        if isinstance(data, np.ndarray):
            self.relevance, labels = data, None
        else:
            if "relevance" not in data.files:
                raise AnalysisError(
                    f"{self.path} has no array 'relevance' (it has: {', '.join(data.files) or 'nothing'}); save the "
                    "heatmaps with np.savez(path, relevance=..., labels=...)."
                )
            self.relevance = data["relevance"]
            labels = data["labels"] if "labels" in data.files else None
        if labels is not None and len(labels) != len(self.relevance):
            raise AnalysisError(
                f"{self.path}: 'labels' has {len(labels)} entries for {len(self.relevance)} heatmaps; give one label "
                "per heatmap."
            )
        self.labels = None if labels is None else np.asarray(labels)

    def indices(self, class_: int | None = None) -> np.ndarray:
        """The heatmaps of class ``class_`` (all for ``None``)."""
        if class_ is None:
            return np.arange(len(self.relevance))
        if self.labels is None:
            raise AnalysisError(
                f"{self.path} has no 'labels' array, so it cannot select class {class_}; omit the class."
            )
        return np.flatnonzero(self.labels == class_)

    def table(self) -> dict[str, np.ndarray]:
        """``labels`` (``-1`` where the file has none)."""
        labels = self.labels if self.labels is not None else np.full(len(self.relevance), -1)
        return {"labels": labels}

    def layer(self, name: str) -> Any:
        """Array files hold input relevance only."""
        raise KeyError(name)


def open_store(path: str | Path) -> Any:
    """A relevance store folder (``relprop.dataset.RelevanceStore``), or a ``.npy`` / ``.npz`` file of heatmaps."""
    location = Path(path)
    if location.is_dir():
        try:
            from ..dataset import RelevanceStore  # type: ignore[attr-defined]
        except ImportError:
            raise AnalysisError(
                f"{location} is a folder, but this relprop has no relevance store (relprop.dataset); install a version "
                "with `relprop explain-dataset`, or pass a .npy/.npz file of heatmaps."
            ) from None
        return RelevanceStore(location)
    return ArrayStore(location)


def require_complete(store: Any) -> None:
    """Refuse a store that a run is still writing, or whose run stopped before the end."""
    require = getattr(store, "require_complete", None)
    if callable(require):
        try:
            require()
        except StoreError as exc:
            raise AnalysisError(
                f"{exc}; or analyse what it holds so far (allow_incomplete=True, --allow-incomplete)."
            ) from None
    elif not getattr(store, "complete", True):
        raise AnalysisError(
            f"{_store_name(store)} is still being written (or its run was interrupted); wait for it to finish, "
            "resume it, or pass allow_incomplete=True to analyse what it holds so far."
        )


def _store_name(store: Any) -> str:
    return str(getattr(store, "path", None) or "the store")


def heatmaps_of(store: Any, layer: str | None) -> Any:
    """The array SpRAy reads: a layer's relevance, the downsampled input relevance, or the input relevance."""
    if layer is None:
        downsampled = getattr(store, "downsampled", None)
        return downsampled if downsampled is not None else store.relevance
    names = getattr(store, "layers", None)
    if names is not None and layer not in names:
        held = ", ".join(names) if names else "none"
        raise AnalysisError(
            f"{_store_name(store)} holds no relevance for layer {layer!r} (it holds: {held}); explain the data set "
            f"again with --layers {layer}."
        )
    try:
        return store.layer(layer)
    except KeyError:
        raise AnalysisError(
            f"{_store_name(store)} holds no relevance for layer {layer!r}; explain the data set again with "
            f"--layers {layer}."
        ) from None


def _class_indices(store: Any, class_: int | None) -> np.ndarray:
    indices = np.asarray(store.indices(class_=class_), dtype=np.int64)
    if len(indices) == 0:
        if class_ is None:
            raise AnalysisError(f"{_store_name(store)} holds no successfully explained sample.")
        present = ", ".join(str(int(c)) for c in _present_classes(store)) or "none"
        raise AnalysisError(
            f"class {class_} has no explained sample in {_store_name(store)} (classes present: {present}); choose "
            "another --class."
        )
    return np.sort(indices)


def _present_classes(store: Any) -> np.ndarray:
    """The classes of the successfully explained samples (the explained class of a relevance store)."""
    if hasattr(store, "column"):
        return np.unique(store.column("target")[store.indices()])
    return np.unique(np.asarray(store.table()["labels"]))


def analyze(
    store: Any,
    class_: int | None = None,
    layer: str | None = None,
    *,
    view: str | None = None,
    allow_incomplete: bool = False,
    **settings: Any,
) -> SprayResult:
    """SpRAy on the samples of one class (all samples for ``None``) of a relevance store.

    Parameters
    ----------
    store
        An open ``relprop.dataset.RelevanceStore`` (see the module notes for what is read).
    class_
        The class whose heatmaps are clustered (``store.indices(class_=...)``).
    layer
        Analyse the relevance at this layer (module path) instead of the input relevance.
    view
        ``map`` (default for input relevance: where in the input) or ``channels`` (default for a
        layer: which channels).
    allow_incomplete
        Analyse a store that a run is still writing (what is there so far).
    **settings
        Passed to :func:`relprop.spray.analyze_heatmaps` (``clusters``, ``neighbors``, ``size`` ...).

    Raises
    ------
    AnalysisError
        The store is still being written, has no such layer, or the class has no or too few samples.
    """
    if not allow_incomplete:
        require_complete(store)
    heatmaps = heatmaps_of(store, layer)
    indices = _class_indices(store, class_)
    chosen_view = view or ("map" if layer is None else "channels")
    subject = f"{'every class' if class_ is None else f'class {class_}'} of {_store_name(store)}"
    result = analyze_heatmaps(heatmaps, rows=indices, indices=indices, view=chosen_view, subject=subject, **settings)
    result.params.update({"class": class_, "layer": layer, "store": _store_name(store)})
    return result
