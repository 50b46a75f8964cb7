"""Where the samples of a data set come from: one small interface and a registry of kinds.

A :class:`Source` knows how many samples it has and loads one by index as a model input
(already preprocessed), its label and where it came from. A sample that cannot be used (a
broken image, a dataset item that raises) raises :class:`SampleError`; the run records it as
failed with that reason and goes on.

Built-in kinds, chosen from a spec string by :func:`open_source` (first match wins):

====================  ==================================================================
``digits``            the 360 held-out test digits shipped with relprop (labels 0–9)
``FOLDER``            image files; files in class sub-folders get the sub-folder's label
``FILE.npz``          arrays ``x`` (model inputs, batch first) and optional ``y`` (labels)
``FILE.npy``          one array of model inputs, batch first
``package.mod:name``  a ``torch.utils.data.Dataset`` (or a function returning one)
====================  ==================================================================

Any ``torch.utils.data.Dataset`` object is accepted directly by :func:`as_source`. Sources
are pickled to Ray workers, so they hold paths and small state, and open files lazily.
"""

from __future__ import annotations

import abc
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError, first_line

__all__ = [
    "ArraySource",
    "DigitsSource",
    "ImageFolderSource",
    "Sample",
    "SampleError",
    "SampleRange",
    "Source",
    "SourceKind",
    "TorchDatasetSource",
    "as_source",
    "describe_sources",
    "open_source",
    "register_source",
]

#: A function turning a PIL image into the model's input tensor (a model bundle's ``preprocess``).
Preprocess = Callable[[Any], Tensor]


class SampleError(Exception):
    """One sample cannot be used; the message (one line) is recorded in the store as its reason."""


@dataclass
class Sample:
    """One model input with what is known about it.

    Attributes
    ----------
    x
        The model input without the batch dimension (float tensor).
    label
        The class label, ``-1`` when unknown.
    path
        Where the sample came from (a file path, or ``source[index]``).
    """

    x: Tensor
    label: int
    path: str


@dataclass
class SampleRange:
    """Consecutive samples loaded in one piece (all of them usable).

    Attributes
    ----------
    x
        The model inputs, batch first (float tensor).
    labels
        One class label per sample (int64), ``-1`` when unknown.
    paths
        Where each sample came from.
    """

    x: Tensor
    labels: np.ndarray
    paths: list[str]


class Source(abc.ABC):
    """A data set to explain: a length and samples loaded by index.

    Subclasses set :attr:`kind` and implement :meth:`__len__`, :meth:`load` and
    :meth:`location`; :attr:`classes` names the labels when known. Sources that hold their
    samples in arrays also implement :meth:`load_range`, which a run then uses per block.
    """

    kind: ClassVar[str] = "source"
    classes: list[str] | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def load(self, index: int) -> Sample:
        """Load sample ``index`` (``0 <= index < len(self)``); raise :class:`SampleError` if it is unusable."""

    @abc.abstractmethod
    def location(self) -> str:
        """Where the data live (a path or a name), for the store's metadata and messages."""

    def load_range(self, start: int, stop: int) -> SampleRange | None:
        """Samples ``start`` to ``stop`` in one piece, or ``None`` to have them loaded one by one (the default).

        For sources whose samples are rows of an array: one tensor per block instead of one per
        sample keeps loading small beside the explanation of small inputs. It returns the same
        values as :meth:`load` would, and is only for sources where no sample fails to load.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """What identifies this source in a store's metadata (kind, location, length, classes)."""
        return {"kind": self.kind, "location": self.location(), "length": len(self), "classes": self.classes}


def _as_tensor(value: Any, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().float()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
    raise SampleError(f"{where}: expected a tensor or array, got {type(value).__name__}")


class DigitsSource(Source):
    """The 360 held-out test digits shipped with relprop (inputs ``(1, 8, 8)`` in ``[0, 1]``)."""

    kind = "digits"

    def __init__(self) -> None:
        from ..models.digits import digits_test_set

        test = digits_test_set()
        self._images = test.images
        self._labels = test.labels
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self._labels)

    def load(self, index: int) -> Sample:
        return Sample(self._images[index].clone(), int(self._labels[index]), f"digits[{index}]")

    def load_range(self, start: int, stop: int) -> SampleRange:
        return SampleRange(
            self._images[start:stop].clone(),
            self._labels[start:stop].numpy().astype(np.int64),
            [f"digits[{index}]" for index in range(start, stop)],
        )

    def location(self) -> str:
        return "digits"


class ArraySource(Source):
    """Model inputs in an array: a ``.npy`` file, a ``.npz`` file with ``x`` (and ``y``), or arrays in memory.

    The values are used as they are (converted to float32): they must already be what the model
    takes. Files are opened lazily in each process (``.npy`` memory-mapped), so the source is
    cheap to send to Ray workers.
    """

    kind = "arrays"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise ConfigurationError(
                f"array file {self.path} does not exist; pass a .npz or .npy file of model inputs."
            )
        self._x: Any = None
        self._y: Any = None
        self._length = self._open()

    @classmethod
    def from_arrays(cls, x: np.ndarray | Tensor, y: np.ndarray | Tensor | None = None) -> ArraySource:
        """A source over arrays in memory (``x`` model inputs batch first, ``y`` optional labels)."""
        source = cls.__new__(cls)
        source.path = None  # type: ignore[assignment]
        source._x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        source._y = None if y is None else (y.numpy() if isinstance(y, Tensor) else np.asarray(y))
        source._length = source._check(source._x, source._y, "the arrays")
        return source

    def _open(self) -> int:
        if self.path.suffix == ".npy":
            try:
                x = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"{self.path} is not a readable .npy array ({first_line(exc)}).") from None
            y = None
        elif self.path.suffix == ".npz":
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if "x" not in data.files:
                        raise ConfigurationError(
                            f"{self.path} has no array 'x' (it has {', '.join(data.files) or 'none'}); save the model "
                            "inputs as x= and the labels as y=."
                        )
                    x = data["x"]
                    y = data["y"] if "y" in data.files else None
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"{self.path} is not a readable .npz archive ({first_line(exc)}).") from None
        else:
            raise ConfigurationError(f"{self.path} is not a .npz or .npy file.")
        self._x, self._y = x, y
        return self._check(x, y, str(self.path))

    @staticmethod
    def _check(x: np.ndarray, y: np.ndarray | None, where: str) -> int:
        if x.ndim < 2:
            raise ConfigurationError(f"{where}: x has shape {x.shape}; it must be model inputs with the batch first.")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ConfigurationError(f"{where}: x has dtype {x.dtype}; model inputs must be numbers.")
        if y is not None and (y.ndim != 1 or len(y) != len(x)):
            raise ConfigurationError(f"{where}: y has shape {y.shape}; it must hold one label per sample ({len(x)}).")
        return len(x)

    def __len__(self) -> int:
        return self._length

    def load(self, index: int) -> Sample:
        if self._x is None:
            self._open()
        x = torch.from_numpy(np.array(self._x[index], dtype=np.float32, copy=True))
        label = -1 if self._y is None else int(self._y[index])
        return Sample(x, label, f"{self.location()}[{index}]")

    def load_range(self, start: int, stop: int) -> SampleRange:
        if self._x is None:
            self._open()
        x = torch.from_numpy(np.array(self._x[start:stop], dtype=np.float32, copy=True))
        labels = np.full(stop - start, -1, dtype=np.int64) if self._y is None else self._y[start:stop].astype(np.int64)
        where = self.location()
        return SampleRange(x, labels, [f"{where}[{index}]" for index in range(start, stop)])

    def location(self) -> str:
        return "arrays in memory" if self.path is None else str(self.path)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:  # reopened (memory-mapped) where it is used
            state["_x"] = state["_y"] = None
        return state


class ImageFolderSource(Source):
    """Image files in a folder; files inside class sub-folders get that sub-folder's label.

    Class labels are the sub-folders' positions in sorted order (as torchvision's
    ``ImageFolder``); images directly in the folder have no label (``-1``). Each image is read
    with :func:`relprop.images.read_image` and preprocessed with the model's ``preprocess``.
    """

    kind = "image-folder"

    def __init__(self, root: str | Path, preprocess: Preprocess | None) -> None:
        from ..images import IMAGE_SUFFIXES

        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ConfigurationError(f"image folder {self.root} does not exist.")
        if preprocess is None:
            raise ConfigurationError(
                f"image folder {self.root} needs the model's preprocessing; pass preprocess= (e.g. a model bundle's "
                "preprocess from relprop.models.loading.load_model)."
            )
        self.preprocess = preprocess
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes = [p.name for p in class_dirs] or None
        files: list[tuple[Path, int]] = [(p, -1) for p in sorted(self.root.iterdir()) if _is_image(p, IMAGE_SUFFIXES)]
        for label, folder in enumerate(class_dirs):
            files.extend((p, label) for p in sorted(folder.rglob("*")) if _is_image(p, IMAGE_SUFFIXES))
        if not files:
            raise ConfigurationError(
                f"image folder {self.root} contains no image files ({', '.join(IMAGE_SUFFIXES)}), neither directly nor "
                "in class sub-folders."
            )
        self.files = [str(p) for p, _ in files]
        self.labels = [label for _, label in files]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Sample:
        from ..images import ImageReadError, read_image

        path = Path(self.files[index])
        try:
            image = read_image(path).image
        except ImageReadError as exc:
            raise SampleError(str(exc)) from None
        return Sample(self.preprocess(image), self.labels[index], str(path))

    def location(self) -> str:
        return str(self.root)


def _is_image(path: Path, suffixes: Sequence[str]) -> bool:
    return path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")


class TorchDatasetSource(Source):
    """Any map-style ``torch.utils.data.Dataset``.

    An item is the input, or a tuple/list ``(input, label, ...)``; the input may be a tensor, a
    NumPy array or a PIL image (then ``preprocess`` turns it into the model input). An item
    that raises is recorded as a failed sample with the exception's first line.
    """

    kind = "torch-dataset"

    def __init__(self, dataset: Any, preprocess: Preprocess | None = None, name: str | None = None) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigurationError(
                f"{type(dataset).__name__} is not a map-style dataset (it needs __len__ and __getitem__); iterable "
                "datasets cannot be resumed by index."
            )
        self.dataset = dataset
        self.preprocess = preprocess
        self.name = name or f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        classes = getattr(dataset, "classes", None)
        self.classes = [str(c) for c in classes] if isinstance(classes, Sequence) and classes else None

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Sample:
        where = f"{self.name}[{index}]"
        try:
            item = self.dataset[index]
        except Exception as exc:  # a user's dataset: any failure is this sample's, recorded with its reason
            raise SampleError(f"{where}: {type(exc).__name__}: {first_line(exc)}") from None
        value, label = (item[0], item[1] if len(item) > 1 else -1) if isinstance(item, tuple | list) else (item, -1)
        if not isinstance(value, Tensor | np.ndarray):
            if self.preprocess is None:
                kind = type(value).__name__
                raise SampleError(f"{where}: the item is a {kind}; pass preprocess= to turn it into a tensor")
            value = self.preprocess(value)
        try:
            label = int(label)
        except (TypeError, ValueError):
            raise SampleError(f"{where}: label {label!r} is not a class index") from None
        return Sample(_as_tensor(value, where), label, where)

    def location(self) -> str:
        return self.name


# -- the registry of source kinds ------------------------------------------------------------------
@dataclass(frozen=True)
class SourceKind:
    """A kind of source that a spec string can name.

    Attributes
    ----------
    name
        Short name (shown in listings).
    description
        One line for listings and help.
    matches
        Whether a spec string names this kind.
    open
        ``(spec, preprocess) -> Source``.
    """

    name: str
    description: str
    matches: Callable[[str], bool]
    open: Callable[[str, Preprocess | None], Source]


_KINDS: list[SourceKind] = []
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def register_source(kind: SourceKind, first: bool = False) -> None:
    """Add a kind of source (tried after the built-in ones, or before them with ``first=True``)."""
    if first:
        _KINDS.insert(0, kind)
    else:
        _KINDS.append(kind)


def describe_sources() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered kind, in the order specs are matched."""
    return [(k.name, k.description) for k in _KINDS]


def _open_factory(spec: str, preprocess: Preprocess | None) -> Source:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for source {spec!r} ({first_line(exc)}).") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r} (source {spec!r}).")
    if callable(obj) and not hasattr(obj, "__getitem__"):
        obj = obj()
    if isinstance(obj, Source):
        return obj
    return TorchDatasetSource(obj, preprocess, name=spec)


def _is_array_file(spec: str) -> bool:
    return Path(spec).suffix.lower() in (".npz", ".npy")


register_source(SourceKind("digits", "the 360 held-out test digits shipped with relprop", lambda s: s == "digits",
                           lambda s, p: DigitsSource()))  # fmt: skip
register_source(SourceKind("arrays", ".npz (x, optional y) or .npy file of model inputs", _is_array_file,
                           lambda s, p: ArraySource(s)))  # fmt: skip
register_source(SourceKind("image-folder", "a folder of images; class sub-folders give labels",
                           lambda s: Path(s).is_dir(), lambda s, p: ImageFolderSource(s, p)))  # fmt: skip
register_source(SourceKind("dataset", "package.module:name, a torch Dataset or a function returning one",
                           lambda s: bool(_FACTORY.fullmatch(s)), _open_factory))  # fmt: skip


def open_source(spec: str, preprocess: Preprocess | None = None) -> Source:
    """The source a spec string names (see the module docstring); ``preprocess`` feeds images to the model."""
    for kind in _KINDS:
        if kind.matches(spec):
            return kind.open(spec, preprocess)
    kinds = "; ".join(f"{k.name}: {k.description}" for k in _KINDS)
    raise ConfigurationError(f"source {spec!r} is none of the known kinds ({kinds}); check the path.")


def as_source(source: Any, preprocess: Preprocess | None = None) -> Source:
    """A :class:`Source` from a source, a spec string or path, or a ``torch.utils.data.Dataset``."""
    if isinstance(source, Source):
        return source
    if isinstance(source, str | Path):
        return open_source(str(source), preprocess)
    return TorchDatasetSource(source, preprocess)
