"""Token deletion on the real all-MiniLM-L6-v2: the benchmark's measure, and a search over transformer composites."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

import relprop
from relprop.errors import ConfigurationError
from relprop.text import TextExplainer, load_minilm
from relprop.tuning import SentencePairs
from relprop.tuning.text import token_deletion_scores

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, Any]:
    return load_minilm(attn_implementation="sdpa")


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    """benchmarks/text_faithfulness.py, whose AUC the objective must reproduce."""
    spec = importlib.util.spec_from_file_location("text_faithfulness", ROOT / "benchmarks" / "text_faithfulness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("text_faithfulness", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pairs(benchmark: ModuleType) -> list[tuple[str, str]]:
    return benchmark.read_pairs(benchmark.DATA)[:6]


def test_token_deletion_is_the_benchmarks_measure(
    minilm: tuple[nn.Module, Any], benchmark: ModuleType, pairs: list[tuple[str, str]]
) -> None:
    model, tokenizer = minilm
    ours = token_deletion_scores(model, SentencePairs(tokenizer, pairs[:3]), "lrp:attnlrp")
    explainer = TextExplainer(model, tokenizer, task="similarity", composite="attnlrp")
    special = set(tokenizer.all_special_ids)
    for value, (a, b) in zip(ours.tolist(), pairs[:3], strict=True):
        ids_a, ids_b = tokenizer(a)["input_ids"], tokenizer(b)["input_ids"]
        candidates = [i for i, t in enumerate(ids_a + ids_b) if t not in special]
        relevance = explainer.explain_ids(ids_a, ids_b).relevance[0].sum(-1)
        curve = benchmark.deletion_curve(model, ids_a, ids_b, benchmark.ranking(relevance, candidates))
        assert value == pytest.approx(benchmark.auc(curve), abs=1e-12)


def test_tuning_transformer_composites_by_token_deletion(
    minilm: tuple[nn.Module, Any], pairs: list[tuple[str, str]]
) -> None:
    model, tokenizer = minilm
    data = SentencePairs(tokenizer, pairs)
    candidates = ["lrp:attnlrp", "lrp:cp-lrp,epsilon=0.1"]
    tuned = relprop.tune(model, data, objective="token-deletion", candidates=candidates, seed=1, budget=None)
    assert tuned.higher_is_better is False and tuned.objective_title == "deletion AUC"
    held = SentencePairs(tokenizer, [pairs[i] for i in tuned.held_out_indices])
    for result in tuned.results:
        scores = token_deletion_scores(model, held, result.candidate.spec)
        assert result.held_out.mean == pytest.approx(float(scores.mean()), abs=1e-12)
    means = [r.search.mean for r in tuned.results]
    assert tuned.chosen == means.index(min(means))
    # The tuned composite explains the sentence encoder through TextExplainer's wrapper (same weights).
    explained = TextExplainer(model, tokenizer, task="similarity", composite=tuned)(*pairs[0])
    expected = TextExplainer(model, tokenizer, task="similarity", composite=tuned.composite())(*pairs[0])
    assert torch.equal(explained.token_relevance, expected.token_relevance)


def test_other_methods_are_measured_too(minilm: tuple[nn.Module, Any], pairs: list[tuple[str, str]]) -> None:
    model, tokenizer = minilm
    data = SentencePairs(tokenizer, pairs[:2])
    for spec in ("gradient-x-input", "random"):
        scores = token_deletion_scores(model, data, spec)
        assert scores.shape == (2,) and bool(torch.isfinite(scores).all())


def test_sentence_pair_files(tmp_path: Path, minilm: tuple[nn.Module, Any]) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("# comment\nA man plays.\tSomeone plays.\n\nA cat.\tA dog.\n", encoding="utf-8")
    assert SentencePairs.from_tsv(minilm[1], path).pairs == [("A man plays.", "Someone plays."), ("A cat.", "A dog.")]
    path.write_text("only one sentence\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        SentencePairs.from_tsv(minilm[1], path)
    assert str(info.value) == f"{path}, line 1: expected two non-empty sentences separated by one tab."
