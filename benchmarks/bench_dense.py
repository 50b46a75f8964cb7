"""Cost of explaining a region of a real dense model (CRAFT on scikit-image's scanned page), against one gradient.

    python benchmarks/bench_dense.py [--threads 2] [--repeats 5] [--device cpu|cuda]

Times, round-robin after one warm-up: the model's forward pass; the gradient of the region score
(one forward and one backward: the floor for any backpropagation method); relprop's LRP with
``epsilon-gamma-box`` on the same region through a prepared :class:`relprop.Explainer`; and the
same through ``relprop.captum.LRP`` (which builds its explainer per call, as Captum does). Needs
the ``examples`` extra (CRAFT's weights). Prints a Markdown table (median seconds, ratio to the
gradient).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
from _timing import time_round_robin
from skimage import data

import relprop
from relprop import captum as relprop_captum
from relprop.models.craft import craft_bounds, craft_input, detect_words, load_craft
from relprop.targets import region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_craft(inplace=False, device=args.device)
    x = craft_input(data.page()).to(args.device)
    with torch.no_grad():
        word = detect_words(model(x)[0])[0]
    target = region(box=tuple(word), channel=0, output_layout="channels_last")
    low, high = (b.to(args.device) for b in craft_bounds())
    explainer = relprop.Explainer(model, "epsilon-gamma-box", output=0, low=low, high=high)
    adapter = relprop_captum.LRP(model, composite="epsilon-gamma-box", output=0, low=low, high=high)
    x0, y0, x1, y1 = word

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def gradient() -> None:
        leaf = x.detach().requires_grad_(True)
        score = model(leaf)[0][0, y0:y1, x0:x1, 0].sum()
        torch.autograd.grad(score, leaf)

    calls = {
        "forward": forward,
        "gradient of the region score": gradient,
        "LRP epsilon-gamma-box (Explainer)": lambda: explainer(x, target),
        "LRP epsilon-gamma-box (relprop.captum.LRP)": lambda: adapter.attribute(x, target=target),
    }
    times = time_round_robin(calls, args.device, args.repeats, lambda _: False, args.repeats, progress="craft")
    base = statistics.median(times["gradient of the region score"])
    print(f"CRAFT on page() {tuple(x.shape)}, word box {tuple(word)}, {args.device}, {args.threads} threads\n")
    print("| call | median s | × gradient |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
