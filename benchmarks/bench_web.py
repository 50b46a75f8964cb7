"""Load test of the web app on loopback: latency percentiles, errors and the server's peak memory.

Starts ``python -m relprop.web`` (the same as ``relprop serve``) in a subprocess on a free
loopback port, waits until it answers, sends one warm-up request, then fires ``--requests``
uploads from ``--clients`` client threads at once and records each request's wall time (from
sending to the full answer). Uploads are real images: scans of the embedded model's held-out
test digits (64×64 PNG, dark ink on white) for ``digits``, scikit-image's photographs (JPEG)
for the other models (torchvision architectures get random weights: no download).

Reports p50/p95/max latency, throughput, the status codes seen and the server's peak
resident set size (``VmHWM`` of the server process: the high-water mark over its whole life,
start-up included) next to its size after start-up and warm-up. With more clients than
``--concurrency``, requests queue (up to ``--queue``; beyond, 503) instead of running at once,
which is what keeps memory bounded.

    python benchmarks/bench_web.py                                   # digits, 50 requests, 8 clients
    python benchmarks/bench_web.py --model resnet18 --requests 50    # a 224×224 RGB model
    python benchmarks/bench_web.py --queue 2                          # a short queue: some 503s
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def digit_uploads(count: int) -> list[tuple[str, bytes, str]]:
    from relprop.models import digits_test_set

    test = digits_test_set()
    uploads = []
    for i in range(count):
        pixels = (test.images[i % len(test.labels), 0].numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(255 - pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        uploads.append((f"digit{i}.png", buffer.getvalue(), "image/png"))
    return uploads


def photo_uploads(count: int) -> list[tuple[str, bytes, str]]:
    import skimage.data

    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, format="JPEG", quality=90)
        photos.append((f"{name}.jpg", buffer.getvalue(), "image/jpeg"))
    return [photos[i % len(photos)] for i in range(count)]


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "relprop.web", "--port", "0", "--model", args.model, "--concurrency",
        str(args.concurrency), "--queue", str(args.queue), "--threads", str(args.threads), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("relprop web app on "):
        server.kill()
        raise SystemExit(f"the server did not start: {line}{server.stderr.read() if server.stderr else ''}")
    url = line.split(" on ", 1)[1].split()[0].rstrip("/")
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/api/status", timeout=5).raise_for_status()
            return server, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the server did not answer") from None
            time.sleep(0.1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    uploads = digit_uploads(args.requests) if args.model == "digits" else photo_uploads(args.requests)
    server, url = start_server(args)
    try:
        started = memory_kib(server.pid)
        fields = {"composite": "epsilon-gamma-box", "epsilon": "0.25", "gamma": "0.25"}
        with httpx.Client(base_url=url, timeout=300) as client:
            warm = client.post("/api/explain", files={"image": uploads[0]}, data=fields)
            warm.raise_for_status()
        warmed = memory_kib(server.pid)

        def one(upload: tuple[str, bytes, str]) -> tuple[float, int]:
            with httpx.Client(base_url=url, timeout=300) as client:
                t0 = time.perf_counter()
                response = client.post("/api/explain", files={"image": upload}, data=fields)
                if response.status_code == 200:
                    response.json()
                return time.perf_counter() - t0, response.status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, uploads))
        wall = time.perf_counter() - t0
        status = httpx.get(f"{url}/api/status").json()
        final = memory_kib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted(t for t, code in results if code == 200)
    codes: dict[str, int] = {}
    for _, code in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "model": args.model,
        "requests": args.requests,
        "clients": args.clients,
        "concurrency": args.concurrency,
        "queue": args.queue,
        "server_threads": args.threads,
        "status_codes": codes,
        "errors": sum(n for code, n in codes.items() if code != "200"),
        "p50_ms": round(1000 * quantiles[49], 1) if latencies else None,
        "p95_ms": round(1000 * quantiles[94], 1) if latencies else None,
        "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        "throughput_per_s": round(len(latencies) / wall, 2),
        "rss_after_start_mib": round(started["VmRSS"] / 1024, 1),
        "rss_after_warmup_mib": round(warmed["VmRSS"] / 1024, 1),
        "rss_peak_mib": round(final["VmHWM"] / 1024, 1),
        "server_status": status,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits", help="digits (default) or a torchvision name, e.g. resnet18")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--concurrency", type=int, default=2, help="the server's --concurrency")
    parser.add_argument("--queue", type=int, default=16, help="the server's --queue")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--allow-errors", action="store_true", help="do not fail when requests get non-200 answers")
    args = parser.parse_args()
    result = run(args)
    print(
        "| model | requests / clients | server concurrency / queue | codes | p50 ms | p95 ms | max ms | req/s | "
        "RSS start / warm / peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    codes = ", ".join(f"{n}× {c}" for c, n in sorted(result["status_codes"].items()))
    print(
        f"| {result['model']} | {result['requests']} / {result['clients']} | {result['concurrency']} / "
        f"{result['queue']} | {codes} | {result['p50_ms']} | {result['p95_ms']} | {result['max_ms']} | "
        f"{result['throughput_per_s']} | {result['rss_after_start_mib']} / {result['rss_after_warmup_mib']} / "
        f"{result['rss_peak_mib']} |"
    )
    print(f"server status after the run: {json.dumps(result['server_status'])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if result["errors"] and not args.allow_errors:
        raise SystemExit(f"{result['errors']} request(s) did not succeed: {result['status_codes']}")


if __name__ == "__main__":
    main()
