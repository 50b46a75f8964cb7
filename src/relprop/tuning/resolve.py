"""Tuned composites where a composite is expected, and ``composite="auto"``.

The engine calls :func:`as_composite` with whatever it was given as a composite: a
:class:`TunedComposite`, the path of a tuned JSON file, or ``"auto"`` with ``tuned=`` become
the plain :class:`~relprop.composites.Composite` of the tuned setting (and its ``reference=``, if
it explains relative to one), after checking that the model is the one it was tuned on; anything
else passes through unchanged.

``relprop.explain(model, inputs, composite="auto")`` without ``tuned=`` runs :func:`auto_composite`:
a quick search on the inputs being explained, with a warning that the choice was measured on
those same inputs. The quick search (documented defaults):

* objective: pixel flipping with the ``blur`` replacement for images ``(N, C, H, W)`` (square
  regions, at most 64 of them), ``dataset-mean`` for other inputs (at most 64 steps);
* candidates: one default point per composite (:func:`~relprop.tuning.default_space`; for
  transformers ``attnlrp`` and ``cp-lrp``), z^B bounds = the inputs' range, each as plain LRP
  and relative to the reference the objective names (``blur`` / ``dataset-mean``,
  :func:`~relprop.tuning.search.default_references`);
* split: half of the inputs to choose, the other half to report; seed 0; budget
  :data:`AUTO_BUDGET` seconds (the first candidate, the library default, is always measured).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from .tuned import TunedComposite

__all__ = ["AUTO", "AUTO_BUDGET", "as_composite", "auto_composite", "auto_objective", "is_tuned", "is_tuned_file"]

AUTO = "auto"
#: Seconds the quick search of ``composite="auto"`` may take.
AUTO_BUDGET = 20.0
_MAX_STEPS = 64


def is_tuned_file(composite: Any) -> bool:
    """Whether ``composite`` names a tuned-composite file (a ``.json`` path, as ``relprop tune --out`` writes)."""
    return isinstance(composite, (str, os.PathLike)) and str(composite).endswith(".json")


def is_tuned(composite: Any) -> bool:
    """Whether ``composite`` is a tuned composite, the path of a tuned ``.json`` file, or ``"auto"``."""
    auto = isinstance(composite, str) and composite == AUTO
    return auto or isinstance(composite, TunedComposite) or is_tuned_file(composite)


def as_composite(composite: Any, model: nn.Module, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """What the engine should use for ``composite`` (see the module docstring), and the remaining parameters.

    A tuned setting that explains relative to a reference returns ``reference=`` (the reference
    name, or the stored reference input) among the parameters: reference-aware LRP
    (:mod:`relprop.reference`). Parameters given beside a tuned composite, ``reference=`` and
    ``data=`` included, are refused: the tuned file chose them.
    """
    params = dict(params)
    tuned = params.pop("tuned", None)
    if isinstance(composite, str) and composite == AUTO:
        if tuned is None:
            raise ConfigurationError(
                "composite='auto' searches on the inputs, which an Explainer does not have yet; call "
                "relprop.explain(model, inputs, composite='auto'), pass tuned='tuned.json', or pass "
                "relprop.tune(model, inputs) as the composite."
            )
        composite = tuned
    elif tuned is not None:
        raise ConfigurationError("tuned= applies to composite='auto' only; pass the tuned composite as composite=.")
    source = None
    if is_tuned_file(composite):
        source = str(composite)
        composite = TunedComposite.load(composite)
    if not isinstance(composite, TunedComposite):
        return composite, params
    composite.check_model(model, source)
    if params:
        raise ConfigurationError(
            f"parameters {', '.join(sorted(params))} are chosen by the tuned composite ({composite.spec}); drop them."
        )
    reference = composite.reference()
    return composite.composite(), ({} if reference is None else {"reference": reference})


def auto_objective(inputs: Tensor) -> str:
    """The objective of the quick search for these inputs (see the module docstring)."""
    if inputs.dim() == 4:
        h, w = inputs.shape[2:]
        patch = max(1, math.ceil(math.sqrt(h * w / _MAX_STEPS)))
        return "pixel-flipping:replacement=blur" + (f",patch_size={patch}" if patch > 1 else "")
    features = inputs[0].numel()
    per_step = max(1, math.ceil(features / _MAX_STEPS))
    return "pixel-flipping:replacement=dataset-mean" + (f",regions_per_step={per_step}" if per_step > 1 else "")


def _auto_targets(target: Any, count: int) -> Any:
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        return target
    t = torch.as_tensor(target)
    if not t.is_floating_point() and t.dim() == 1 and len(t) == count:
        return t
    if not t.is_floating_point() and t.numel() == 1:
        return int(t)
    return None  # an initial-relevance tensor: measure on the predicted classes


def auto_composite(model: nn.Module, inputs: Any, target: Any = None, tuned: Any = None) -> TunedComposite:
    """What ``composite="auto"`` uses: the ``tuned`` composite, else a quick search on ``inputs`` (with a warning)."""
    if tuned is not None:
        result = TunedComposite.load(tuned) if is_tuned_file(tuned) else tuned
        if not isinstance(result, TunedComposite):
            raise ConfigurationError(
                f"tuned= must be a TunedComposite or the path of a tuned .json file, got {type(tuned).__name__}."
            )
        result.check_model(model, str(tuned) if is_tuned_file(tuned) else None)
        return result
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or len(inputs) < 2:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ConfigurationError(
            f"composite='auto' needs a batch of at least 2 inputs to search on and check on, got {shape}; explain more "
            "inputs at once or pass tuned='tuned.json' (relprop tune)."
        )
    from .search import tune

    objective = auto_objective(inputs)
    result = tune(
        model,
        inputs,
        _auto_targets(target, len(inputs)),
        objective=objective,
        candidates=None,
        budget=AUTO_BUDGET,
        seed=0,
        refine=0,
        keep_first=True,
    )
    warnings.warn(
        f"composite='auto' chose {result.spec} by a quick search on the {len(inputs)} inputs being explained "
        f"({objective}: {result.held_out_score.cell()} on the {result.held_out_size} not used to choose); for a "
        "choice measured on other data, tune once with relprop.tune or relprop tune and pass tuned='tuned.json'.",
        UserWarning,
        stacklevel=3,
    )
    return result
