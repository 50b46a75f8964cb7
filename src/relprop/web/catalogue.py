"""The read-only part of the web API: the page, and what the server offers (models, composites,
parameters, methods, samples) and how loaded it is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .. import composites as _composites
from .. import methods as _methods
from .samples import sample_png, samples
from .schemas import CompositeInfo, ErrorDetail, MethodInfo, ModelInfo, ParameterInfo, SampleInfo, ServerStatus
from .service import PARAMETERS, ExplainService
from .tuned import TUNED

__all__ = ["STATIC", "router", "service_of"]

STATIC = Path(__file__).parent / "static"
router = APIRouter()


def service_of(request: Request) -> ExplainService:
    """The app's :class:`~relprop.web.service.ExplainService` (set by :func:`relprop.web.create_app`)."""
    service: ExplainService = request.app.state.service
    return service


Service = Annotated[ExplainService, Depends(service_of)]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/api/models", response_model=list[ModelInfo], summary="The models this server offers")
async def list_models(service: Service) -> list[ModelInfo]:
    return [
        ModelInfo(
            name=m.name,
            channels=m.bundle.channels,
            input_shape=list(m.input_shape),
            num_classes=m.num_classes,
            classes=m.class_names(),
            notes=list(m.bundle.notes),
            default=m.name == service.default_model,
            dense=m.bundle.dense,
            output_layout=m.bundle.output_layout,
        )
        for m in service.models.values()
    ]


@router.get("/api/composites", response_model=list[CompositeInfo], summary="The named LRP composites")
async def list_composites(service: Service) -> list[CompositeInfo]:
    named = [
        CompositeInfo(name=n, description=d, params=list(p), tunable=[q for q in p if q in PARAMETERS])
        for n, d, p in _composites.describe()
    ]
    if service.tuned is None:
        return named
    return [*named, CompositeInfo(name=TUNED, description=service.tuned.description, params=[], tunable=[])]


@router.get("/api/parameters", response_model=list[ParameterInfo], summary="Ranges and defaults of the sliders")
async def list_parameters() -> list[ParameterInfo]:
    return list(PARAMETERS.values())


@router.get("/api/methods", response_model=list[MethodInfo], summary="The attribution methods")
async def list_methods() -> list[MethodInfo]:
    return [MethodInfo(name=n, description=d) for n, d in _methods.describe()]


@router.get("/api/samples", response_model=list[SampleInfo], summary="Bundled real sample images")
async def list_samples() -> list[SampleInfo]:
    return [
        SampleInfo(id=s.id, title=s.title, kind=s.kind, url=f"/api/samples/{s.id}.png")  # type: ignore[arg-type]
        for s in samples().values()
    ]


@router.get(
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


@router.get("/api/status", response_model=ServerStatus, summary="Load: running and waiting explanations")
async def get_status(service: Service) -> ServerStatus:
    return ServerStatus(**service.status())
