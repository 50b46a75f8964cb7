"""Which tensor of a model's output to explain: the ``output=`` selector.

Many models return more than one tensor: torchvision's segmentation models return a dict
``{"out": ..., "aux": ...}``, detectors and text detectors a tuple ``(scores, features)``,
Hugging Face models a ``ModelOutput`` with ``.logits``. relprop explains one tensor; the
selector says which:

* ``None`` (default): the output itself if it is a tensor, else its ``.logits``;
* a string: a dict key, or an attribute of a dataclass, named tuple or other object. Dotted
  paths descend (``"aux.0"``) and a segment of digits indexes a tuple or list (``"0"``), so
  that a command-line value works for every kind of output;
* an integer: an index into a tuple or list;
* a callable: applied to the output, it returns the tensor (``lambda out: out[0][..., :1]``).

Selecting happens inside the explained call, so operations in a callable selector are seen by
the engine like any other operation of the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .errors import ConfigurationError

__all__ = ["SelectedOutput", "check_selector", "describe_output", "select_output", "with_output"]

Selector = str | int | Callable[[Any], Tensor] | None


def check_selector(selector: Any) -> Selector:
    """Validate an ``output=`` selector up front (a string, an integer, a callable or ``None``)."""
    if selector is None or callable(selector):
        return selector  # type: ignore[no-any-return]
    if isinstance(selector, bool) or not isinstance(selector, (str, int)):
        raise ConfigurationError(
            f"output must be a key or attribute name (str), an index (int) or a callable, got {selector!r}."
        )
    if isinstance(selector, str) and (not selector or any(not part for part in selector.split("."))):
        raise ConfigurationError(
            f"output {selector!r} is not a key, attribute or dotted path such as 'out' or 'aux.0'."
        )
    return selector


def describe_output(output: Any) -> str:
    """A short description of a model output: its type, keys or fields and tensor shapes."""
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        keys = ", ".join(f"{k!r}{_shape(v)}" for k, v in output.items())
        return f"a {type(output).__name__} with keys {keys}"
    if _is_sequence(output):
        items = ", ".join(f"[{i}]{_shape(v)}" for i, v in enumerate(output))
        return f"a {type(output).__name__} of {len(output)} ({items})"
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        fields = ", ".join(f"{f.name}{_shape(getattr(output, f.name))}" for f in dataclasses.fields(output))
        return f"a dataclass {type(output).__name__} with fields {fields}"
    return f"a {type(output).__name__}"


def _shape(value: Any) -> str:
    return f" {tuple(value.shape)}" if isinstance(value, Tensor) else f" ({type(value).__name__})"


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _hint(output: Any) -> str:
    if isinstance(output, Mapping) and output:
        return f"output={next(iter(output))!r}"
    if _is_sequence(output) and output:
        return "output=0"
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return f"output={dataclasses.fields(output)[0].name!r}"
    return "output=lambda out: ..."


def _step(value: Any, part: str | int, selector: Any) -> Any:
    """One step of a selector path: a key, an attribute or an index."""
    if isinstance(value, Mapping):
        if part in value:
            return value[part]
        if isinstance(part, str) and part.lstrip("-").isdigit() and int(part) in value:
            return value[int(part)]
        keys = ", ".join(repr(k) for k in value)
        raise ConfigurationError(f"output {selector!r}: the model output has no key {part!r}; its keys are {keys}.")
    if _is_sequence(value) and (isinstance(part, int) or part.lstrip("-").isdigit()):
        index = int(part)
        if not -len(value) <= index < len(value):
            raise ConfigurationError(
                f"output {selector!r}: index {index} is out of range for {describe_output(value)}; valid indices are "
                f"0..{len(value) - 1}."
            )
        return value[index]
    if isinstance(part, str) and hasattr(value, part):
        return getattr(value, part)
    raise ConfigurationError(f"output {selector!r}: cannot take {part!r} from {describe_output(value)}.")


def select_output(output: Any, selector: Selector = None) -> Tensor:
    """The tensor to explain from a model's ``output`` (see the module docstring for ``selector``).

    Raises
    ------
    ConfigurationError
        When the selector does not fit the output or does not lead to a tensor; the message
        describes the output (keys, fields, shapes) and how to pick one of its tensors.
    """
    if selector is None:
        if isinstance(output, Tensor):
            return output
        logits = getattr(output, "logits", None)
        if isinstance(logits, Tensor):
            return logits
        raise ConfigurationError(
            f"the model returned {describe_output(output)}; choose the tensor to explain with {_hint(output)} "
            "(a key, an index, an attribute or a callable)."
        )
    if callable(selector):
        selected = selector(output)
    else:
        selected = output
        parts: list[str | int] = [selector] if isinstance(selector, int) else list(selector.split("."))
        for part in parts:
            selected = _step(selected, part, selector)
    if not isinstance(selected, Tensor):
        raise ConfigurationError(
            f"output {_name(selector)} selects {describe_output(selected)} from the model output, not a tensor; "
            "select a tensor of scores."
        )
    return selected


def _name(selector: Selector) -> str:
    return getattr(selector, "__name__", repr(selector)) if callable(selector) else repr(selector)


class SelectedOutput(nn.Module):
    """A model whose output is the tensor ``selector`` picks from ``model``'s output.

    The model is registered under the empty name, so the module paths seen through this
    wrapper (in rule tables and error messages) are the model's own; the model itself is not
    changed.
    """

    def __init__(self, model: nn.Module, selector: Selector) -> None:
        super().__init__()
        self._modules[""] = model
        self.selector = check_selector(selector)

    @property
    def model(self) -> nn.Module:
        """The wrapped model."""
        return self._modules[""]  # type: ignore[return-value]

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return select_output(self.model(*args, **kwargs), self.selector)


def with_output(model: nn.Module, selector: Selector) -> nn.Module:
    """``model`` itself when ``selector`` is ``None``, else a :class:`SelectedOutput` around it."""
    if selector is None:
        return model
    return SelectedOutput(model, selector)
