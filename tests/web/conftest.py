"""Shared pieces of the web app tests: images as users send them, a live server on loopback."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
import pytest
from PIL import Image

from relprop.models import digits_test_set

pytest.importorskip("fastapi")


def digit_png(index: int = 0, size: int = 64, paper: bool = True) -> bytes:
    """A real test digit as a user's scan: dark ink on white paper (``paper``), enlarged, PNG."""
    pixels = (digits_test_set().images[index, 0].numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(255 - pixels if paper else pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_label(index: int = 0) -> int:
    return int(digits_test_set().labels[index])


@cache
def library_prediction(index: int) -> int:
    """What the embedded model, called directly, predicts for :func:`digit_png` ``(index)``."""
    import torch

    from relprop.models.loading import load_model

    bundle = load_model("digits")
    with torch.no_grad():
        x = bundle.preprocess(Image.open(io.BytesIO(digit_png(index)))).unsqueeze(0)
        return int(bundle.model(x).argmax())


@contextmanager
def live_server(app: object) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread, with the connection policy of
    ``relprop serve`` (header and keep-alive timeouts, connection limit); yield its base URL."""
    import uvicorn

    from relprop.web.server import server_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, "warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
