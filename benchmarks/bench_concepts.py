"""Conditional heatmaps (relprop.concepts): k channels in one batched call against one call per channel.

    python benchmarks/bench_concepts.py [--model resnet18] [--layer layer3] [--channels 8,32] [--repeats 3]

One seeded 3 × 224 × 224 input, a random-init torchvision model, the ``epsilon-gamma-box``
composite. For each k: ``batched`` = :func:`relprop.concepts.conditional_heatmaps` (the input
copied k times, k one-hot conditions, one forward and one backward pass), ``per channel`` = k
explainer calls with one condition each (what a loop over channels costs), and ``heatmap`` =
one unconditional explanation. The calls take turns (round robin) so that a shared machine's
drift hits all alike; medians are reported, and the batched heatmaps are checked to equal the
per-channel ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _timing import setup_model, time_round_robin


def main() -> None:
    import torch

    import relprop
    from relprop.concepts import channel_masks, channel_relevance, conditional_heatmaps

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--channels", default="8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model, x = setup_model(args.model, args.device, args.threads, 1)
    explainer = relprop.Explainer(model, "epsilon-gamma-box", low=-3.0, high=3.0)
    base = channel_relevance(explainer, x, None, args.layer)
    order = torch.argsort(base.channels[0], descending=True).tolist()
    rows: list[int] = []
    for k in [int(v) for v in args.channels.split(",")]:
        chosen = order[:k]

        def batched(chosen: list[int] = chosen) -> torch.Tensor:
            return conditional_heatmaps(
                explainer, x, base.target, args.layer, chosen, layer_shape=base.layer_shape, batch_size=len(chosen)
            )

        def per_channel(chosen: list[int] = chosen) -> torch.Tensor:
            masks = channel_masks(chosen, base.layer_shape, x)
            conditions = [{args.layer: masks[j : j + 1]} for j in range(len(chosen))]
            return torch.stack([explainer(x, base.target, conditions=c).relevance[0] for c in conditions])

        torch.testing.assert_close(batched()[0], per_channel(), rtol=1e-4, atol=1e-6)
        calls = {"batched": batched, "per channel": per_channel, "heatmap": lambda: explainer(x, base.target)}
        times = time_round_robin(calls, args.device, args.repeats, lambda name: False, args.repeats, f"k={k}")
        medians = {name: statistics.median(values) for name, values in times.items()}
        if not rows:
            title = f"{args.model} {args.layer}, k channels"
            print(f"| {title} | batched (s) | one call per channel (s) | ratio | heatmap (s) |")
            print("|---|---|---|---|---|")
        rows.append(k)
        ratio = medians["per channel"] / medians["batched"]
        print(
            f"| {k} | {medians['batched']:.2f} | {medians['per channel']:.2f} | {ratio:.1f}× "
            f"| {medians['heatmap']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
