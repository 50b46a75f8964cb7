"""The web app: a JSON API and a page to upload an image, pick a rule and see its explanation.

``create_app(settings)`` builds a FastAPI application:

* ``GET /`` — the page (HTML, JS and CSS under ``/static``, all served locally: it works
  without internet);
* ``POST /api/explain`` — ``multipart/form-data`` with an ``image`` file or a ``sample`` id
  (a sample alone may also come url-encoded) and the settings
  (:class:`~relprop.web.schemas.ExplainForm`); answers JSON, the heatmap PNG or the raw
  relevance (``.npy``);
* ``GET /api/models``, ``/api/composites``, ``/api/methods``, ``/api/samples``,
  ``/api/samples/{id}.png``, ``/api/status``; the OpenAPI schema at ``/api/openapi.json``.

Errors are JSON ``{"detail": ...}``: 400 malformed body, 413 upload over the limit, 415 not a
form or a file part that is not an image, 422 a value the server cannot
use (unknown names list the valid ones; an image that cannot be decoded or is too large in
pixels), 503 busy. Models are chosen among those the server was started with; no request
value is ever used as a file path.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from ..errors import RelpropError
from ..models.loading import ModelBundle, load_model
from . import catalogue, explain
from .catalogue import STATIC
from .service import ExplainService, LoadedModel, probe_model
from .tuned import load_tuned

__all__ = ["WebSettings", "create_app"]

# The page may load only what this server serves; images come back as data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class WebSettings:
    """How the app is configured (``relprop serve`` sets these from its options).

    Attributes
    ----------
    models
        Model specs to offer (see :func:`relprop.models.loading.load_model`); the first is the default.
    weights
        Weights per model spec, in the same order (``None`` for none); empty for no weights at all.
    device
        ``cpu`` or ``cuda``.
    max_upload_bytes
        Largest request body; larger uploads are answered 413 (an announced ``Content-Length``
        before anything is read).
    max_pixels
        Decompression-bomb guard: images with more pixels are refused (422) before decoding, and
        so are images whose preprocessing would make a larger picture (an extreme aspect ratio
        padded to a square) before it allocates.
    max_uploads
        Request bodies read at the same time; more are answered 503 before their body is read.
        Bodies take no place in the explanation queue while they arrive.
    body_timeout, body_idle_timeout
        Seconds the whole body may take to arrive, and the longest pause between two of its
        pieces; slower bodies are answered 408.
    header_timeout
        Seconds a connection may take to send a complete request head after it opens (or after
        the previous response); idle and too slow connections are closed. Enforced by the server
        :func:`relprop.web.server.server_config` builds (``relprop serve``).
    keep_alive_timeout
        Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``).
    max_connections
        Open connections the server accepts before it answers every request 503 (uvicorn's
        ``limit_concurrency``); idle ones are closed after ``header_timeout``, so they free
        their place.
    max_concurrent
        Explanations computed at the same time.
    max_queue
        Requests that may wait for one; further requests are answered 503 at once.
    queue_timeout
        Seconds a request may wait for its turn before it is answered 503.
    temp_dir
        Where the app creates its private temp dir (default: the system's); uploads larger than
        ``spool_bytes`` are held there, in anonymous files, until the request is answered.
    spool_bytes
        Uploads up to this size stay in memory.
    explainer_cache
        Prepared explainers kept per concurrent slot.
    store, spray
        A relevance store to browse at ``/browse`` (:mod:`relprop.web.browse`), and the folder
        ``relprop spray`` wrote for it (its clusters and embedding).
    tuned
        A ``relprop tune`` file: offered as the composite ``tuned`` for the models it was tuned on
        (refused at start if it fits none).
    """

    models: tuple[str, ...] = ("digits",)
    weights: tuple[str | None, ...] = ()
    device: str = "cpu"
    max_upload_bytes: int = 8 * 2**20
    max_pixels: int = 16_000_000
    max_concurrent: int = 2
    max_queue: int = 16
    queue_timeout: float = 60.0
    temp_dir: Path | None = None
    spool_bytes: int = 2**20
    explainer_cache: int = 4
    max_uploads: int = 32
    body_timeout: float = 30.0
    body_idle_timeout: float = 10.0
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 256
    store: Path | None = None
    spray: Path | None = None
    tuned: str | None = None


def _load_models(settings: WebSettings, bundles: Mapping[str, ModelBundle] | None) -> dict[str, LoadedModel]:
    loaded: dict[str, LoadedModel] = {}
    if bundles:
        for name, bundle in bundles.items():
            loaded[name] = probe_model(name, bundle)
        return loaded
    weights = settings.weights or (None,) * len(settings.models)
    if len(weights) != len(settings.models):
        raise RelpropError(
            f"got {len(weights)} weights for {len(settings.models)} models; give one --weights per --model "
            "(use 'none' for a model without) or none at all."
        )
    for spec, weight in zip(settings.models, weights, strict=True):
        if spec in loaded:
            continue
        loaded[spec] = probe_model(spec, load_model(spec, weight, settings.device))
    return loaded


def create_app(settings: WebSettings | None = None, *, bundles: Mapping[str, ModelBundle] | None = None) -> FastAPI:
    """Build the web app; models are loaded (and probed once) here, so errors surface at start.

    The routes live in :mod:`relprop.web.catalogue` (the page and the listings) and
    :mod:`relprop.web.explain` (``POST /api/explain``); they find the service, the settings and
    the private temp dir in ``app.state``.

    Parameters
    ----------
    settings
        Limits and models (default :class:`WebSettings`: the embedded digits model).
    bundles
        Already-loaded models by name, instead of ``settings.models`` (e.g. your own model in
        a notebook: ``create_app(bundles={"mine": ModelBundle(...)})``).
    """
    settings = settings or WebSettings()
    models = _load_models(settings, bundles)
    service = ExplainService(
        models,
        max_concurrent=settings.max_concurrent,
        max_queue=settings.max_queue,
        max_pixels=settings.max_pixels,
        queue_timeout=settings.queue_timeout,
        explainer_cache=settings.explainer_cache,
        max_uploads=settings.max_uploads,
        tuned=None if settings.tuned is None else load_tuned(settings.tuned, models),
    )
    private_tmp = Path(tempfile.mkdtemp(prefix="relprop-web-", dir=settings.temp_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()
            shutil.rmtree(private_tmp, ignore_errors=True)

    app = FastAPI(
        title="relprop web app",
        summary="Explain image classifiers with Layer-wise Relevance Propagation.",
        version=_version(),
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN; the schema is served instead.
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.temp_dir = private_tmp
    # Removed at shutdown (lifespan); this also removes it when the app is dropped without one.
    weakref.finalize(app, shutil.rmtree, private_tmp, ignore_errors=True)
    weakref.finalize(app, service.close)
    app.middleware("http")(_security_headers)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(catalogue.router)
    app.include_router(explain.router)
    if settings.store is not None:
        _add_browser(app, settings.store, settings.spray, {n: m.bundle.model for n, m in service.models.items()})
    elif settings.spray is not None:
        raise RelpropError("a SpRAy result (--spray) is browsed with its relevance store; give --store STORE too.")
    return app


def _add_browser(app: FastAPI, store: Path, spray: Path | None, models: dict[str, Any]) -> None:
    """Open the store (and SpRAy result) now, so that a missing or unfinished one stops the start."""
    from .browse import StoreBrowser
    from .browse import router as browse_router

    try:
        app.state.browser = StoreBrowser(store, spray, models)
    except ImportError as exc:
        raise RelpropError(f"browsing a store needs zarr ({exc}); pip install 'relprop[dataset]'") from None
    app.include_router(browse_router)


async def _security_headers(request: Request, call_next: Any) -> Response:
    """The page may load only what this server serves; nothing is cached or sniffed."""
    response: Response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _version() -> str:
    from .. import __version__

    return __version__
