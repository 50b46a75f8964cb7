"""Speed and memory of the LRP engine against Gradient×Input and Zennit.

Run ``python benchmarks/bench_core.py`` (add ``--device cuda`` on a GPU machine). Every
(model, method) pair runs in its own fresh subprocess so that its peak memory is its own:
the script loads the model (random init, eval), makes a batch of 4 × 3 × 224 × 224, runs the
method once to warm up (this records relprop's plan and caches its modified weights), then
times ``--repeats`` calls and reports the median (with the default allocator settings).
Peak memory, measured in separate processes, is the highest resident set size (CPU, sampled
every half millisecond, with glibc's mmap threshold fixed so that freed tensors leave the
resident set) or ``torch.cuda.max_memory_allocated`` (CUDA) during one call,
minus what was resident just before it: model weights and relprop's cached modified weights
are excluded from the call peak; the cache is reported on its own. Timing runs interleave the
methods round-robin in one process, so that drift of a shared machine hits all of them alike.
Next to the wall time, the process CPU time of each call (``time.process_time``, all threads) is
reported: on a shared machine it is far less disturbed by other processes than the wall time.

Besides relprop's LRP-ε and epsilon-gamma-box (each also with ``compile=True``: the fused
kernels of ``relprop.rules.kernels``, compiled in the warm-up call) and Zennit's
EpsilonGammaBox, ``floor-epsilon-gamma-box`` times Gradient×Input plus only the convolutions
that epsilon-gamma-box's rules cannot do without (``benchmarks/_floor.py``): the lowest ratio
any implementation of that composite can reach on this machine.

Results are printed as a Markdown table (for BENCHMARKS.md) and written as JSON with
``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _timing import gradient_x_input_call, setup_model, sync, time_round_robin

METHODS = [
    "forward",
    "gradient-x-input",
    "relprop-epsilon",
    "relprop-epsilon-compiled",
    "relprop-epsilon-gamma-box",
    "relprop-epsilon-gamma-box-compiled",
    "floor-epsilon-gamma-box",
    "zennit-epsilon-gamma-box",
]
MODELS = ["vgg16", "resnet50"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Samples the resident set size in a thread (torch releases the GIL inside its kernels)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.0005)

    def __enter__(self) -> PeakSampler:
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def build_method(name: str, model: Any, x: Any) -> tuple[Callable[[], Any], Callable[[], int]]:
    """Return (call, cache_bytes) for one method."""
    import torch

    import relprop

    def no_cache() -> int:
        return 0

    if name == "forward":

        def forward() -> Any:
            with torch.no_grad():
                return model(x)

        return forward, no_cache
    if name == "gradient-x-input":
        return gradient_x_input_call(model, x), no_cache
    if name.startswith("relprop-"):
        # "-compiled": the fused kernels of relprop.rules.kernels (compiled in the warm-up call).
        composite = name[len("relprop-") :].removesuffix("-compiled")
        options: dict[str, Any] = {"low": -2.2, "high": 2.7} if "box" in composite else {}
        if name.endswith("-compiled"):  # (only then: bench_versions.py runs this with older trees too)
            options["compile"] = True
        explainer = relprop.Explainer(model, composite, **options)

        def cache_bytes() -> int:
            total = 0
            seen: set[int] = set()
            params = {id(p) for p in model.parameters()}

            def visit(value: Any) -> None:
                nonlocal total
                if isinstance(value, torch.Tensor):
                    if id(value) not in params and id(value) not in seen:
                        seen.add(id(value))
                        total += value.numel() * value.element_size()
                elif isinstance(value, dict):
                    for v in value.values():
                        visit(v)
                elif isinstance(value, (tuple, list)):
                    for v in value:
                        visit(v)

            for value in explainer.weights.values():
                visit(value)
            return total

        return (lambda: explainer(x).relevance), cache_bytes
    if name == "floor-epsilon-gamma-box":
        from _floor import floor_call

        return floor_call(model, x), no_cache
    if name == "zennit-epsilon-gamma-box":
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonGammaBox
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer

        canonizer = ResNetCanonizer() if "resnet" in type(model).__name__.lower() else VGGCanonizer()
        composite = EpsilonGammaBox(low=-2.2, high=2.7, canonizers=[canonizer])
        with torch.no_grad():
            target = model(x).argmax(1)
        onehot = torch.eye(1000, device=x.device)[target]

        def zennit_call() -> Any:
            with Gradient(model=model, composite=composite) as attributor:
                return attributor(x, onehot)[1]

        return zennit_call, no_cache
    raise ValueError(name)


def measure_memory(model_name: str, method: str, device: str, threads: int, batch: int) -> dict[str, Any]:
    """Peak memory of one call (after a warm-up call), in a process of its own."""
    import torch

    model, x = setup_model(model_name, device, threads, batch)
    call, cache_bytes = build_method(method, model, x)
    call()
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        sync(device)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_bytes()
        with PeakSampler() as sampler:
            call()
        peak = sampler.peak - before
    return {"model": model_name, "method": method, "peak_bytes": peak, "cache_bytes": cache_bytes()}


def measure_times(
    model_name: str, methods: list[str], device: str, threads: int, batch: int, repeats: int, zennit_repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU times per method, methods interleaved round-robin so that machine drift hits all alike."""
    model, x = setup_model(model_name, device, threads, batch)
    calls = {m: build_method(m, model, x)[0] for m in methods}
    cpu: dict[str, list[float]] = {}
    wall = time_round_robin(calls, device, repeats, lambda m: m.startswith("zennit"), zennit_repeats, cpu_times=cpu)
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--zennit-repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        model_name, what = args.child
        if what == "times":
            result: Any = measure_times(
                model_name, args.methods, args.device, args.threads, args.batch, args.repeats, args.zennit_repeats
            )
        else:
            result = measure_memory(model_name, what, args.device, args.threads, args.batch)
        print("RESULT " + json.dumps(result))
        return

    def child(model_name: str, what: str) -> Any:
        cmd = [
            sys.executable, __file__, "--child", model_name, what, "--device", args.device,
            "--threads", str(args.threads), "--batch", str(args.batch), "--repeats", str(args.repeats),
            "--zennit-repeats", str(args.zennit_repeats), "--methods", *args.methods,
        ]  # fmt: skip
        # glibc keeps freed blocks below its (adaptive) mmap threshold in the heap, so the resident size
        # would not fall when tensors are freed; a fixed low threshold makes it track live memory.
        # Only for the memory children: it makes every large allocation a fresh mmap whose page
        # faults would add the same cost to every method and flatten the time ratios.
        env = dict(os.environ)
        if what != "times":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark {model_name}/{what} failed")
        return json.loads(line[len("RESULT ") :])

    results: list[dict[str, Any]] = []
    for model_name in args.models:
        times = child(model_name, "times")
        for method in args.methods:
            memory = child(model_name, method)
            result = {
                **memory,
                "times_s": times["wall"][method],
                "median_s": statistics.median(times["wall"][method]),
                "cpu_times_s": times["cpu"][method],
                "median_cpu_s": statistics.median(times["cpu"][method]),
            }
            results.append(result)
            print(
                f"{model_name:>9} {method:<28} {result['median_s']:8.3f} s  cpu {result['median_cpu_s']:8.3f} s  "
                f"peak {result['peak_bytes'] / 2**20:8.1f} MiB",
                file=sys.stderr,
            )

    import torch

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(
        f"\nDevice: {args.device} ({device_name}), threads={args.threads}, "
        f"batch {args.batch}×3×224×224, torch {torch.__version__}, "
        f"load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n"
    )
    print(
        "| model | method | median time (s) | × gradient×input | CPU time (s) | × gradient×input "
        "| peak memory (MiB) | × gradient×input | cached weights (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model_name in args.models:
        rows = [r for r in results if r["model"] == model_name]
        base = next((r for r in rows if r["method"] == "gradient-x-input"), None)
        for r in rows:
            t_ratio = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
            c_ratio = f"{r['median_cpu_s'] / base['median_cpu_s']:.2f}" if base else "-"
            m_ratio = f"{r['peak_bytes'] / base['peak_bytes']:.2f}" if base and base["peak_bytes"] > 0 else "-"
            print(
                f"| {model_name} | {r['method']} | {r['median_s']:.3f} | {t_ratio} | "
                f"{r['median_cpu_s']:.3f} | {c_ratio} | "
                f"{r['peak_bytes'] / 2**20:.0f} | "
                f"{m_ratio} | {r['cache_bytes'] / 2**20:.0f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": args.device, "device_name": device_name, "threads": args.threads, "results": results},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
