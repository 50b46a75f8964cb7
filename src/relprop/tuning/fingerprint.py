"""A model's fingerprint: which weights a tuned composite was measured on.

The fingerprint is a SHA-256 over the model's state (parameters and persistent buffers, in
their registration order: dtype, shape and bytes of each), not over module names, so that a
wrapper that only adds structure around a model (e.g. :class:`relprop.text.SentenceSimilarity`
around a sentence encoder) has the fingerprint of the model it wraps. Any change of a weight
changes it. It is cached per model until a tensor of its state is replaced or changed in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from typing import Any

import torch
from torch import nn

__all__ = ["model_fingerprint"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def _state_key(tensors: list[torch.Tensor]) -> tuple[Any, ...]:
    # _version counts in-place changes of a tensor; data_ptr changes when a tensor is replaced.
    return tuple((t.data_ptr(), getattr(t, "_version", 0), tuple(t.shape), t.dtype) for t in tensors)


def model_fingerprint(model: nn.Module) -> str:
    """``"sha256:<hex>"`` of the model's weights and buffers (see the module docstring)."""
    tensors = [t for t in model.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)]
    key = _state_key(tensors)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    digest.update(f"{len(tensors)} tensors".encode())
    for tensor in tensors:
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    fingerprint = f"sha256:{digest.hexdigest()}"
    with contextlib.suppress(TypeError):  # a module that cannot be weakly referenced is not cached
        _CACHE[model] = (key, fingerprint)
    return fingerprint
