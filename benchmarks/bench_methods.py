"""Cost of every attribution method as a ratio to one plain gradient.

Run ``python benchmarks/bench_methods.py`` (add ``--device cuda`` on a GPU machine). For each
model (random init, eval) the script makes a batch of ``--batch`` × 3 × 224 × 224, builds every
method (``relprop.explain(model, x, method=NAME, **params)`` for a spec ``NAME:key=value,...``
as the command line takes it, see :func:`relprop.methods.resolve`), runs each once to warm up,
then times ``--repeats`` calls of each, interleaved round-robin in one process so that drift of
a shared machine hits all methods alike (the slow sampling methods — Integrated Gradients,
SmoothGrad, occlusion — get ``--slow-repeats`` rounds). The baseline ``plain-gradient`` is one
forward and one backward pass of the model with ``torch.autograd.grad`` and no relprop code; the
table reports each method's median time and its ratio to that baseline's median.

Every call starts from the model alone, as ``relprop.explain`` does: methods that run through
the LRP engine (LRP, guided backprop, deconvnet, DeepLIFT, Deep Taylor) record their plan in
each call. Methods use their default parameters unless the spec says otherwise, so the ratios
of the sampling methods scale with their ``steps``, ``n`` or number of windows.

Results are printed as a Markdown table (for BENCHMARKS.md) and written as JSON with
``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

from _timing import setup_model, time_round_robin

BASELINE = "plain-gradient"
METHODS = [
    BASELINE,
    "gradient",
    "gradient-x-input",
    "lrp:epsilon-gamma-box,low=-2.2,high=2.7",
    "guided-backprop",
    "deconvnet",
    "deeplift",
    "deeplift:reveal-cancel",
    "deep-taylor:low=-2.2,high=2.7",
    "integrated-gradients",
    "smoothgrad",
    "occlusion",
]
SLOW = ("integrated-gradients", "smoothgrad", "occlusion")
MODELS = ["vgg16", "resnet50"]


def build(spec: str, model: Any, x: Any) -> Callable[[], Any]:
    """A no-argument call that explains ``x`` with the method ``spec``."""
    import torch

    import relprop
    from relprop import methods

    if spec == BASELINE:

        def plain_gradient() -> Any:
            leaf = x.detach().requires_grad_(True)
            out = model(leaf)
            target = out.detach().argmax(1)
            (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)
            return grad

        return plain_gradient
    name, params = methods.resolve(spec)
    return lambda: relprop.explain(model, x, method=name, **params).relevance


def measure(
    model_name: str, specs: list[str], device: str, threads: int, batch: int, repeats: int, slow_repeats: int
) -> dict[str, list[float]]:
    """Timings per method, interleaved round-robin after one warm-up call each."""
    model, x = setup_model(model_name, device, threads, batch)
    calls = {spec: build(spec, model, x) for spec in specs}
    return time_round_robin(calls, device, repeats, lambda spec: spec.split(":")[0] in SLOW, slow_repeats, model_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--methods", nargs="*", default=METHODS, help="method specs; plain-gradient is always added")
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args()
    specs = [BASELINE, *(s for s in args.methods if s != BASELINE)]

    results: list[dict[str, Any]] = []
    for model_name in args.models:
        times = measure(model_name, specs, args.device, args.threads, args.batch, args.repeats, args.slow_repeats)
        base = statistics.median(times[BASELINE])
        for spec in specs:
            median = statistics.median(times[spec])
            ratio = median / base
            row = {"model": model_name, "method": spec, "times_s": times[spec], "median_s": median, "ratio": ratio}
            results.append(row)
            print(f"{model_name:>9} {spec:<44} {median:8.3f} s  {ratio:7.2f} x gradient", file=sys.stderr)

    import torch

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(
        f"\nDevice: {args.device} ({device_name}), threads={args.threads}, "
        f"batch {args.batch}×3×224×224, torch {torch.__version__}\n"
    )
    print("| model | method | median time (s) | × one gradient |")
    print("|---|---|---:|---:|")
    for r in results:
        print(f"| {r['model']} | `{r['method']}` | {r['median_s']:.3f} | {r['ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": args.device, "device_name": device_name, "threads": args.threads, "batch": args.batch,
                 "results": results},
                f,
                indent=2,
            )  # fmt: skip


if __name__ == "__main__":
    main()
