"""``POST /api/explain``: read and check the request, then take a place in the service, answer the result.

The steps, each answering its own error status: the content type (415); the announced body
size (413, before reading); a place among the bodies being read (503); the body, read with
limits of size and time (:mod:`relprop.web.forms`: 400/408/413); the form values (422) and the
file part (415/422); the names and parameters against what the server offers (422); only then
a place in the service's bounded queue (503), so a slow client never holds one; the
explanation itself (422 for what relprop refuses, a picture too large to preprocess or a
non-finite result; 500 for a bug; 503 when no slot frees in time).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..errors import RelpropError
from .forms import (
    FormError,
    UploadedFile,
    UploadForm,
    check_content_length,
    read_multipart,
    read_urlencoded,
    within_time,
)
from .schemas import ErrorDetail, ExplainForm, ExplainResult
from .service import ExplainService, Outcome, RequestError, ServerBusyError

__all__ = ["router"]

log = logging.getLogger("relprop.web")
router = APIRouter()
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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


def _busy(exc: ServerBusyError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


def _openapi_form() -> dict[str, Any]:
    """The request body's schema: the form fields, the image as a binary part (``output`` is a query)."""
    schema = ExplainForm.model_json_schema()
    schema["properties"]["image"] = {
        "type": "string",
        "format": "binary",
        "description": "The image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM); or give 'sample'.",
    }
    schema["properties"].pop("output")
    return schema


@router.post(
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
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _openapi_form()}}},
    },
)
async def explain(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in FORM_TYPES:
        sent = kind or "no content type"
        return _problem(415, f"send the request as multipart/form-data (the image in the field 'image'), not {sent}")
    service: ExplainService = request.app.state.service
    try:
        check_content_length(request.headers.get("content-length"), request.app.state.settings.max_upload_bytes)
        service.begin_reading()
    except FormError as exc:
        return _problem(exc.status, exc.message)
    except ServerBusyError as exc:
        return _busy(exc)
    try:
        form = await _read_form(request, kind)
    except FormError as exc:
        return _problem(exc.status, exc.message, exc.field)
    finally:
        service.end_reading()
    work: list[Future[Any]] = []

    def release(_: Future[Any]) -> None:
        service.release()
        form.close()

    try:
        return await _explain_read(request, service, form, work)
    finally:
        if work:
            # Whether answered or cancelled (the client left), the explanation may still run in a worker
            # thread: its queue place and its upload are freed when it ends, so the limits keep counting it.
            work[0].add_done_callback(release)
        else:
            form.close()


async def _explain_read(request: Request, service: ExplainService, form: UploadForm, work: list[Future[Any]]) -> Any:
    """Check the read form, take a place in the queue and explain; the submitted work goes into ``work``."""
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
    refused = _check_files(form, upload)
    if refused is not None:
        return refused
    try:
        service.validate(parsed, upload is not None)
        service.admit()
    except RequestError as exc:
        return _problem(exc.status, exc.message, exc.field, valid=exc.valid)
    except ServerBusyError as exc:
        return _busy(exc)
    try:
        work.append(service.submit(parsed, None if upload is None else upload.file))
    except BaseException:
        service.release()
        raise
    try:
        outcome = await asyncio.wrap_future(work[0])
    except RequestError as exc:
        return _problem(exc.status, exc.message, exc.field, valid=exc.valid)
    except ServerBusyError as exc:
        return _busy(exc)
    except RelpropError as exc:  # e.g. a layer the engine has no rule for, a non-finite result
        return _problem(422, str(exc))
    except Exception as exc:  # the server stays up; the client gets one line
        log.exception("explanation failed")
        return _problem(500, f"internal error while explaining ({type(exc).__name__}); see the server log")
    return _answer(parsed, outcome)


async def _read_form(request: Request, kind: str) -> UploadForm:
    """Read the whole body within the app's limits of size (413) and time (408)."""
    settings = request.app.state.settings
    body = within_time(request.stream(), settings.body_timeout, settings.body_idle_timeout)
    if kind == "application/x-www-form-urlencoded":
        return await read_urlencoded(body, max_bytes=settings.max_upload_bytes)
    return await read_multipart(
        request.headers.get("content-type", ""),
        body,
        max_bytes=settings.max_upload_bytes,
        spool_bytes=settings.spool_bytes,
        temp_dir=request.app.state.temp_dir,
    )


def _check_files(form: UploadForm, upload: UploadedFile | None) -> JSONResponse | None:
    """Refuse file parts other than ``image``, a part that is not an image, or an empty one."""
    unexpected = [name for name in form.files if name != "image"]
    if unexpected:
        return _problem(422, f"unexpected file field {unexpected[0]!r}; send the image as 'image'", unexpected[0])
    if upload is None:
        return None
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared and not declared.startswith("image/") and declared != "application/octet-stream":
        return _problem(
            415, f"the 'image' part has content type {declared}; upload an image (PNG, JPEG, GIF, BMP, TIFF, WebP)"
        )
    if upload.size == 0:
        return _problem(422, "the uploaded image is empty", "image")
    return None


def _answer(form: ExplainForm, outcome: Outcome) -> Any:
    """The result as JSON, the heatmap PNG or the raw relevance (``output``)."""
    if form.output == "png":
        return Response(
            outcome.heatmap_png,
            media_type="image/png",
            headers={"Content-Disposition": 'attachment; filename="relprop-heatmap.png"'},
        )
    if form.output == "npy":
        return Response(
            _npy(outcome.relevance),
            media_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="relprop-relevance.npy"'},
        )
    return outcome.result


def _npy(array: Any) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
