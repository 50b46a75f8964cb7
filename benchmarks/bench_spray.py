"""Time and memory of SpRAy (relprop.spray.analyze_heatmaps) on up to 100,000 heatmaps of one class.

    python benchmarks/bench_spray.py [--sizes 10000,30000,100000] [--side 64] [--work DIR]

For each size N the script writes N synthetic heatmaps ``(N, 1, side, side)`` float32 into a
Zarr array (chunks of 1,000 heatmaps, as a relevance store holds them; not in memory): an
"object" blob at a random place near the centre, Gaussian noise, and on 10 % of them a bright
2×2 spot at a fixed place (so that the run can also say whether it found that group: precision
and recall of the top-ranked cluster). A fresh Python process then runs the analysis with its
defaults (pooled to 32×32, L1-normalised, PCA to 128 components for the neighbour search,
10 neighbours, 12 eigenvalues, eigengap between 2 and 10 clusters, t-SNE of a 2,000-sample
subset) and reports the seconds per stage and its peak resident memory (``ru_maxrss``), which
includes the Python interpreter, torch, SciPy and scikit-learn (about 400 MiB at start).
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRACTION = 0.1
STAGES = ("features", "pca", "graph", "spectrum", "clustering", "ranking", "embedding")


def write_heatmaps(path: Path, n: int, side: int, seed: int = 0) -> np.ndarray:
    """Write the synthetic heatmaps; return which rows carry the spot."""
    import zarr

    rng = np.random.default_rng(seed)
    array = zarr.create_array(str(path), shape=(n, 1, side, side), chunks=(1000, 1, side, side), dtype="float32")
    marked = rng.random(n) < FRACTION
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    width = (side / 8) ** 2
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        centres = side / 2 + rng.normal(0, side / 16, (count, 2)).astype(np.float32)
        blob = np.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / width)
        maps = blob + rng.normal(0, 0.05, (count, side, side)).astype(np.float32)
        spot = slice(side - side // 8, side - side // 8 + side // 16)
        maps[marked[start : start + count], spot, spot] += 2.0
        array[start : start + count] = maps[:, None].astype(np.float32)
    return marked


def child(path: str, marked_path: str) -> None:
    """Run the analysis on the Zarr array at ``path`` and print one JSON line."""
    sys.path.insert(0, str(ROOT / "src"))
    import zarr

    from relprop.spray import analyze_heatmaps

    heatmaps = zarr.open_array(path, mode="r")
    marked = np.load(marked_path)
    start = time.perf_counter()
    result = analyze_heatmaps(heatmaps, embedding="tsne", batch_size=4096)
    total = time.perf_counter() - start
    top = np.zeros(len(marked), dtype=bool)
    top[result.top.members] = True
    hits = int((top & marked).sum())
    print(
        json.dumps(
            {
                "n": len(marked),
                "timings": result.timings,
                "total": total,
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "clusters": result.n_clusters,
                "precision": hits / max(int(top.sum()), 1),
                "recall": hits / max(int(marked.sum()), 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None, help="folder for the Zarr arrays (default: a temp folder)")
    parser.add_argument("--child", nargs=2, metavar=("ZARR", "MARKED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for n in (int(s) for s in args.sizes.split(",")):
            store, marked_path = Path(work) / f"h{n}.zarr", Path(work) / f"m{n}.npy"
            start = time.perf_counter()
            np.save(marked_path, write_heatmaps(store, n, args.side))
            print(f"wrote {n} heatmaps in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(store), str(marked_path)],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    header = "| heatmaps | " + " | ".join(STAGES) + " | total (s) | peak memory (MiB) | clusters | top: P / R |"
    print(header)
    print("|" + "---:|" * (len(STAGES) + 5))
    for r in rows:
        stages = " | ".join(f"{r['timings'].get(s, 0.0):.1f}" for s in STAGES)
        print(
            f"| {r['n']:,} | {stages} | {r['total']:.0f} | {r['peak_mib']:.0f} | {r['clusters']} | "
            f"{r['precision']:.2f} / {r['recall']:.2f} |"
        )


if __name__ == "__main__":
    main()
