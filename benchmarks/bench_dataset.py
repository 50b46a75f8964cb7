"""Speed of explaining whole data sets into a relevance store (relprop.dataset).

Run ``python benchmarks/bench_dataset.py`` (``--help`` for the sizes). Three parts:

``overhead``
    The local executor (loader thread, explainer, writer thread into the Zarr store) against a
    bare loop of ``Explainer`` calls on the same batches of the same in-memory inputs, which
    stores nothing. Both are timed whole — the run includes creating the store, hashing the
    weights, the one-sample probe and the final metadata — and alternate round by round, so
    that drift of a shared machine hits both alike; both are warmed up once first (imports).
    Target: overhead ≤ 10 %.
``ray``
    A local Ray instance (started once here) with 1 and then 2 workers, one torch thread
    each, writing fresh stores; the rate is samples / (run time − worker start-up), the
    start-up (Ray workers load torch and the model) being a fixed cost per run. The runs
    alternate; the 1-worker and 2-worker stores must be identical. Target: 2 workers ≥ 1.7×
    one worker on a CPU-bound model.
``waiting``
    The same with a source whose samples take 0.1 s each to load (as from a slow network
    file system): the workers mostly wait, so 2 workers should give 2× whatever else the
    machine runs. This checks that the executor keeps its workers busy in parallel.
``cluster``
    A 2-node Ray cluster on this machine (two ``ray start`` processes on 127.0.0.1, one CPU
    each) joined by ``relprop explain-dataset --ray ADDRESS`` in a subprocess; one worker
    lands on each node.

Models: the embedded digits CNN (8×8) and torchvision's ResNet-50 at 224² with random weights
(speed does not depend on the weights), both with epsilon-gamma-box. The script prints
Markdown tables for BENCHMARKS.md, a paper estimate for ImageNet (1.28 M images) from the
measured rates, and writes everything as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = 1_281_167


def _model(name: str, samples: int) -> tuple[Any, Any, dict[str, Any], int]:
    """(model, inputs, composite parameters, batch size) for a benchmark model."""
    import torch

    if name == "digits":
        from relprop.models import digits_test_set, load_digits_model

        images = digits_test_set().images
        repeats = -(-samples // len(images))
        return (
            load_digits_model(),
            images.repeat(repeats, 1, 1, 1)[:samples].contiguous(),
            {"low": 0.0, "high": 1.0},
            64,
        )
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(samples, 3, 224, 224)
    return model, x, {"low": -2.1179, "high": 2.64}, 16


def _bare_loop(model: Any, x: Any, params: dict[str, Any], batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of a plain loop of Explainer calls."""
    import relprop

    start, cpu = time.perf_counter(), time.process_time()
    explainer = relprop.Explainer(model, "epsilon-gamma-box", **params)
    for first in range(0, len(x), batch):
        explainer(x[first : first + batch])
    return time.perf_counter() - start, time.process_time() - cpu


def _dataset_run(model: Any, x: Any, params: dict[str, Any], batch: int, path: Path, **options: Any) -> dict[str, Any]:
    from relprop.dataset import ArraySource, explain_dataset

    shutil.rmtree(path, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    store = explain_dataset(model, ArraySource.from_arrays(x.numpy()), path, batch_size=batch, progress="none",
                            **options, **params)  # fmt: skip
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    run = store.metadata["runs"][-1]
    startup = float(run.get("startup_seconds", 0.0))
    # Local runs: CPU of this whole process; Ray runs: CPU of the workers while they explained and wrote.
    worker_cpu = cpu if options.get("executor", "local") == "local" else float(run["cpu_seconds"])
    return {
        "seconds": seconds, "startup": startup, "rate": run["explained"] / max(1e-9, seconds - startup),
        "cpu_seconds": worker_cpu, "rate_per_cpu_second": run["explained"] / max(1e-9, worker_cpu), "run": run,
    }  # fmt: skip


def overhead(models: list[str], samples: dict[str, int], rounds: int, work: Path) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        model, x, params, batch = _model(name, samples[name])
        # Warm-up of both, so that neither pays the process's one-time costs in a timed round (allocator,
        # kernels, imports: importing Zarr alone takes 0.1 s of CPU, 4 % of a digits run).
        _bare_loop(model, x[: batch * 2], params, batch)
        _dataset_run(model, x[: batch * 2], params, batch, work / f"{name}-warm-up.zarr")
        bare, stored, bare_cpu, stored_cpu = [], [], [], []
        for round_index in range(rounds):
            order = ("bare", "store") if round_index % 2 == 0 else ("store", "bare")
            for which in order:
                if which == "bare":
                    wall, cpu = _bare_loop(model, x, params, batch)
                    bare.append(wall)
                    bare_cpu.append(cpu)
                else:
                    result = _dataset_run(model, x, params, batch, work / f"{name}-local.zarr")
                    stored.append(result["seconds"])
                    stored_cpu.append(result["cpu_seconds"])
            print(f"  overhead {name} round {round_index + 1}: bare {bare[-1]:.2f} s ({bare_cpu[-1]:.2f} s CPU), "
                  f"store {stored[-1]:.2f} s ({stored_cpu[-1]:.2f} s CPU)", file=sys.stderr)  # fmt: skip
        ratios = [s / b for s, b in zip(stored, bare, strict=True)]
        cpu_ratios = [s / b for s, b in zip(stored_cpu, bare_cpu, strict=True)]
        rows.append({
            "model": name, "samples": len(x), "batch": batch, "bare_s": statistics.median(bare),
            "store_s": statistics.median(stored), "overhead": statistics.median(ratios) - 1.0,
            "overhead_per_round": [r - 1.0 for r in ratios], "rate_local": len(x) / statistics.median(stored),
            "bare_cpu_s": statistics.median(bare_cpu), "store_cpu_s": statistics.median(stored_cpu),
            "cpu_overhead": statistics.median(cpu_ratios) - 1.0,
            "rate_per_cpu_second": len(x) / statistics.median(stored_cpu),
        })  # fmt: skip
    return rows


def _same_arrays(a: Path, b: Path) -> bool:
    import numpy as np
    import zarr

    left, right = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    return all(
        np.array_equal(np.asarray(left[k][:]), np.asarray(right[k][:]), equal_nan=True)
        for k in ("relevance", "output", "ledger", "classes", "downsampled")
    )


def ray_scaling(models: list[str], samples: dict[str, int], rounds: int, work: Path) -> list[dict[str, Any]]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT / "src")}})  # fmt: skip
    rows = []
    try:
        for name in models:
            model, x, params, batch = _model(name, samples[name])
            # Enough chunks for two workers: ResNet-50's default chunk (96 samples) would be the whole benchmark.
            chunk = batch * 2 if name != "digits" else None
            rates: dict[int, list[float]] = {1: [], 2: []}
            per_cpu: dict[int, list[float]] = {1: [], 2: []}
            startups: dict[int, list[float]] = {1: [], 2: []}
            for round_index in range(rounds):
                for workers in (1, 2) if round_index % 2 == 0 else (2, 1):
                    result = _dataset_run(model, x, params, batch, work / f"{name}-ray{workers}.zarr", executor="ray",
                                          workers=workers, threads=1, chunk_size=chunk)  # fmt: skip
                    rates[workers].append(result["rate"])
                    per_cpu[workers].append(result["rate_per_cpu_second"])
                    startups[workers].append(result["startup"])
                print(f"  ray {name} round {round_index + 1}: 1 worker {rates[1][-1]:.1f}/s, "
                      f"2 workers {rates[2][-1]:.1f}/s", file=sys.stderr)  # fmt: skip
            same = _same_arrays(work / f"{name}-ray1.zarr", work / f"{name}-ray2.zarr")
            rows.append({
                "model": name, "samples": len(x), "batch": batch, "chunk": chunk,
                "rate_1": statistics.median(rates[1]), "rate_2": statistics.median(rates[2]),
                "speedup": statistics.median(b / a for a, b in zip(rates[1], rates[2], strict=True)),
                "per_cpu_1": statistics.median(per_cpu[1]), "per_cpu_2": statistics.median(per_cpu[2]),
                "startup_1_s": statistics.median(startups[1]), "startup_2_s": statistics.median(startups[2]),
                "stores_identical": same,
            })  # fmt: skip
    finally:
        ray.shutdown()
    return rows


class _WaitingSource:
    """128 digits, each taking ``delay`` seconds to load (pickled by value to the Ray workers)."""

    def __init__(self, delay: float) -> None:
        from relprop.models import digits_test_set

        test = digits_test_set()
        self.images, self.labels, self.delay = test.images[:128], test.labels[:128], delay

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        time.sleep(self.delay)
        return self.images[index], int(self.labels[index])


def waiting(rounds: int, work: Path) -> list[dict[str, Any]]:
    import ray

    from relprop.dataset import TorchDatasetSource, explain_dataset
    from relprop.models import load_digits_model

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT / "src")}})  # fmt: skip
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        for round_index in range(rounds):
            for workers in (1, 2) if round_index % 2 == 0 else (2, 1):
                path = work / f"waiting-{workers}.zarr"
                shutil.rmtree(path, ignore_errors=True)
                store = explain_dataset(load_digits_model(), TorchDatasetSource(_WaitingSource(0.1), name="waiting"),
                                        path, executor="ray", workers=workers, batch_size=16, chunk_size=16,
                                        progress="none", low=0.0, high=1.0)  # fmt: skip
                run = store.metadata["runs"][-1]
                rates[workers].append(run["explained"] / (run["seconds"] - run["startup_seconds"]))
            print(f"  waiting round {round_index + 1}: 1 worker {rates[1][-1]:.1f}/s, 2 workers {rates[2][-1]:.1f}/s",
                  file=sys.stderr)  # fmt: skip
    finally:
        ray.shutdown()
    speedups = [b / a for a, b in zip(rates[1], rates[2], strict=True)]
    return [{"samples": 128, "delay_s": 0.1, "rate_1": statistics.median(rates[1]),
             "rate_2": statistics.median(rates[2]), "speedup": statistics.median(speedups)}]  # fmt: skip


def cluster(models: list[str], samples: dict[str, int], work: Path) -> list[dict[str, Any]]:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from _ray_cluster import local_cluster

    rows = []
    with local_cluster(nodes=2, cpus_per_node=1, pythonpath=str(ROOT / "src"), logs=work / "ray-logs") as c:
        for name in models:
            _, x, params, batch = _model(name, samples[name])
            source = work / f"{name}.npy"
            np.save(source, x.numpy())
            out = work / f"{name}-cluster.zarr"
            shutil.rmtree(out, ignore_errors=True)
            command = [sys.executable, "-m", "relprop.cli", "explain-dataset", str(source), "--model", name,
                       "--out", str(out), "--ray", c.address, "--workers", "2", "--batch-size", str(batch),
                       *([] if name == "digits" else ["--chunk-size", str(batch * 2)]),
                       "--low", str(params["low"]), "--high", str(params["high"]),
                       "--progress", "none"]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=c.env, capture_output=True, text=True, timeout=3600)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"the cluster run failed:\n{done.stdout}\n{done.stderr}")
            meta = json.loads((out / "zarr.json").read_text())["attributes"]["relprop"]
            run = meta["runs"][-1]
            nodes = {w.split("node=")[1] for w in run["workers"]}
            rows.append({
                "model": name, "samples": len(x), "nodes": len(nodes), "workers": run["workers"],
                "rate": run["explained"] / max(1e-9, run["seconds"] - run["startup_seconds"]),
                "per_cpu": run["explained"] / max(1e-9, run["cpu_seconds"]),
                "startup_s": run["startup_seconds"], "command_s": seconds,
            })  # fmt: skip
    return rows


def _hours(samples: float, rate: float) -> str:
    hours = samples / rate / 3600
    return f"{hours:,.0f} h" if hours >= 10 else f"{hours:.1f} h"


def imagenet_estimate(results: dict[str, Any]) -> list[str]:
    """Paper estimate of ResNet-50 on ImageNet's 1.28 M training images from the measured rates.

    Measured rows are wall-clock rates on this (shared) machine. The estimates assume one Ray
    worker per dedicated core, each explaining at the rate one worker reached per CPU-second
    of its own (``samples / worker CPU seconds``, which contention does not change), and
    linear scaling across workers (what the 2-worker speed-up on a quiet machine checks).
    """
    ray_rows = {r["model"]: r for r in results.get("ray", [])}
    local_rows = {r["model"]: r for r in results.get("overhead", [])}
    if "resnet50" not in ray_rows:
        return []
    ray_row = ray_rows["resnet50"]
    per_core = ray_row["per_cpu_1"]
    lines = ["| setting | workers | samples/s | 1.28 M images |", "|---|---|---|---|"]
    if "resnet50" in local_rows:
        rate = local_rows["resnet50"]["rate_local"]
        lines.append(
            f"| this machine, local executor, 1 thread (measured) | 1 | {rate:.2f} | {_hours(IMAGENET, rate)} |"
        )
    for workers in (1, 2):
        rate = ray_row[f"rate_{workers}"]
        lines.append(f"| this machine, Ray (measured) | {workers} | {rate:.2f} | {_hours(IMAGENET, rate)} |")
    for machines, cores in ((1, 1), (1, 32), (8, 32), (32, 32)):
        workers = machines * cores
        rate = workers * per_core
        label = f"{machines} machine{'s' if machines > 1 else ''} × {cores} dedicated core{'s' if cores > 1 else ''}"
        lines.append(f"| {label} (estimate) | {workers} | {rate:.1f} | {_hours(IMAGENET, rate)} |")
    return lines


def _markdown(results: dict[str, Any]) -> str:
    out = []
    if results.get("overhead"):
        out += ["| model | samples | batch | bare loop | local executor + store | wall overhead (per round) | "
                "CPU: bare / store / overhead |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in results["overhead"]:
            rounds = ", ".join(f"{100 * v:+.1f} %" for v in r["overhead_per_round"])
            out.append(f"| {r['model']} | {r['samples']} | {r['batch']} | {r['bare_s']:.2f} s | {r['store_s']:.2f} s "
                       f"| {100 * r['overhead']:+.1f} % ({rounds}) | {r['bare_cpu_s']:.2f} s / {r['store_cpu_s']:.2f} s"
                       f" / {100 * r['cpu_overhead']:+.1f} % |")  # fmt: skip
        out.append("")
    if results.get("ray"):
        out += ["| model | samples | 1 worker | 2 workers | speed-up | per worker CPU-second (1 / 2) | "
                "worker start-up (1 / 2) | stores identical |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in results["ray"]:
            out.append(f"| {r['model']} | {r['samples']} | {r['rate_1']:.2f}/s | {r['rate_2']:.2f}/s | "
                       f"{r['speedup']:.2f}× | {r['per_cpu_1']:.2f} / {r['per_cpu_2']:.2f} | "
                       f"{r['startup_1_s']:.1f} s / {r['startup_2_s']:.1f} s | {r['stores_identical']} |")  # fmt: skip
        out.append("")
    if results.get("waiting"):
        out += ["| source | 1 worker | 2 workers (ideal 2×) | speed-up |", "|---|---|---|---|"]
        for r in results["waiting"]:
            out.append(f"| 128 digits, {r['delay_s']} s to load each | {r['rate_1']:.2f}/s | {r['rate_2']:.2f}/s | "
                       f"{r['speedup']:.2f}× |")  # fmt: skip
        out.append("")
    if results.get("cluster"):
        out += ["| model | samples | nodes used | samples/s | per worker CPU-second | worker start-up |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for r in results["cluster"]:
            out.append(f"| {r['model']} | {r['samples']} | {r['nodes']} | {r['rate']:.2f} | {r['per_cpu']:.2f} | "
                       f"{r['startup_s']:.1f} s |")  # fmt: skip
        out.append("")
    estimate = imagenet_estimate(results)
    if estimate:
        out += [*estimate, ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="overhead,ray,waiting,cluster",
                        help="overhead, ray, waiting, cluster (comma-separated)")  # fmt: skip
    parser.add_argument("--models", default="digits,resnet50")
    parser.add_argument("--digits-samples", type=int, default=18000)
    parser.add_argument("--resnet-samples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    samples = {"digits": args.digits_samples, "resnet50": args.resnet_samples}
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average": os.getloadavg(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        work = Path(tmp)
        if "overhead" in parts:
            results["overhead"] = overhead(models, samples, args.rounds, work)
        if "ray" in parts:
            results["ray"] = ray_scaling(models, samples, args.rounds, work)
        if "waiting" in parts:
            results["waiting"] = waiting(args.rounds, work)
        if "cluster" in parts:
            results["cluster"] = cluster(models, samples, work)
    results["machine"]["load_average_after"] = os.getloadavg()
    print(_markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
