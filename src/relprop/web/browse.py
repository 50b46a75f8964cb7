"""Browse a relevance store in the web app (``relprop serve --store STORE [--spray DIR]``).

Pages and JSON routes over a :class:`relprop.dataset.RelevanceStore` and, when given, the folder
``relprop spray`` wrote (``clusters.json``): the SpRAy embedding (a point per sample, coloured by
cluster), a sample (its input, heatmap, label, prediction and score), a cluster's members, and the
concept view of a sample (the channels of a stored layer with the most relevance for it, each
with its reference samples by relevance maximisation over the store, :mod:`relprop.concepts`).

Everything here only reads: the store is opened once when the app starts, sample ids are
checked against its length, layer names against the layers it holds.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .. import viz
from ..errors import RelpropError
from .schemas import ErrorDetail

__all__ = ["StoreBrowser", "router"]

STATIC = Path(__file__).parent / "static"
router = APIRouter()
#: Thumbnails are drawn at least this many pixels wide (nearest neighbour keeps small inputs' pixels).
THUMBNAIL = 96


class BrowseError(RelpropError, LookupError):
    """A sample, cluster or layer the browsed store (or SpRAy result) does not have."""


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _enlarge(image: Any) -> Any:
    factor = max(1, THUMBNAIL // max(image.size))
    from PIL import Image

    return image.resize((image.size[0] * factor, image.size[1] * factor), Image.Resampling.NEAREST)


class StoreBrowser:
    """What the browse routes read: a relevance store and, optionally, a SpRAy result folder.

    Parameters
    ----------
    store
        The store folder (opened read-only; a store still being written is refused).
    spray
        A folder written by ``relprop spray`` (its ``clusters.json``) for the same store.
    models
        The server's models (name → :class:`torch.nn.Module`); the one with the weights the store
        was written with draws conditional heatmaps of concepts (none: the concept view lists
        channels and reference samples only).
    """

    def __init__(self, store: Path, spray: Path | None = None, models: dict[str, Any] | None = None) -> None:
        from ..dataset import RelevanceStore

        self.store = RelevanceStore(store)
        self.store.require_complete()
        self.table = self.store.table()
        self.spray = self._read_spray(spray) if spray is not None else None
        self._cluster_of = dict[int, int]()
        if self.spray is not None:
            samples = self.spray["samples"]
            self._cluster_of = {int(i): int(c) for i, c in zip(samples["index"], samples["cluster"], strict=True)}
        self._references: dict[str, dict[int, list[int]]] = {}
        self._source: Any = None
        self._lock = threading.Lock()
        self.model_name, self._explainer = self._matching_explainer(models or {})

    def _matching_explainer(self, models: dict[str, Any]) -> tuple[str | None, Any]:
        """An explainer with the store's settings, on the server's model that wrote the store (if any)."""
        from ..dataset.settings import weights_sha256
        from ..engine.explainer import Explainer

        settings = self.store.settings
        wanted = self.store.metadata.get("model", {}).get("weights_sha256")
        if settings.get("method") != "lrp" or wanted is None:
            return None, None
        for name, model in models.items():
            if weights_sha256(model) == wanted:
                return name, Explainer(model, settings["composite"], **settings.get("params", {}))
        return None, None

    def _read_spray(self, folder: Path) -> dict[str, Any]:
        path = folder / "clusters.json"
        try:
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BrowseError(f"cannot read {path} ({exc}); give the --out folder of relprop spray.") from None
        top = max(document["samples"]["index"], default=-1)
        if top >= len(self.store):
            raise BrowseError(
                f"{path} names sample {top}, but {self.store.path} has {len(self.store)} samples; give the SpRAy "
                "result of this store."
            )
        return document

    # -- data --------------------------------------------------------------------------------------
    def check_index(self, index: int) -> int:
        if not 0 <= index < len(self.store):
            raise BrowseError(f"no sample {index}; {self.store.path} has samples 0 to {len(self.store) - 1}.")
        return index

    def summary(self) -> dict[str, Any]:
        """The store, and the SpRAy clusters and embedding when a result was given."""
        out: dict[str, Any] = {
            "store": str(self.store.path),
            "samples": len(self.store),
            "counts": self.store.counts(),
            "layers": self.store.layers,
            "classes": self.store.classes,
            "settings": {k: v for k, v in self.store.settings.items() if isinstance(v, str | int | float | type(None))},
            "spray": None,
        }
        if self.spray is not None:
            embedding = self.spray["embedding"]
            points = [
                [int(i), float(x), float(y), self._cluster_of.get(int(i), -1)]
                for i, (x, y) in zip(embedding["index"], embedding["xy"], strict=True)
            ]
            out["spray"] = {
                "params": self.spray["params"],
                "n_clusters": self.spray["n_clusters"],
                "eigenvalues": self.spray["eigenvalues"][:12],
                "embedding": {"method": embedding["method"], "points": points},
                "clusters": [
                    {k: c[k] for k in ("rank", "size", "share", "score", "typical")} for c in self.spray["clusters"]
                ],
            }
        return out

    def sample(self, index: int) -> dict[str, Any]:
        """One sample's record: label, explained class, prediction, score, status, cluster."""
        i = self.check_index(index)
        names = self.store.classes

        def name(k: int) -> str | None:
            return names[k] if names and 0 <= k < len(names) else None

        label, target, prediction = (int(self.table[k][i]) for k in ("label", "target", "prediction"))
        return {
            "index": i,
            "label": label,
            "target": target,
            "target_name": name(target),
            "prediction": prediction,
            "prediction_name": name(prediction),
            "score": float(self.table["score"][i]),
            "status": ["pending", "ok", "failed"][int(self.table["status"][i])],
            "source": str(self.table["source_path"][i]),
            "cluster": self._cluster_of.get(i),
            "heatmap": f"/api/browse/samples/{i}/heatmap.png",
            "input": f"/api/browse/samples/{i}/input.png",
        }

    def cluster(self, rank: int) -> dict[str, Any]:
        if self.spray is None:
            raise BrowseError("this server has no SpRAy result; start it with --spray DIR (relprop spray --out DIR).")
        clusters = self.spray["clusters"]
        if not 0 <= rank < len(clusters):
            raise BrowseError(f"no cluster {rank}; the SpRAy result has clusters 0 to {len(clusters) - 1}.")
        members = [i for i, c in self._cluster_of.items() if c == rank]
        typical = [int(i) for i in clusters[rank]["typical"]]
        ordered = typical + [i for i in sorted(members) if i not in set(typical)]
        return {**{k: clusters[rank][k] for k in ("rank", "size", "share", "score")}, "members": ordered}

    def heatmap_png(self, index: int) -> bytes:
        relevance = self.store.relevance[self.check_index(index)]
        return _png(_enlarge(viz.heatmap(relevance, clip_percentile=99.5)))

    def _input(self, index: int) -> Any:
        i = self.check_index(index)
        if self.store.inputs is not None:
            import torch

            return torch.from_numpy(np.asarray(self.store.inputs[i], dtype=np.float32))
        with self._lock:
            if self._source is None:
                self._source = self.store.source()
        return self._source.load(i).x

    def input_png(self, index: int) -> bytes:
        return _png(_enlarge(viz.to_image(self._input(index))))

    def conditional_png(self, index: int, layer: str, channel: int) -> bytes:
        """The heatmap of sample ``index`` when only ``channel`` of ``layer`` passes its relevance down."""
        import torch

        from ..concepts import conditional_heatmaps

        self._require_layer(layer)
        if self._explainer is None:
            raise BrowseError(
                f"none of this server's models has the weights {self.store.path} was written with "
                f"({self.store.metadata.get('model', {}).get('name', '?')}); start relprop serve with that model to "
                "see conditional heatmaps."
            )
        x = self._input(index).unsqueeze(0)
        target = torch.tensor([int(self.table["target"][index])])
        with self._lock:  # one explainer, one call at a time
            heatmap = conditional_heatmaps(self._explainer, x, target, layer, [channel])[0, 0]
        return _png(_enlarge(viz.heatmap(heatmap, clip_percentile=99.5)))

    def _require_layer(self, layer: str) -> None:
        if layer not in self.store.layers:
            held = ", ".join(self.store.layers) or "none"
            raise BrowseError(
                f"{self.store.path} holds no relevance for layer {layer!r} (it holds: {held}); explain the data set "
                f"again with --layers {layer}."
            )

    def concepts(self, index: int, layer: str, top: int) -> dict[str, Any]:
        """The channels of ``layer`` with the most relevance for sample ``index``, with their reference samples."""
        i = self.check_index(index)
        self._require_layer(layer)
        values = np.asarray(self.store.layer(layer)[i], dtype=np.float64)
        per_channel = values.reshape(len(values), -1).sum(1)
        order = np.argsort(-per_channel, kind="stable")[:top]
        references = self._references_of(layer)
        return {
            "index": i,
            "layer": layer,
            "total": float(per_channel.sum()),
            "model": self.model_name,
            "concepts": [
                {
                    "channel": int(c),
                    "relevance": float(per_channel[c]),
                    "references": references[int(c)],
                    "heatmap": None if self._explainer is None else self._conditional_url(i, layer, int(c)),
                }
                for c in order
            ],
        }

    @staticmethod
    def _conditional_url(index: int, layer: str, channel: int) -> str:
        return f"/api/browse/samples/{index}/concepts/{channel}.png?layer={quote(layer)}"

    def _references_of(self, layer: str, count: int = 6) -> dict[int, list[int]]:
        from ..concepts import reference_samples

        with self._lock:
            if layer not in self._references:
                found = reference_samples(self.store, layer, count=count)
                self._references[layer] = {c: [int(i) for i in v[0]] for c, v in found.items()}
            return self._references[layer]


def browser_of(request: Request) -> StoreBrowser:
    """The app's :class:`StoreBrowser` (the router is only included when the app has one)."""
    browser: StoreBrowser = request.app.state.browser
    return browser


Browser = Annotated[StoreBrowser, Depends(browser_of)]


def _not_found(exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _run(function: Any, *args: Any) -> Any:
    """Read the store off the event loop; a missing sample, cluster or layer is a 404 with its message."""
    try:
        return await anyio.to_thread.run_sync(function, *args)
    except (BrowseError, RelpropError) as exc:
        return _not_found(exc)


@router.get("/browse", include_in_schema=False)
async def browse_page() -> FileResponse:
    return FileResponse(STATIC / "browse.html", media_type="text/html")


@router.get("/api/browse", summary="The browsed store and its SpRAy result", responses={404: {"model": ErrorDetail}})
async def browse_summary(browser: Browser) -> Any:
    return await _run(browser.summary)


@router.get("/api/browse/samples/{index}", summary="One sample of the store", responses={404: {"model": ErrorDetail}})
async def browse_sample(index: int, browser: Browser) -> Any:
    return await _run(browser.sample, index)


@router.get("/api/browse/clusters/{rank}", summary="A SpRAy cluster's members", responses={404: {"model": ErrorDetail}})
async def browse_cluster(rank: int, browser: Browser) -> Any:
    return await _run(browser.cluster, rank)


@router.get(
    "/api/browse/samples/{index}/concepts",
    summary="The channels of a stored layer with the most relevance for a sample, with reference samples",
    responses={404: {"model": ErrorDetail}},
)
async def browse_concepts(
    index: int, browser: Browser, layer: str = Query(...), top: int = Query(6, ge=1, le=64)
) -> Any:
    return await _run(browser.concepts, index, layer, top)


def _png_response(result: Any) -> Response:
    return result if isinstance(result, Response) else Response(result, media_type="image/png")


@router.get(
    "/api/browse/samples/{index}/heatmap.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorDetail}},
    summary="A sample's stored heatmap",
)
async def browse_heatmap(index: int, browser: Browser) -> Response:
    return _png_response(await _run(browser.heatmap_png, index))


@router.get(
    "/api/browse/samples/{index}/input.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorDetail}},
    summary="A sample's model input (stored, or read again from the store's source)",
)
async def browse_input(index: int, browser: Browser) -> Response:
    return _png_response(await _run(browser.input_png, index))


@router.get(
    "/api/browse/samples/{index}/concepts/{channel}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorDetail}},
    summary="A sample's conditional heatmap for one channel of a stored layer (needs the store's model)",
)
async def browse_conditional(index: int, channel: int, browser: Browser, layer: str = Query(...)) -> Response:
    return _png_response(await _run(browser.conditional_png, index, layer, channel))
