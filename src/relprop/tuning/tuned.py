"""The result of a search: :class:`TunedComposite`, a composite chosen by measurement, with its evidence.

It holds the chosen candidate, every candidate's score on the search split *and* on the
disjoint held-out split (mean ± standard error), the objective, and the fingerprint of the
model it was measured on. It saves to and loads from a small JSON file, and is accepted
wherever a composite is: ``relprop.explain(model, x, composite=tuned)``,
``relprop.Explainer(model, tuned)`` or a path ``"tuned.json"`` — refused, with one clear
error, for a model whose weights differ from those it was tuned on.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import composites as _composites
from ..errors import ConfigurationError
from .candidates import Candidate
from .fingerprint import model_fingerprint

__all__ = ["FORMAT", "CandidateResult", "Summary", "TunedComposite"]

#: The ``format`` field of a tuned-composite file.
FORMAT = "relprop-tuned-composite"
VERSION = 1


@dataclass(frozen=True)
class Summary:
    """Mean ± standard error of per-input scores (over the inputs where the score is defined)."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, scores: Tensor) -> Summary:
        """Mean, standard error and count of the finite values (as ``relprop evaluate`` summarises)."""
        finite = scores.double()[torch.isfinite(scores.double())]
        n = int(finite.numel())
        if n == 0:
            return cls(math.nan, math.nan, 0)
        se = float(finite.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
        return cls(float(finite.mean()), se, n)

    def cell(self) -> str:
        """``"mean ± se"`` rounded as ``relprop evaluate`` prints it."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        if not math.isfinite(self.se) or self.se == 0:
            return f"{self.mean:.4g}"
        if self.se < 1e-4:
            return f"{self.mean:.2e} ± {self.se:.1e}"
        digits = max(0, 1 - math.floor(math.log10(self.se)))
        return f"{self.mean:.{digits}f} ± {self.se:.{digits}f}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": _finite_or_none(self.mean), "se": _finite_or_none(self.se), "n": self.n}

    @classmethod
    def from_json(cls, data: Any) -> Summary:
        return cls(_float(data["mean"]), _float(data["se"]), int(data["n"]))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's scores: on the search split (used to choose) and on the held-out split (reported).

    ``utility`` is the search-split mean oriented so that larger is better (the ranking key).
    """

    candidate: Candidate
    search: Summary
    held_out: Summary
    seconds: float
    utility: float

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.candidate.spec,
            "candidate": self.candidate.to_json(),
            "search": self.search.to_json(),
            "held_out": self.held_out.to_json(),
            "seconds": round(self.seconds, 4),
            "utility": _finite_or_none(self.utility),
        }

    @classmethod
    def from_json(cls, data: Any) -> CandidateResult:
        return cls(
            Candidate.from_json(data["candidate"]),
            Summary.from_json(data["search"]),
            Summary.from_json(data["held_out"]),
            float(data["seconds"]),
            _float(data["utility"]),
        )


@dataclass
class TunedComposite:
    """A composite chosen by measured faithfulness, with the measurements behind the choice.

    Use it as a composite: ``relprop.explain(model, x, composite=tuned)``,
    ``relprop.Explainer(model, tuned)``; :meth:`composite` builds the plain
    :class:`~relprop.composites.Composite`.

    Attributes
    ----------
    candidate
        The chosen setting (composite, parameters, reference).
    fingerprint
        :func:`~relprop.tuning.model_fingerprint` of the model it was tuned on.
    model
        The model's class name (for messages).
    objective, objective_title, higher_is_better
        The objective's spec, its score's name and direction.
    results
        Every candidate tried, in the order tried, with search and held-out scores.
    chosen
        Index into ``results`` of the chosen candidate (the best search-split score).
    seed, search_size, held_out_size, data, target
        How the data were split and what was explained.
    budget_s, elapsed_s, stopped
        The time budget, the time used, and why the search stopped (``"budget"``,
        ``"exhausted"``, ``"max_candidates"``).
    evaluate_options
        ``relprop evaluate`` options that measure the held-out scores (with ``--model`` and a
        ``--data`` file of the held-out split), or ``None`` if the objective has none.
    reference_input
        For a candidate with ``reference="dataset-mean"``: that reference input (one input's
        shape), stored in the JSON file so that the tuned setting explains the same way later.
    """

    candidate: Candidate
    fingerprint: str
    model: str
    objective: str
    objective_title: str
    higher_is_better: bool
    results: list[CandidateResult]
    chosen: int
    seed: int
    search_size: int
    held_out_size: int
    data: str = "inputs"
    target: str | int = "predicted"
    budget_s: float | None = None
    elapsed_s: float = 0.0
    stopped: str = "exhausted"
    evaluate_options: list[str] | None = None
    held_out_indices: list[int] = field(default_factory=list)
    reference_input: Tensor | None = None

    # -- use -------------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The chosen setting as a method spec (``relprop evaluate --methods``)."""
        return self.candidate.spec

    @property
    def search_score(self) -> Summary:
        """The chosen candidate's score on the search split (optimistic: it was chosen on it)."""
        return self.results[self.chosen].search

    @property
    def held_out_score(self) -> Summary:
        """The chosen candidate's score on the held-out split (an honest estimate)."""
        return self.results[self.chosen].held_out

    def composite(self) -> _composites.Composite:
        """The plain :class:`~relprop.composites.Composite` of the chosen setting."""
        built = self.candidate.build()
        built.name = f"tuned:{self.candidate.spec.removeprefix('lrp:')}"
        return built

    def reference(self) -> Any:
        """What :func:`relprop.explain` takes as ``reference=`` for the chosen setting (``None``: plain LRP)."""
        name = self.candidate.reference
        if name != "dataset-mean":
            return name
        if self.reference_input is None:
            raise ConfigurationError(
                f"tuned composite {self.spec} explains relative to the data's mean, but holds no reference input; "
                "tune again with this relprop."
            )
        return self.reference_input

    def check_model(self, model: nn.Module, source: str | None = None) -> None:
        """Refuse a model whose weights differ from those this composite was tuned on."""
        actual = model_fingerprint(model)
        if actual != self.fingerprint:
            where = f"tuned composite {source}" if source else "this tuned composite"
            raise ConfigurationError(
                f"{where} was made for another model ({self.model}, fingerprint {self.fingerprint[7:19]}…), not this "
                f"{type(model).__name__} (fingerprint {actual[7:19]}…); tune again for this model with relprop.tune "
                "or relprop tune."
            )

    # -- report ----------------------------------------------------------------------------------
    def table(self) -> str:
        """Every candidate's search and held-out score (Markdown), the chosen one marked."""
        arrow = "↑" if self.higher_is_better else "↓"
        search, held = f"search split ({self.search_size}) {arrow}", f"held-out split ({self.held_out_size}) {arrow}"
        lines = [
            f"| candidate | {search} | {held} | s |",
            "|---|---|---|---|",
        ]
        for index, result in enumerate(self.results):
            mark = " **(chosen)**" if index == self.chosen else ""
            lines.append(
                f"| `{result.candidate.spec}`{mark} | {result.search.cell()} | {result.held_out.cell()} | "
                f"{result.seconds:.1f} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the choice and its held-out score."""
        return (
            f"{self.spec}: {self.objective_title} {self.held_out_score.cell()} on {self.held_out_size} held-out inputs "
            f"({self.search_score.cell()} on the {self.search_size} it was chosen on; {len(self.results)} candidates, "
            f"{self.elapsed_s:.0f} s, stopped: {self.stopped})"
        )

    def __repr__(self) -> str:
        return f"TunedComposite({self.summary()})"

    # -- files -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON form (what :meth:`save` writes)."""
        from .. import __version__

        return {
            "format": FORMAT,
            "version": VERSION,
            "relprop": __version__,
            "spec": self.spec,
            "candidate": self.candidate.to_json(),
            "model": {"class": self.model, "fingerprint": self.fingerprint},
            "objective": {
                "spec": self.objective,
                "title": self.objective_title,
                "higher_is_better": self.higher_is_better,
            },
            "split": {
                "seed": self.seed,
                "search": self.search_size,
                "held_out": self.held_out_size,
                "held_out_indices": list(self.held_out_indices),
            },
            "data": self.data,
            "target": self.target,
            "search": {"budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 3), "stopped": self.stopped},
            "chosen": self.chosen,
            "results": [r.to_json() for r in self.results],
            "evaluate_options": self.evaluate_options,
            "reference_input": None
            if self.reference_input is None
            else {"shape": list(self.reference_input.shape), "values": self.reference_input.flatten().tolist()},
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "tuned composite") -> TunedComposite:
        """Rebuild from :meth:`to_json`'s form (``source`` names the file in errors)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigurationError(f"{source} is not a relprop tuned-composite file (no format {FORMAT!r}).")
        if data.get("version") != VERSION:
            raise ConfigurationError(
                f"{source} has format version {data.get('version')!r}, this relprop reads version {VERSION}; "
                "tune again."
            )
        try:
            split, search, objective = data["split"], data["search"], data["objective"]
            return cls(
                candidate=Candidate.from_json(data["candidate"]),
                fingerprint=str(data["model"]["fingerprint"]),
                model=str(data["model"]["class"]),
                objective=str(objective["spec"]),
                objective_title=str(objective["title"]),
                higher_is_better=bool(objective["higher_is_better"]),
                results=[CandidateResult.from_json(r) for r in data["results"]],
                chosen=int(data["chosen"]),
                seed=int(split["seed"]),
                search_size=int(split["search"]),
                held_out_size=int(split["held_out"]),
                data=str(data.get("data", "inputs")),
                target=data.get("target", "predicted"),
                budget_s=search.get("budget_s"),
                elapsed_s=float(search.get("elapsed_s", 0.0)),
                stopped=str(search.get("stopped", "exhausted")),
                evaluate_options=data.get("evaluate_options"),
                held_out_indices=[int(i) for i in split.get("held_out_indices", [])],
                reference_input=_reference_input(data.get("reference_input")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{source} is damaged: field {exc} is missing or malformed; tune again.") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file atomically (a temporary file renamed into place)."""
        target = Path(path)
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # what a plain open() would give (mkstemp makes it private)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TunedComposite:
        """Read a file written by :meth:`save`."""
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                f"tuned composite file {file} does not exist; create it with relprop tune."
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"{file} is not a readable JSON file ({type(exc).__name__}).") from None
        return cls.from_json(data, source=str(file))


def _reference_input(data: Any) -> Tensor | None:
    if data is None:
        return None
    return torch.tensor([float(v) for v in data["values"]], dtype=torch.float32).reshape(
        [int(d) for d in data["shape"]]
    )


def best_index(results: Sequence[CandidateResult]) -> int:
    """The result with the largest search-split utility (the first on ties; undefined scores last)."""
    best, best_value = 0, -math.inf
    for index, result in enumerate(results):
        value = result.utility if math.isfinite(result.utility) else -math.inf
        if value > best_value:
            best, best_value = index, value
    return best
