"""relprop: explain neural-network predictions with Layer-wise Relevance Propagation.

Quick start::

    import relprop
    result = relprop.explain(model, images)          # epsilon-gamma-box, predicted classes
    result.relevance                                  # same shape as images
    print(result.ledger.table())                      # where the explained score went
"""

from __future__ import annotations

from . import composites, kinds, match, methods, outputs, regions, rules, targets, tuning
from .api import explain
from .composites import Composite, bounds_from_normalization
from .engine import Explainer
from .errors import (
    ConfigurationError,
    GraphChangedError,
    InputError,
    ModelStateError,
    NonFiniteError,
    RelpropError,
    RelpropWarning,
    StoreError,
    TargetError,
    UnsupportedOperationError,
)
from .explanation import Explanation
from .ledger import Ledger, LedgerEntry
from .tuning import TunedComposite, tune

__version__ = "0.1.0"

__all__ = [
    "Composite",
    "ConfigurationError",
    "Explainer",
    "Explanation",
    "GraphChangedError",
    "InputError",
    "Ledger",
    "LedgerEntry",
    "ModelStateError",
    "NonFiniteError",
    "RelpropError",
    "RelpropWarning",
    "StoreError",
    "TargetError",
    "TunedComposite",
    "UnsupportedOperationError",
    "__version__",
    "bounds_from_normalization",
    "composites",
    "explain",
    "kinds",
    "match",
    "methods",
    "outputs",
    "regions",
    "rules",
    "targets",
    "tune",
    "tuning",
]
