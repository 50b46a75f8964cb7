"""Helpers about the user's model that the engine, the methods and the apps share."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError, display_path

__all__ = ["display_path", "model_device", "select_output"]


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter, else of its first buffer; ``None`` if it has neither."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def select_output(output: Any) -> Tensor:
    """The scores a model returns: the tensor itself, or the ``.logits`` of a model output object."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise ConfigurationError(
        f"the model returned {type(output).__name__}; relprop explains models that return a tensor of scores "
        "(or an object with .logits), so wrap the model to return the scores to explain."
    )
