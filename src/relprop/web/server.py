"""The server's connection policy: how long a client may keep a connection without using it.

uvicorn (0.30 and later) times out a keep-alive connection between two requests, but not a
connection that never sends a request, nor one that sends its request head byte by byte; and
its ``limit_concurrency`` answers *every* request 503 once that many connections are open.
So fifty idle sockets could shut out even ``GET /``. relprop's policy, for ``relprop serve``
(and the tests' servers):

* **header timeout** — a connection must send a complete request head within
  ``WebSettings.header_timeout`` seconds (default 10) of opening, and of each response; else it
  is closed (:class:`HeaderTimeoutProtocol`). Idle and slow-header clients thus free their place;
* **keep-alive** — an idle connection between requests is closed after
  ``keep_alive_timeout`` seconds (uvicorn's ``timeout_keep_alive``, default 5);
* **connections** — at most ``max_connections`` (default 256) are open before uvicorn answers
  503 to everything; a request head may be at most 16 KiB (h11's limit);
* **body** — the app itself reads a body within ``body_timeout`` / ``body_idle_timeout`` (408)
  and at most ``max_uploads`` bodies at once, before the request takes a place in the
  explanation queue (:mod:`relprop.web.explain`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol", "server_config"]


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that sends no complete request head in time.

    The timer starts when the connection opens and again when a response is complete; it closes
    the connection if by then no request is in progress and no new request head has arrived.
    """

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _cycle_at_start: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._cycle_at_start = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _stop_header_timer(self) -> None:
        timer = self._header_timer
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        waiting_for_head = cycle is None or (cycle is self._cycle_at_start and cycle.response_complete)
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, log_level: str = "info", **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of the app's connection policy (its ``app.state.settings``).

    ``overrides`` are passed to :class:`uvicorn.Config` (e.g. ``lifespan="on"``).
    """
    settings = app.state.settings
    protocol = type(
        "RelpropHeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": settings.header_timeout}
    )
    options: dict[str, Any] = {
        "log_level": log_level,
        "http": protocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": 5,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
