"""What a dataset run is: its settings, the model's identity, and how a store's record is compared.

A store records the settings it was written with (``metadata["settings"]``), the model
(``metadata["model"]``: class and a SHA-256 of its weights) and the source
(``metadata["source"]``). Resuming, or opening a store for an analysis that expects certain
settings, compares these records and names the first difference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigurationError

__all__ = [
    "LAYER_REDUCTIONS",
    "TARGETS",
    "RunSettings",
    "first_difference",
    "jsonable",
    "model_identity",
    "tuned_record",
]

#: How inner-layer relevance is stored: whole (shaped like the module output) or summed per channel.
LAYER_REDUCTIONS = (None, "channels")
#: Named targets besides a class index: the predicted class, or the sample's label.
TARGETS = ("predicted", "label")
DTYPES = ("float32", "float16")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tensors and arrays become lists, tuples lists)."""
    if isinstance(value, Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


@dataclass(frozen=True)
class RunSettings:
    """The settings that decide what a store holds; a resumed run must use the same.

    Attributes
    ----------
    method
        ``"lrp"`` or another method of :mod:`relprop.methods`.
    composite
        Composite name (LRP), or the name of a custom :class:`~relprop.composites.Composite`.
    params
        Composite or method parameters (``epsilon``, ``low`` ...).
    target
        ``None`` (the predicted class), a class index, or ``"label"`` (each sample's label).
    top, contrast
        LRP's top layer (``"logit"``, ``"log-odds"``) and contrast class.
    layers
        Module paths whose output relevance is stored (LRP only).
    layer_reduce
        ``"channels"`` (sum over everything after the channel axis) or ``None`` (whole).
    batch_size
        Samples per explainer call (the batch composition decides the last bits of the result).
    dtype
        ``"float32"`` or ``"float16"`` for the relevance arrays.
    store_inputs
        Whether the preprocessed inputs are stored beside their relevance.
    analysis_size
        Largest side of the downsampled relevance kept for analyses.
    tuned
        For a tuned composite (``relprop tune``): its setting — ``spec``, ``composite``,
        ``params``, ``reference`` (``None``: plain LRP), the model ``fingerprint`` and the
        ``objective``; with a stored reference input, its ``reference_sha256`` (see
        :func:`tuned_record`). ``None`` otherwise.
    """

    method: str = "lrp"
    composite: str | None = "epsilon-gamma-box"
    params: Mapping[str, Any] = field(default_factory=dict)
    target: int | str | None = None
    top: str = "logit"
    contrast: Any = None
    layers: tuple[str, ...] = ()
    layer_reduce: str | None = "channels"
    batch_size: int = 32
    dtype: str = "float32"
    store_inputs: bool = False
    analysis_size: int = 32
    tuned: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.target == "predicted":
            object.__setattr__(self, "target", None)
        if not (self.target is None or self.target == "label" or _is_index(self.target)):
            raise ConfigurationError(
                f"target must be None, 'predicted', 'label' or a class index, got {self.target!r}."
            )
        if self.layer_reduce not in LAYER_REDUCTIONS:
            raise ConfigurationError(f"layer_reduce must be None or 'channels', got {self.layer_reduce!r}.")
        if self.dtype not in DTYPES:
            raise ConfigurationError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}.")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.analysis_size < 1:
            raise ConfigurationError(f"analysis_size must be at least 1, got {self.analysis_size}.")
        if self.layers and self.method != "lrp":
            raise ConfigurationError(f"layers apply to method 'lrp' only, not to {self.method!r}; drop them.")
        if len(set(self.layers)) != len(self.layers):
            raise ConfigurationError(f"layers name a module twice: {', '.join(self.layers)}.")

    def record(self) -> dict[str, Any]:
        """The settings as JSON (what a store keeps and compares)."""
        return jsonable(
            {
                "method": self.method,
                "composite": self.composite if self.method == "lrp" else None,
                "params": dict(sorted(self.params.items())),
                "target": "predicted" if self.target is None else self.target,
                "top": self.top,
                "contrast": self.contrast,
                "layers": list(self.layers),
                "layer_reduce": self.layer_reduce,
                "batch_size": self.batch_size,
                "dtype": self.dtype,
                "store_inputs": self.store_inputs,
                "analysis_size": self.analysis_size,
                # Only stores of tuned composites have the key: older stores stay resumable.
                **({} if self.tuned is None else {"tuned": dict(self.tuned)}),
            }
        )


def tuned_record(tuned: Any) -> dict[str, Any]:
    """What a store records of a :class:`relprop.tuning.TunedComposite` (``RunSettings.tuned``)."""
    candidate = tuned.candidate
    record: dict[str, Any] = {
        "spec": tuned.spec,
        "composite": candidate.composite,
        "params": candidate.param_dict,
        "reference": candidate.reference,
        "fingerprint": tuned.fingerprint,
        "objective": tuned.objective,
    }
    if tuned.reference_input is not None:  # the data's mean: record which one (its values are in the tuned file)
        values = tuned.reference_input.detach().cpu().contiguous().to(torch.float32)
        record["reference_sha256"] = hashlib.sha256(values.numpy().tobytes()).hexdigest()
    return record


def _is_index(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and int(value) >= 0


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, Tensor):
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_identity(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """What identifies a model in a store: a display name, its class and the SHA-256 of its weights."""
    cls = type(model)
    return {
        "name": name or cls.__name__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "weights_sha256": weights_sha256(model),
    }


def first_difference(stored: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """``"key=stored vs current"`` for the first of ``keys`` whose JSON values differ, else ``None``."""
    for key in keys:
        a, b = jsonable(stored.get(key)), jsonable(current.get(key))
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            return f"{key}={_short(a)} (this run: {_short(b)})"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
