"""relprop: explain neural-network predictions with Layer-wise Relevance Propagation.

Quick start::

    import relprop
    result = relprop.explain(model, images)          # epsilon-gamma-box, predicted classes
    result.relevance                                  # same shape as images
    print(result.ledger.table())                      # where the explained score went
"""

from __future__ import annotations

from . import composites, match, methods, rules, tuning
from .composites import Composite, bounds_from_normalization
from .engine import Explainer, explain
from .errors import (
    ConfigurationError,
    GraphChangedError,
    ModelStateError,
    RelpropError,
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
    "Ledger",
    "LedgerEntry",
    "ModelStateError",
    "RelpropError",
    "TargetError",
    "TunedComposite",
    "UnsupportedOperationError",
    "__version__",
    "bounds_from_normalization",
    "composites",
    "explain",
    "match",
    "methods",
    "rules",
    "tune",
    "tuning",
]
