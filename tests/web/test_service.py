"""Load on a real server on loopback: work beyond the concurrency limit queues, beyond the queue it
is refused with 503 at once, nothing fails, and the server answers correctly afterwards."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch
from torch import nn

from relprop.models.loading import ModelBundle, load_model
from relprop.web import WebSettings, create_app

from .conftest import digit_png, library_prediction, live_server

# Module level, not an attribute: the app deep-copies models per slot, and an Event cannot be copied.
GATE = threading.Event()


class GatedModel(nn.Module):
    """The digits model, held at the door until the test opens ``GATE``: requests pile up on cue."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not GATE.wait(timeout=60):
            raise RuntimeError("the test never opened the gate")
        return self.inner(x)


def gated_app(max_concurrent: int, max_queue: int) -> Any:
    digits = load_model("digits")
    bundle = ModelBundle(
        GatedModel(digits.model), "gated", digits.preprocess, digits.display, digits.low, digits.high, None, 1
    )
    GATE.set()  # the app probes the model once at start
    app = create_app(WebSettings(max_concurrent=max_concurrent, max_queue=max_queue), bundles={"gated": bundle})
    GATE.clear()
    return app


def post_digit(base: str, index: int) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=60) as client:
        return client.post("/api/explain", files={"image": ("d.png", digit_png(index), "image/png")})


def wait_for_status(base: str, **expected: int) -> dict[str, int]:
    deadline = time.monotonic() + 30
    while True:
        status = httpx.get(f"{base}/api/status").json()
        if all(status[k] == v for k, v in expected.items()):
            return status
        assert time.monotonic() < deadline, f"server status {status} never reached {expected}"
        time.sleep(0.02)


def test_excess_requests_queue_then_get_503_and_all_admitted_ones_succeed() -> None:
    app = gated_app(max_concurrent=1, max_queue=2)
    try:
        with live_server(app) as base, ThreadPoolExecutor(3) as pool:
            admitted = [pool.submit(post_digit, base, i) for i in range(3)]
            wait_for_status(base, running=1, waiting=2)
            refused = post_digit(base, 3)  # the queue is full: answered at once, body unread
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["detail"].startswith(
                "the server is busy: 1 explanation(s) running and 2 waiting, its limits (--concurrency 1, --queue 2)"
            )
            GATE.set()
            for i, future in enumerate(admitted):
                response = future.result(timeout=60)
                assert response.status_code == 200, response.text
                assert response.json()["prediction"]["index"] == library_prediction(i)
            after = post_digit(base, 5)
            assert after.status_code == 200 and after.json()["prediction"]["index"] == library_prediction(5)
            status = wait_for_status(base, running=0, waiting=0)
            assert status["completed"] == 4 and status["rejected"] == 1 and status["failed"] == 0
            assert status["peak_running"] == 1 and status["peak_admitted"] == 3
    finally:
        GATE.set()


def test_sixteen_requests_four_at_a_time_with_two_slots_all_succeed() -> None:
    app = gated_app(max_concurrent=2, max_queue=8)
    try:
        with live_server(app) as base, ThreadPoolExecutor(4) as pool:
            first = [pool.submit(post_digit, base, i) for i in range(4)]
            wait_for_status(base, running=2, waiting=2)  # two explain, two queue: none refused
            GATE.set()
            rest = [pool.submit(post_digit, base, i) for i in range(4, 16)]
            for i, future in enumerate(first + rest):
                response = future.result(timeout=120)
                assert response.status_code == 200, response.text
                assert response.json()["prediction"]["index"] == library_prediction(i)
            status = wait_for_status(base, running=0, waiting=0)
            assert status["completed"] == 16 and status["rejected"] == 0 and status["failed"] == 0
            assert status["peak_running"] == 2 and status["peak_admitted"] <= 4
    finally:
        GATE.set()


def test_a_real_server_answers_oversize_uploads_413_and_goes_on() -> None:
    """Over a socket, the client still gets the 413 (not a reset connection), also when chunked."""
    app = create_app(WebSettings(max_upload_bytes=2**20))
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        big = client.post("/api/explain", files={"image": ("big.png", b"\0" * (8 * 2**20), "image/png")})
        assert big.status_code == 413
        assert big.json()["detail"].startswith("upload is larger than the server's limit of 1,048,576 bytes (1 MiB)")

        def chunks() -> Any:
            yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n'
            yield b"Content-Type: image/png\r\n\r\n"
            for _ in range(64):
                yield b"\0" * 65536

        streamed = client.post(
            "/api/explain", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert streamed.status_code == 413
        after = client.post("/api/explain", files={"image": ("d.png", digit_png(1), "image/png")})
        assert after.status_code == 200 and after.json()["prediction"]["index"] == library_prediction(1)
