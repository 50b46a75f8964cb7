"""Slow and idle clients on a real server (loopback, bounded sockets and time): they neither take
places in the explanation queue nor shut out others, and the server cuts each off on time.

The limits are set small (a few seconds) so that the test sees every timeout fire; the
defaults are ten times larger (see README, "Limits and guarantees").
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from relprop.web import WebSettings, create_app

from .conftest import digit_png, library_prediction, live_server

SETTINGS = WebSettings(
    max_concurrent=1,
    max_queue=2,
    max_uploads=16,
    body_timeout=3.0,
    body_idle_timeout=1.5,
    header_timeout=2.0,
    keep_alive_timeout=1.0,
    max_connections=128,
    max_upload_bytes=2**20,
)
IDLE, SLOW_HEADERS, TRICKLING, STALLED = 50, 10, 6, 4
BOUNDARY = "slow-client-boundary"


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def upload_head(length: int) -> bytes:
    return (
        f"POST /api/explain HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


def read_answer(sock: socket.socket, seconds: float) -> bytes:
    """The server's response (head and ``Content-Length`` body), or all it sent before closing the
    connection or before ``seconds`` passed."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            head, blank, body = received.partition(b"\r\n\r\n")
            if blank:
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)  # fmt: skip
                if len(body) >= length:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection, without a word, within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@contextmanager
def trickling(sockets: list[socket.socket], piece: bytes, every: float, seconds: float) -> Iterator[None]:
    """Send ``piece`` on every socket each ``every`` seconds, for at most ``seconds``, in a thread."""
    stop = threading.Event()

    def feed() -> None:
        deadline = time.monotonic() + seconds
        while not stop.wait(every) and time.monotonic() < deadline:
            for sock in sockets:
                with contextlib.suppress(OSError):  # the server closed it: what the test waits for
                    sock.sendall(piece)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_slow_and_idle_clients_neither_queue_nor_lock_out_and_are_cut_off_in_time() -> None:
    app = create_app(SETTINGS)
    with live_server(app) as base, ExitStack() as stack:
        opened: list[socket.socket] = []

        def open_socket() -> socket.socket:
            sock = connect(base)
            opened.append(sock)
            stack.callback(sock.close)
            return sock

        idle = [open_socket() for _ in range(IDLE)]  # connect, send nothing
        slow_heads = [open_socket() for _ in range(SLOW_HEADERS)]
        for sock in slow_heads:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")  # ... and then a byte now and then
        trickle = [open_socket() for _ in range(TRICKLING)]
        stalled = [open_socket() for _ in range(STALLED)]
        for sock in trickle + stalled:
            sock.sendall(upload_head(200_000) + b"\0" * 100)
        started = time.monotonic()
        with trickling(slow_heads, b"X", 0.5, 6.0), trickling(trickle, b"\0" * 10, 0.5, 6.0):
            # While all of them are connected, the page, the status and explanations answer normally.
            with httpx.Client(base_url=base, timeout=10) as client:
                status = _wait_for(client, reading=TRICKLING + STALLED)
                assert status["waiting"] == 0 and status["running"] == 0  # slow bodies hold no queue place
                assert client.get("/").status_code == 200
                for index in (2, 7):
                    answer = client.post("/api/explain", files={"image": ("d.png", digit_png(index), "image/png")})
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["prediction"]["index"] == library_prediction(index)
                assert client.post("/api/explain", data={"sample": "digit-3"}).json()["prediction"]["index"] == 3
            assert time.monotonic() - started < SETTINGS.header_timeout  # all of that while every slow client waited

            # Then each slow client is cut off by its own limit.
            for sock in stalled:  # no byte for longer than body_idle_timeout
                answer = read_answer(sock, 5)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert b"paused for more than 1.5 s" in answer
            for sock in trickle:  # bytes keep coming, but the whole body takes longer than body_timeout
                answer = read_answer(sock, 5)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert b"took longer than 3 s" in answer
            for sock in idle + slow_heads:  # no complete request head within header_timeout: closed, no answer
                assert closed_by_server(sock, 5)
        assert time.monotonic() - started < 10
        with httpx.Client(base_url=base, timeout=10) as client:
            status = _wait_for(client, reading=0, running=0, waiting=0)
            assert status["rejected"] == 0 and status["failed"] == 0 and status["completed"] == 3


def _wait_for(client: httpx.Client, **expected: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while True:
        status = client.get("/api/status").json()
        if all(status[k] == v for k, v in expected.items()):
            return status
        assert time.monotonic() < deadline, f"status {status} never reached {expected}"
        time.sleep(0.02)


def test_uploads_beyond_the_limit_are_refused_before_their_body_is_read() -> None:
    app = create_app(WebSettings(max_uploads=2, body_timeout=5, body_idle_timeout=5))
    with live_server(app) as base, ExitStack() as stack:
        slow = [connect(base) for _ in range(2)]
        for sock in slow:
            stack.callback(sock.close)
            sock.sendall(upload_head(100_000))
        with httpx.Client(base_url=base, timeout=10) as client:
            _wait_for(client, reading=2)
            third = connect(base)
            stack.callback(third.close)
            third.sendall(upload_head(100_000))  # its body never comes: only an answer before reading ends this
            answer = read_answer(third, 3)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"the server is busy: 2 uploads are arriving, its limit (--max-uploads 2)" in answer
            assert client.get("/api/status").json()["reading"] == 2


@pytest.mark.parametrize("announced", [2**20 + 1, 10**12])
def test_an_announced_oversize_body_is_refused_before_it_is_read(announced: int) -> None:
    """No byte of the body is sent: a server that started reading it would answer only after its body timeout."""
    app = create_app(WebSettings(max_upload_bytes=2**20, body_timeout=20, body_idle_timeout=20))
    with live_server(app) as base:
        sock = connect(base)
        try:
            started = time.monotonic()
            sock.sendall(upload_head(announced))
            answer = read_answer(sock, 5)
            assert time.monotonic() - started < 5
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
        assert b"upload is larger than the server's limit of 1,048,576 bytes" in answer
        assert httpx.get(f"{base}/api/status").json()["reading"] == 0
