"""The result of an explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .ledger import Ledger

__all__ = ["Explanation"]


@dataclass
class Explanation:
    """Relevance of each input feature for the explained score, with its conservation ledger.

    Attributes
    ----------
    relevance
        Relevance per input feature, the same shape as the inputs.
    output
        The model output for the inputs.
    target
        The explained class of each sample (``LongTensor`` of shape ``(N,)``), or for a region
        target a :class:`~relprop.regions.RegionTarget` describing it (kind, channels, area).
    ledger
        Where the explained score went: input relevance, relevance absorbed per layer.
    info
        Method-specific diagnostics (e.g. the completeness gap of Integrated Gradients).
    layers
        Relevance arriving at the outputs of the modules asked for with ``layers=[...]``, by
        module path (shaped like each output, or ``(N, C)`` with ``layer_reduce="channels"``).
    """

    relevance: Tensor
    output: Tensor
    target: Any
    ledger: Ledger
    info: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, Tensor] = field(default_factory=dict)

    @property
    def score(self) -> Tensor:
        """The explained score per sample (logit, log-odds or contrast)."""
        return self.ledger.score

    def _target_text(self) -> str:
        if isinstance(self.target, Tensor):
            return str(self.target.tolist())
        return repr(str(self.target))

    def __repr__(self) -> str:
        return (
            f"Explanation(relevance=tensor{tuple(self.relevance.shape)}, target={self._target_text()}, "
            f"score={[round(float(s), 4) for s in self.score]}, "
            f"input_relevance={[round(float(s), 4) for s in self.ledger.input_relevance]})"
        )
