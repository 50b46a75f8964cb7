"""The data a search measures on, its two disjoint splits, and the one function that reads them.

Images and feature vectors are a :class:`relprop.evaluate.EvaluationData` (inputs, labels or
targets, optional ground-truth masks, optional reference input) — the same object
``relprop evaluate`` measures, so that both compute the same numbers. Sentence pairs for a
sentence encoder are a :class:`SentencePairs`.

Every read of a split goes through :func:`load_split`: a data set kept in a relevance store
on disk (the "explain whole data sets" issue) plugs in there, without the search changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError

__all__ = ["SentencePairs", "as_data", "load_split", "split_indices"]


@dataclass
class SentencePairs:
    """Sentence pairs for a sentence encoder's cosine similarity (the ``token-deletion`` objective).

    Attributes
    ----------
    tokenizer
        The encoder's Hugging Face tokenizer.
    pairs
        ``(sentence a, sentence b)`` pairs.
    name
        Shown in reports.
    """

    tokenizer: Any
    pairs: list[tuple[str, str]]
    name: str = "sentence pairs"

    def __len__(self) -> int:
        return len(self.pairs)

    @classmethod
    def from_tsv(cls, tokenizer: Any, path: Any, name: str | None = None) -> SentencePairs:
        """Read ``sentence a<TAB>sentence b`` lines (``#`` starts a comment line)."""
        from pathlib import Path

        file = Path(path)
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read sentence pairs from {file} ({type(exc).__name__}).") from None
        pairs = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ConfigurationError(
                    f"{file}, line {number}: expected two non-empty sentences separated by one tab."
                )
            pairs.append((parts[0], parts[1]))
        return cls(tokenizer, pairs, name or file.name)


def _size(data: Any) -> int:
    from ..evaluate import EvaluationData

    if isinstance(data, EvaluationData):
        return len(data.images)
    if isinstance(data, SentencePairs):
        return len(data)
    raise ConfigurationError(
        f"data must be relprop.evaluate.EvaluationData or relprop.tuning.SentencePairs, got {type(data).__name__}."
    )


def as_data(
    inputs: Any,
    targets: Any = None,
    masks: Tensor | None = None,
    reference: Tensor | None = None,
    name: str = "inputs",
) -> tuple[Any, str | int]:
    """The data object and the ``relprop evaluate`` target setting for :func:`relprop.tune`'s arguments.

    Returns
    -------
    (data, target)
        ``target`` is ``"predicted"`` (``targets=None``), a class index, or ``"label"`` when
        ``targets`` gives one class per input (stored as the data's labels).
    """
    from ..evaluate import EvaluationData

    if isinstance(inputs, (EvaluationData, SentencePairs)):
        if masks is not None or reference is not None:
            raise ConfigurationError(
                "masks and reference belong in the data object when inputs is EvaluationData or SentencePairs."
            )
        data = inputs
    elif isinstance(inputs, Tensor):
        if not inputs.is_floating_point() or inputs.dim() < 2 or len(inputs) == 0:
            raise ConfigurationError(
                f"inputs must be a non-empty floating-point batch (N, ...), got {inputs.dtype} of shape "
                f"{tuple(inputs.shape)}."
            )
        data = EvaluationData(inputs.detach(), torch.zeros(len(inputs), dtype=torch.long), masks, name, reference)
    else:
        raise ConfigurationError(
            f"inputs must be a tensor, relprop.evaluate.EvaluationData or relprop.tuning.SentencePairs, got "
            f"{type(inputs).__name__}."
        )
    if targets is None:
        return data, "predicted"
    if isinstance(targets, int) and not isinstance(targets, bool):
        return data, int(targets)
    labels = torch.as_tensor(targets)
    if labels.is_floating_point() or labels.dim() != 1 or len(labels) != _size(data):
        raise ConfigurationError(
            f"targets must be None, one class index or one class index per input ({_size(data)}), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}."
        )
    if not isinstance(data, EvaluationData):
        raise ConfigurationError("targets do not apply to sentence pairs (the score is their similarity); drop them.")
    return EvaluationData(data.images, labels.long(), data.masks, data.name, data.reference), "label"


def split_indices(count: int, held_out: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random split of ``range(count)`` into disjoint search and held-out indices (each sorted).

    ``held_out`` is the share of the inputs kept for the held-out split (at least one input in
    each split).
    """
    if not 0 < held_out < 1:
        raise ConfigurationError(f"held_out must be a share strictly between 0 and 1, got {held_out!r}.")
    n_held = round(count * held_out)
    if count < 2 or n_held < 1 or n_held > count - 1:
        raise ConfigurationError(
            f"{count} input(s) cannot be split into a search and a held-out part with held_out={held_out}; "
            "pass at least 2 inputs (a few dozen for scores worth reporting)."
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[n_held:].sort().values, order[:n_held].sort().values


def load_split(data: Any, indices: Sequence[int] | Tensor) -> Any:
    """The inputs of ``data`` at ``indices``: the one place the search reads data.

    Keeps labels, masks and the reference input (the ``dataset-mean`` replacement stays the
    same for every split).
    """
    from ..evaluate import EvaluationData

    index = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(data, EvaluationData):
        masks = None if data.masks is None else data.masks[index]
        return EvaluationData(data.images[index], data.labels[index], masks, data.name, data.reference)
    if isinstance(data, SentencePairs):
        return SentencePairs(data.tokenizer, [data.pairs[int(i)] for i in index], data.name)
    _size(data)  # raises the error naming the accepted types
    raise AssertionError("unreachable")
