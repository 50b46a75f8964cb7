"""LRP against Gradient×Input in two source trees, alternately: is a change faster or slower?

Run ``python benchmarks/bench_versions.py --tree before=/path/to/old/src --tree after=src``. Each
round runs every tree once, in a fresh process per tree (one relprop per process), in turns, so
that drift of a shared machine hits both alike; within a process the methods are timed
round-robin (``_timing.time_round_robin``). Reported, for the wall time and for the process CPU
time (``time.process_time``; far less disturbed by other processes on a shared machine, exactly the
work done with ``--threads 1``): the median time of each method per tree, the ratio of each LRP
composite to Gradient×Input per tree (the machine-independent number), and per method the median
over rounds of ``time(tree) / time(first tree)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import setup_model, time_round_robin

METHODS = ["gradient-x-input", "relprop-epsilon", "relprop-epsilon-gamma-box"]


def child(model_name: str, methods: list[str], threads: int, batch: int, repeats: int) -> None:
    from bench_core import build_method

    model, x = setup_model(model_name, "cpu", threads, batch)
    calls = {m: build_method(m, model, x)[0] for m in methods}
    cpu: dict[str, list[float]] = {}
    wall = time_round_robin(calls, "cpu", repeats, lambda m: False, repeats, cpu_times=cpu)
    print(
        json.dumps(
            {
                kind: {m: statistics.median(t) for m, t in times.items()}
                for kind, times in (("wall", wall), ("cpu", cpu))
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a source tree (holds relprop/)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.methods, args.threads, args.batch, args.repeats)
        return
    trees = [t.split("=", 1) for t in args.tree]
    here = Path(__file__).resolve().parent
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in trees}
    for round_index in range(args.rounds):
        for name, path in trees:
            env = {**os.environ, "PYTHONPATH": f"{Path(path).resolve()}{os.pathsep}{here}"}
            command = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", args.model]
            command += ["--repeats", str(args.repeats), "--threads", str(args.threads), "--batch", str(args.batch)]
            command += ["--methods", *args.methods]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}/{args.rounds} {name}: {results[name][-1]}", file=sys.stderr)
    for kind in ("wall", "cpu"):
        print(f"\n{kind} time")
        report({name: [r[kind] for r in rounds] for name, rounds in results.items()}, trees, args.methods)


def report(results: dict[str, list[dict[str, float]]], trees: list[list[str]], methods: list[str]) -> None:
    """Print the medians, the ratios to Gradient×Input and the ratios to the first tree."""
    first = trees[0][0]
    print(f"| tree | {' | '.join(methods)} | " + " | ".join(f"{m} / GxI" for m in methods[1:]) + " |")
    print("|---" * (1 + 2 * len(methods) - 1) + "|")
    for name, _ in trees:
        medians = [statistics.median(r[m] for r in results[name]) for m in methods]
        ratios = [statistics.median(r[m] / r[methods[0]] for r in results[name]) for m in methods[1:]]
        print(
            f"| {name} | "
            + " | ".join(f"{t:.3f} s" for t in medians)
            + " | "
            + " | ".join(f"{q:.2f}×" for q in ratios)
            + " |"
        )
    for name, _ in trees[1:]:
        per_method = {
            m: statistics.median(b[m] / a[m] for a, b in zip(results[first], results[name], strict=True))
            for m in methods
        }
        print(f"\n{name} / {first}: " + ", ".join(f"{m} {q:.3f}" for m, q in per_method.items()))


if __name__ == "__main__":
    main()
