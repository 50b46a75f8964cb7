"""Exceptions raised by relprop.

Every message is one sentence that names the thing at fault (a module path, an
operation, an option) and says what to do about it.
"""

from __future__ import annotations


class RelpropError(Exception):
    """Base class of all errors raised by relprop."""


class ConfigurationError(RelpropError, ValueError):
    """A composite name, rule parameter or option is invalid."""


class TargetError(RelpropError, ValueError):
    """The requested target (class index or initial relevance) does not fit the model output."""


class UnsupportedOperationError(RelpropError, TypeError):
    """The model applies an operation to relevance-carrying tensors for which no rule is known."""


class ModelStateError(RelpropError, RuntimeError):
    """The model is in a state that cannot be explained (e.g. training mode with batch statistics)."""


class UnsupportedEstimatorError(RelpropError, TypeError):
    """A model that is not a torch module (a scikit-learn estimator) has no exact network rewrite in relprop.neon."""


class GraphChangedError(RelpropError, RuntimeError):
    """The operations a model executes differ from those recorded when the explainer was prepared."""


class NonFiniteError(RelpropError, ArithmeticError):
    """The inputs or a result hold NaN or Inf (model output, explained score or relevance): never a success."""


class InputError(ConfigurationError):
    """The inputs do not fit the model: not a floating-point batch, or a shape or dtype its layers cannot take."""


class RelpropWarning(UserWarning):
    """Something relprop did for you that you should know about (e.g. inputs converted to the model's dtype)."""


class StoreError(RelpropError, RuntimeError):
    """A relevance store cannot be created, written or read as asked (busy, other settings, read-only, full)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty).

    Torch errors from inside a model often run to many lines; user-facing messages quote only
    the first.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
