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

import asyncio
import logging
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from .. import composites as _composites
from .. import methods as _methods
from ..errors import RelpropError
from ..models.loading import ModelBundle, load_model
from .forms import FormError, UploadForm, check_content_length, read_multipart, read_urlencoded
from .samples import sample_png, samples
from .schemas import (
    CompositeInfo,
    ErrorDetail,
    ExplainForm,
    ExplainResult,
    MethodInfo,
    ModelInfo,
    ParameterInfo,
    SampleInfo,
    ServerStatus,
)
from .service import PARAMETERS, ExplainService, LoadedModel, RequestError, ServerBusyError, probe_model

__all__ = ["WebSettings", "create_app"]

log = logging.getLogger("relprop.web")
STATIC = Path(__file__).parent / "static"
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
        Largest request body; larger uploads are answered 413.
    max_pixels
        Decompression-bomb guard: images with more pixels are refused (422) before decoding.
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


def _problem(
    status: int, message: str, field: str | None = None, value: Any = None, valid: list[str] | None = None
) -> JSONResponse:
    """A JSON error: 422s in FastAPI's validation shape (with the valid values), others as one message."""
    if status != 422:
        return JSONResponse({"detail": message}, status_code=status)
    error: dict[str, Any] = {"loc": ["body", field or "request"], "msg": message, "type": "value_error"}
    if value is not None:
        error["input"] = value
    if valid is not None:
        error["ctx"] = {"valid": valid}
    return JSONResponse({"detail": [error]}, status_code=422)


def create_app(settings: WebSettings | None = None, *, bundles: Mapping[str, ModelBundle] | None = None) -> FastAPI:
    """Build the web app; models are loaded (and probed once) here, so errors surface at start.

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

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/models", response_model=list[ModelInfo], summary="The models this server offers")
    async def list_models() -> list[ModelInfo]:
        return [
            ModelInfo(
                name=m.name,
                channels=m.bundle.channels,
                input_shape=list(m.input_shape),
                num_classes=m.num_classes,
                classes=m.class_names(),
                notes=list(m.bundle.notes),
                default=m.name == service.default_model,
            )
            for m in models.values()
        ]

    @app.get("/api/composites", response_model=list[CompositeInfo], summary="The named LRP composites")
    async def list_composites() -> list[CompositeInfo]:
        return [
            CompositeInfo(name=n, description=d, params=list(p), tunable=[q for q in p if q in PARAMETERS])
            for n, d, p in _composites.describe()
        ]

    @app.get("/api/parameters", response_model=list[ParameterInfo], summary="Ranges and defaults of the sliders")
    async def list_parameters() -> list[ParameterInfo]:
        return list(PARAMETERS.values())

    @app.get("/api/methods", response_model=list[MethodInfo], summary="The attribution methods")
    async def list_methods() -> list[MethodInfo]:
        return [MethodInfo(name=n, description=d) for n, d in _methods.describe()]

    @app.get("/api/samples", response_model=list[SampleInfo], summary="Bundled real sample images")
    async def list_samples() -> list[SampleInfo]:
        return [
            SampleInfo(id=s.id, title=s.title, kind=s.kind, url=f"/api/samples/{s.id}.png")  # type: ignore[arg-type]
            for s in samples().values()
        ]

    @app.get(
        "/api/samples/{sample_id}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorDetail}},
        summary="A sample image",
    )
    async def get_sample(sample_id: str) -> Response:
        if sample_id not in samples():  # looked up in a fixed table, never a path
            return JSONResponse({"detail": f"no sample {sample_id!r}; GET /api/samples lists them"}, status_code=404)
        png = await anyio.to_thread.run_sync(sample_png, sample_id)
        return Response(png, media_type="image/png")

    @app.get("/api/status", response_model=ServerStatus, summary="Load: running and waiting explanations")
    async def get_status() -> ServerStatus:
        return ServerStatus(**service.status())

    form_schema = ExplainForm.model_json_schema()
    form_schema["properties"]["image"] = {
        "type": "string",
        "format": "binary",
        "description": "The image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM); or give 'sample'.",
    }
    form_schema["properties"].pop("output")

    @app.post(
        "/api/explain",
        response_model=ExplainResult,
        summary="Explain an uploaded or bundled image",
        responses={
            200: {"content": {"image/png": {}, "application/octet-stream": {}}},
            400: {"model": ErrorDetail},
            413: {"model": ErrorDetail},
            415: {"model": ErrorDetail},
            422: {"model": ErrorDetail},
            503: {"model": ErrorDetail},
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "output",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "png", "npy"], "default": "json"},
                    "description": "json: the full result; png: the heatmap; npy: the raw relevance (float32 C×H×W).",
                }
            ],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form_schema}}},
        },
    )
    async def explain(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        kind = content_type.split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return _problem(
                415,
                "send the request as multipart/form-data (the image in the field 'image'), not "
                f"{kind or 'no content type'}",
            )
        try:
            check_content_length(request.headers.get("content-length"), settings.max_upload_bytes)
            service.admit()
        except FormError as exc:
            return _problem(exc.status, exc.message)
        except ServerBusyError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        work: list[Future[Any]] = []
        forms: list[UploadForm] = []

        def clean_up(*_: Any) -> None:
            for form in forms:
                form.close()
            service.release()

        try:
            return await _explain_admitted(request, content_type, work, forms)
        finally:
            if work and not work[0].done():
                # Cancelled while the explanation still runs: its place and upload are freed when it ends.
                work[0].add_done_callback(clean_up)
            else:
                clean_up()

    async def _explain_admitted(
        request: Request, content_type: str, work: list[Future[Any]], forms: list[UploadForm]
    ) -> Any:
        try:
            if content_type.lower().startswith("application/x-www-form-urlencoded"):
                form = await read_urlencoded(request.stream(), max_bytes=settings.max_upload_bytes)
            else:
                form = await read_multipart(
                    content_type,
                    request.stream(),
                    max_bytes=settings.max_upload_bytes,
                    spool_bytes=settings.spool_bytes,
                    temp_dir=private_tmp,
                )
        except FormError as exc:
            return _problem(exc.status, exc.message, exc.field)
        forms.append(form)
        fields = dict(form.fields)
        if "output" in request.query_params:
            fields.setdefault("output", request.query_params["output"])
        try:
            parsed = ExplainForm.model_validate(fields)
        except ValidationError as exc:
            errors = [
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"], "input": e.get("input")}
                for e in exc.errors(include_url=False)
            ]
            return JSONResponse({"detail": errors}, status_code=422)
        upload = form.files.get("image")
        unexpected = [name for name in form.files if name != "image"]
        if unexpected:
            return _problem(422, f"unexpected file field {unexpected[0]!r}; send the image as 'image'", unexpected[0])
        if upload is not None:
            declared = (upload.content_type or "").split(";")[0].strip().lower()
            if declared and not declared.startswith("image/") and declared != "application/octet-stream":
                return _problem(
                    415,
                    f"the 'image' part has content type {declared}; upload an image (PNG, JPEG, GIF, BMP, TIFF, WebP)",
                )
            if upload.size == 0:
                return _problem(422, "the uploaded image is empty", "image")
        try:
            service.validate(parsed, upload is not None)
            work.append(service.submit(parsed, None if upload is None else upload.file))
            outcome = await asyncio.wrap_future(work[0])
        except RequestError as exc:
            return _problem(exc.status, exc.message, exc.field, valid=exc.valid)
        except ServerBusyError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except RelpropError as exc:  # e.g. a layer the engine has no rule for
            return _problem(422, str(exc))
        except Exception as exc:  # the server stays up; the client gets one line
            log.exception("explanation failed")
            return _problem(500, f"internal error while explaining ({type(exc).__name__}); see the server log")
        if parsed.output == "png":
            return Response(
                outcome.heatmap_png,
                media_type="image/png",
                headers={"Content-Disposition": 'attachment; filename="relprop-heatmap.png"'},
            )
        if parsed.output == "npy":
            return Response(
                _npy(outcome.relevance),
                media_type="application/octet-stream",
                headers={"Content-Disposition": 'attachment; filename="relprop-relevance.npy"'},
            )
        return outcome.result

    return app


def _npy(array: Any) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _version() -> str:
    from .. import __version__

    return __version__
