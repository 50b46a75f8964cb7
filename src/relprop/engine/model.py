"""Helpers about the user's model that the engine, the methods and the apps share."""

from __future__ import annotations

import torch
from torch import nn

from ..outputs import select_output

__all__ = ["display_path", "model_device", "select_output"]


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter, else of its first buffer; ``None`` if it has neither."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def display_path(path: str) -> str:
    """A module path for messages: the path itself, or ``(model)`` for the model's own forward."""
    return path or "(model)"
