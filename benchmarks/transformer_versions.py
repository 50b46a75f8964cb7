"""AttnLRP on MiniLM against one gradient in several source trees, alternately: is a change faster?

Run ``HF_HUB_OFFLINE=1 python benchmarks/transformer_versions.py --tree main=/path/to/main/src --tree new=src``.
Each round runs every tree once, in a fresh single-threaded process per tree (one relprop per
process), in turns, so that drift of a shared machine hits the trees alike. Within a process the
gradient (forward + ``torch.autograd.grad``) and AttnLRP with and without the ledger are timed
round-robin, as ``transformer_speed.py`` does, on the real all-MiniLM-L6-v2 explaining the cosine
similarity of two random sentences. Reported per size and tree: the median over rounds of each
process's median CPU time (``time.process_time``) and of its ratio to the gradient.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: (batch, tokens of both sentences together), as ``transformer_speed.py`` measures them.
SIZES = ((1, 16), (1, 128), (8, 128))
METHODS = ("gradient", "attnlrp", "attnlrp, ledger off", "attnlrp, compiled")


def child(sizes: list[tuple[int, int]], repeats: int, composite: str) -> None:
    import torch

    import relprop
    from relprop.text import SentenceSimilarity, load_minilm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = load_minilm(attn_implementation="sdpa")
    table = model.get_input_embeddings()
    results: dict[str, dict[str, float]] = {}
    for batch, tokens in sizes:
        ids = torch.randint(1000, 20000, (batch, tokens))
        with torch.no_grad():
            x = table(ids)
        wrapped = SentenceSimilarity(model, tokens // 2)

        def gradient(wrapped: torch.nn.Module = wrapped, x: torch.Tensor = x) -> None:
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(wrapped(leaf)[:, 0].sum(), leaf)
            _ = grad * leaf

        calls = {
            "gradient": gradient,
            "attnlrp": relprop.Explainer(wrapped, composite, ledger=True),
            "attnlrp, ledger off": relprop.Explainer(wrapped, composite, ledger=False),
        }
        # The fused kernels of relprop.rules.kernels (trees before them have no compile option).
        with contextlib.suppress(TypeError, relprop.ConfigurationError):
            calls["attnlrp, compiled"] = relprop.Explainer(wrapped, composite, ledger=True, compile=True)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for round_index in range(repeats + 2):
            for name, call in calls.items():
                start = time.process_time()
                call() if name == "gradient" else call(x, 0)  # type: ignore[operator]
                if round_index >= 2:
                    times[name].append(time.process_time() - start)
        results[f"{batch}x{tokens}"] = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a source tree (holds relprop/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", nargs="*", default=[f"{b}x{t}" for b, t in SIZES], help="BATCHxTOKENS")
    parser.add_argument("--composite", default="attnlrp")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    if args.child:
        child(sizes, args.repeats, args.composite)  # type: ignore[arg-type]
        return
    trees = [t.split("=", 1) for t in args.tree]
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in trees}
    for round_index in range(args.rounds):
        for name, path in trees:
            env = {**os.environ, "PYTHONPATH": str(Path(path).resolve()), "OMP_NUM_THREADS": "1"}
            env.setdefault("HF_HUB_OFFLINE", "1")
            command = [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(args.repeats)]
            command += ["--composite", args.composite, "--sizes", *args.sizes]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}/{args.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
    print(
        f"{args.composite}, 1 thread, CPU time: median over {args.rounds} rounds of the median of {args.repeats} calls"
    )
    print()
    print(
        "| size | tree | "
        + " | ".join(f"{m} (ms)" for m in METHODS)
        + " | "
        + " | ".join(f"{m} / gradient" for m in METHODS[1:])
        + " |"
    )
    print("|---" * (2 + 2 * len(METHODS) - 1) + "|")
    for size in args.sizes:
        for name, _ in trees:
            per_round = [run[size] for run in runs[name]]
            ran = [m for m in METHODS if all(m in r for r in per_round)]  # older trees lack some methods
            times = {m: f"{statistics.median(r[m] for r in per_round) * 1e3:.1f}" for m in ran}
            ratios = {m: f"{statistics.median(r[m] / r['gradient'] for r in per_round):.2f}" for m in ran}
            batch, tokens = size.split("x")
            label = f"batch {batch}, 2 × {int(tokens) // 2} tokens"
            print(
                f"| {label} | {name} | "
                + " | ".join(times.get(m, "–") for m in METHODS)
                + " | "
                + " | ".join(ratios.get(m, "–") for m in METHODS[1:])
                + " |"
            )


if __name__ == "__main__":
    main()
