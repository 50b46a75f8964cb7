"""The web app's ``tuned`` composite: a ``relprop tune`` file the server was started with.

``relprop serve --composite tuned.json`` offers one more composite, ``tuned``, for the models
the file was tuned on (checked by fingerprint when the server starts). It explains with the
tuned rules and parameters, and relative to the tuned reference if the file has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ..engine import Explainer
from ..errors import ConfigurationError
from ..explanation import Explanation
from ..tuning import TunedComposite, model_fingerprint

if TYPE_CHECKING:
    from .service import LoadedModel

__all__ = ["TUNED", "TunedEntry", "load_tuned"]

#: The composite name the web app gives the tuned file.
TUNED = "tuned"


@dataclass
class TunedEntry:
    """A tuned composite the server offers, and the models (by name) it was tuned on."""

    tuned: TunedComposite
    source: str
    models: tuple[str, ...]

    @property
    def description(self) -> str:
        return f"tuned by relprop tune ({self.source}): {self.tuned.summary()}; for {', '.join(self.models)}"

    def refusal(self, model: str) -> str | None:
        """Why this composite cannot explain ``model`` (``None``: it can)."""
        if model in self.models:
            return None
        return (
            f"composite 'tuned' ({self.tuned.spec}) was tuned for {', '.join(self.models)}, not for model {model!r}; "
            "choose another composite or model"
        )

    def explain(self, model: nn.Module, x: Tensor, target: Any, score: str) -> Explanation:
        """Explain with the tuned setting (the model was checked against the file when the server started)."""
        # The Explainer explains relative to the tuned reference, if the file has one (relprop.reference).
        return Explainer(model, self.tuned, nonfinite="report")(x, target, top=score)


def load_tuned(path: str, models: Mapping[str, LoadedModel]) -> TunedEntry:
    """Read a tuned file and find the offered models it was tuned on (one-line error if none)."""
    tuned = TunedComposite.load(path)
    fits = tuple(name for name, m in models.items() if model_fingerprint(m.bundle.model) == tuned.fingerprint)
    if not fits:
        raise ConfigurationError(
            f"tuned composite {path} was made for another model ({tuned.model}), not for any model this server "
            f"offers ({', '.join(models)}); tune it for one of them with relprop tune."
        )
    return TunedEntry(tuned, path, fits)
