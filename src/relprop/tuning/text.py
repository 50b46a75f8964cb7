"""Token deletion for a sentence encoder: the ``token-deletion`` objective.

For a sentence pair, a method ranks the tokens of both sentences (special tokens excluded) by
their relevance for the cosine similarity of the two mean-pooled embeddings; the tokens are
deleted from the input in that order and the similarity is recomputed after each deletion. A
faithful ranking makes the curve fall fast: the score is the area under it (lower is better),
as in ``benchmarks/text_faithfulness.py`` (deleting the first half of the tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError

__all__ = ["deletion_auc", "deletion_curve", "sentence_embeddings", "token_deletion_scores", "token_ranking"]


def sentence_embeddings(model: nn.Module, sequences: Sequence[Sequence[int]]) -> Tensor:
    """Mean-pooled, L2-normalised embeddings of token id lists (one padded batch, masked mean)."""
    length = max(len(s) for s in sequences)
    device = model.get_input_embeddings().weight.device  # type: ignore[operator]
    ids = torch.zeros(len(sequences), length, dtype=torch.long, device=device)
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=device)
    for i, sequence in enumerate(sequences):
        ids[i, : len(sequence)] = torch.tensor(list(sequence), device=device)
        mask[i, : len(sequence)] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return F.normalize(pooled, dim=-1)


def deletion_curve(
    model: nn.Module, ids_a: Sequence[int], ids_b: Sequence[int], order: Sequence[int], fraction: float = 0.5
) -> list[float]:
    """Similarity after deleting the first ``k`` tokens of ``order`` (positions in a + b), k = 0 … ⌈fraction·len⌉."""
    split = len(ids_a)
    variants_a, variants_b = [], []
    for k in range(math.ceil(len(order) * fraction) + 1):
        deleted = set(order[:k])
        variants_a.append([t for i, t in enumerate(ids_a) if i not in deleted])
        variants_b.append([t for i, t in enumerate(ids_b) if i + split not in deleted])
    similarity = (sentence_embeddings(model, variants_a) * sentence_embeddings(model, variants_b)).sum(-1)
    return [float(v) for v in similarity.cpu()]


def deletion_auc(curve: Sequence[float]) -> float:
    """Trapezoidal area under a deletion curve over the deleted fraction, normalised to an average."""
    steps = len(curve) - 1
    if steps < 1:
        return float("nan")
    return sum((curve[i] + curve[i + 1]) / 2 for i in range(steps)) / steps


def token_ranking(relevance: Tensor, positions: Sequence[int]) -> list[int]:
    """``positions`` ordered by decreasing relevance (ties by position)."""
    values = relevance.detach().double().cpu()
    return sorted(positions, key=lambda i: (-float(values[i]), i))


class _TokenRelevance:
    """Relevance per token of a sentence pair for one method spec (LRP composites through TextExplainer)."""

    def __init__(self, model: nn.Module, tokenizer: Any, spec: str, seed: int = 0) -> None:
        from ..evaluate import RANDOM_BASELINE, resolve_method
        from ..text import SentenceSimilarity, TextExplainer

        self.model = model
        self.name, self.params = resolve_method(spec)
        self.generator = torch.Generator().manual_seed(seed)
        self.random = self.name == RANDOM_BASELINE
        if self.name == "lrp":
            params = dict(self.params)
            composite = params.pop("composite", "attnlrp")
            self.explainer: Any = TextExplainer(model, tokenizer, task="similarity", composite=composite, **params)
        self.wrapper = SentenceSimilarity(model, split=1)

    def __call__(self, ids_a: Sequence[int], ids_b: Sequence[int]) -> Tensor:
        import relprop

        if self.random:
            return torch.randn(len(ids_a) + len(ids_b), generator=self.generator)
        if self.name == "lrp":
            return self.explainer.explain_ids(list(ids_a), list(ids_b)).relevance[0].sum(-1)  # type: ignore[no-any-return]
        self.wrapper.split = len(ids_a)
        table = self.model.get_input_embeddings()  # type: ignore[operator]
        with torch.no_grad():
            embeddings = table(torch.tensor([[*ids_a, *ids_b]], device=table.weight.device))
        result = relprop.explain(self.wrapper, embeddings, 0, method=self.name, **self.params)
        return result.relevance[0].sum(-1)


def token_deletion_scores(model: nn.Module, data: Any, spec: str, fraction: float = 0.5, seed: int = 0) -> Tensor:
    """The deletion AUC of every pair of ``data`` (:class:`~relprop.tuning.SentencePairs`) for a method spec.

    Returns
    -------
    Tensor
        ``(N,)`` float64; NaN for a pair without any non-special token.
    """
    tokenizer = data.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []))
    relevance_of = _TokenRelevance(model, tokenizer, spec, seed)
    scores = []
    for a, b in data.pairs:
        ids_a, ids_b = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
        if not ids_a or not ids_b:
            raise ConfigurationError(f"sentence pair ({a!r}, {b!r}) has an empty sentence; drop it.")
        positions = [i for i, t in enumerate([*ids_a, *ids_b]) if t not in special]
        if not positions:
            scores.append(float("nan"))
            continue
        order = token_ranking(relevance_of(ids_a, ids_b), positions)
        scores.append(deletion_auc(deletion_curve(model, ids_a, ids_b, order, fraction)))
    return torch.tensor(scores, dtype=torch.float64)
