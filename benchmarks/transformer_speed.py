"""Cost of AttnLRP / CP-LRP as a multiple of one gradient, on all-MiniLM-L6-v2 and vit_b_16, and against LXT.

Each timing is the median CPU time (``time.process_time``: the machine is shared, and CPU time is
what contention disturbs least) of ``--repeats`` calls after two warm-up calls, single-threaded:

* gradient: forward + ``torch.autograd.grad`` of the explained score (Gradient×Input's cost);
* relprop: ``Explainer(model, composite)(x)`` with the plan already recorded, with and without
  the ledger;
* LXT 2.1: forward + backward with LXT's patches applied (measured last, because LXT patches
  classes for the whole process), using the same patch map as the oracle tests.

relprop's variants and the gradient are timed round-robin (one call of each per round), so that
load from other processes affects them alike; LXT can only be timed after them.

MiniLM explains the cosine similarity of two sentences (the model's real task) at several token
counts; vit_b_16 (random weights, 224 × 224, batch 1) explains a class logit.

Run::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/transformer_speed.py
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

import relprop
from relprop.text import SentenceSimilarity, load_minilm


def round_robin(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median time of each call, the calls interleaved repeat by repeat (after two warm-up rounds)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats + 2):
        for name, fn in calls.items():
            start = time.process_time()
            fn()
            if round_index >= 2:
                times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def gradient_call(model: nn.Module, x: torch.Tensor, target: int) -> Callable[[], Any]:
    def run() -> Any:
        xx = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xx)[:, target].sum(), xx)
        return grad * xx

    return run


def _lxt_oracle() -> Any:
    path = Path(__file__).resolve().parents[1] / "tests" / "lxt_oracle.py"
    spec = importlib.util.spec_from_file_location("lxt_oracle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows: list[tuple[str, str, float]] = []
    cases: list[tuple[str, nn.Module, torch.Tensor]] = []

    model, _ = load_minilm(attn_implementation="sdpa")
    table = model.get_input_embeddings()
    for batch, tokens in ((1, 16), (1, 128), (8, 128)):
        ids = torch.randint(1000, 20000, (batch, tokens))
        with torch.no_grad():
            x = table(ids)
        cases.append(
            (f"MiniLM similarity, batch {batch}, 2 × {tokens // 2} tokens", SentenceSimilarity(model, tokens // 2), x)
        )
    import torchvision

    vit = torchvision.models.vit_b_16().eval()
    nn.init.normal_(vit.heads.head.weight, 0, 0.05)
    cases.append(("vit_b_16, batch 1, 224 × 224", vit, torch.randn(1, 3, 224, 224)))

    baselines: dict[str, float] = {}
    for name, wrapped, x in cases:
        # Round-robin over the methods so that load from other processes hits them alike.
        calls: dict[str, Callable[[], Any]] = {"gradient (forward + backward)": gradient_call(wrapped, x, 0)}
        for composite in ("attnlrp", "cp-lrp"):
            for ledger in (True, False):
                explainer = relprop.Explainer(wrapped, composite, ledger=ledger)
                calls[f"relprop {composite}{'' if ledger else ', ledger off'}"] = partial(explainer, x, 0)
        times = round_robin(calls, args.repeats)
        baselines[name] = times["gradient (forward + backward)"]
        rows.extend((name, method, elapsed) for method, elapsed in times.items())

    # LXT last: it patches classes for the rest of this process.
    oracle = _lxt_oracle()
    import transformers.models.bert.modeling_bert as modeling_bert

    oracle._patch_transformers(modeling_bert, "attnlrp")
    for name, wrapped, x in cases[:-1]:
        rows.append((name, "LXT 2.1 AttnLRP", median_time(gradient_call(wrapped, x, 0), args.repeats)))
    from lxt.efficient.patches import (
        cp_multi_head_attention_forward,
        layer_norm_forward,
        non_linear_forward,
        patch_method,
    )
    from torchvision.models import vision_transformer

    oracle.monkey_patch(
        vision_transformer,
        {
            vision_transformer.nn.GELU: partial(patch_method, non_linear_forward, keep_original=True),
            vision_transformer.nn.LayerNorm: partial(patch_method, layer_norm_forward),
            vision_transformer.nn.MultiheadAttention: partial(
                patch_method, cp_multi_head_attention_forward, keep_original=True
            ),
        },
    )
    name, wrapped, x = cases[-1]
    rows.append((name, "LXT 2.1 CP-LRP (its ViT map)", median_time(gradient_call(wrapped, x, 0), args.repeats)))

    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats}")
    print()
    print("| model and input | method | time (ms) | × gradient |")
    print("| --- | --- | --- | --- |")
    for name, method, elapsed in rows:
        print(f"| {name} | {method} | {elapsed * 1e3:.1f} | {elapsed / baselines[name]:.2f} |")


if __name__ == "__main__":
    main()
