"""What the web app does with a request, apart from HTTP: models, admission, explaining, drawing.

Memory stays bounded under load because work is admitted, not just queued:

* at most ``max_uploads`` request bodies are read at once (each held in memory up to the
  app's ``spool_bytes``, beyond that in its private temp dir, never more than
  ``max_upload_bytes``); a request beyond that is refused at once with 503, before its body
  is read. A body takes no place in the explanation queue while it arrives, so slow uploads
  cannot lock out other requests;
* a request whose body has arrived and passed validation takes a place: at most
  ``max_concurrent`` explanations run at once, on as many worker threads of the service's
  own, each with its own *slot* — a private copy of every model (the engine's hooks and plans
  belong to one model instance and one call, so two threads must not share an instance) with
  a small cache of prepared explainers;
* at most ``max_queue`` further requests wait for a slot; a request beyond that is refused
  with 503, so bodies held for the queue are bounded by
  ``(max_concurrent + max_queue) × max_upload_bytes``.

Decoding an upload happens inside the slot, so at most ``max_concurrent`` images are decoded
at a time; before preprocessing allocates anything, the picture it would make is checked
against ``max_pixels`` (an extreme aspect ratio padded to a square or resized by its shorter
side would otherwise cost gigabytes). An explanation holding NaN or Inf is an error (422),
never a result.
"""

from __future__ import annotations

import base64
import copy
import io
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .. import composites as _composites
from .. import methods as _methods
from .. import viz
from ..api import explain as explain_fn
from ..dense_targets import WholeMap, output_map_image
from ..engine import Explainer, model_device
from ..errors import ConfigurationError, RelpropError, TargetError, first_line
from ..explanation import Explanation
from ..finite import check_finite
from ..images import ImageInput, ImageReadError, read_image_bytes
from ..models.inputs import model_input
from ..models.loading import ModelBundle
from ..outputs import select_output
from ..regions import RegionTarget, class_region, region
from .samples import samples
from .schemas import (
    ClassScore,
    ExplainForm,
    ExplainResult,
    LedgerLayer,
    LedgerSummary,
    OutputMapInfo,
    ParameterInfo,
    RegionResult,
    RelevanceSummary,
    ResultImages,
)
from .tuned import TUNED, TunedEntry

__all__ = [
    "DEFAULT_COMPOSITE",
    "PARAMETERS",
    "ExplainService",
    "LoadedModel",
    "RequestError",
    "ServerBusyError",
    "probe_model",
]

DEFAULT_COMPOSITE = "epsilon-gamma-box"
#: The composite parameters the page has sliders for (low/high are the model's z^B bounds).
PARAMETERS: dict[str, ParameterInfo] = {
    p.name: p
    for p in (
        ParameterInfo(
            name="epsilon",
            label="ε",
            default=0.25,
            min=1e-6,
            max=100.0,
            scale="log",
            description="LRP-ε stabiliser: larger absorbs weak, contradictory relevance (sparser, less noisy).",
        ),
        ParameterInfo(
            name="gamma",
            label="γ",
            default=0.25,
            min=0.0,
            max=10.0,
            scale="linear",
            description="LRP-γ: weight of positive contributions (larger favours evidence for the class).",
        ),
        ParameterInfo(
            name="alpha",
            label="α",
            default=2.0,
            min=1.0,
            max=5.0,
            scale="linear",
            description="LRP-αβ: weight of positive contributions; α = β + 1.",
        ),
        ParameterInfo(
            name="beta",
            label="β",
            default=1.0,
            min=0.0,
            max=4.0,
            scale="linear",
            description="LRP-αβ: weight of negative contributions; α = β + 1.",
        ),
    )
}
#: Heatmaps and overlays of smaller inputs are enlarged (nearest neighbour) to this size.
DISPLAY_SIZE = 256


class ServerBusyError(Exception):
    """No room: ``max_concurrent`` explanations run and ``max_queue`` wait, or ``max_uploads``
    bodies are being read (answer 503)."""


class RequestError(Exception):
    """A request the server understood but cannot use; ``status`` and an optional form ``field``."""

    def __init__(self, status: int, message: str, field: str | None = None, valid: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.valid = valid


@dataclass
class LoadedModel:
    """A model the server offers, with what a probe forward pass told about it."""

    name: str
    bundle: ModelBundle
    input_shape: tuple[int, ...]
    num_classes: int

    def class_names(self) -> list[str]:
        """Class names (classifiers) or channel names of the output map (dense models)."""
        return [self.bundle.class_name(i) for i in range(self.num_classes)]


def _dense_probe(name: str, bundle: ModelBundle, output: Any, shape: tuple[int, ...]) -> LoadedModel:
    """A dense model: its selected output must be a map with channels where ``bundle.output_layout`` says."""
    selected = select_output(output, bundle.output)
    if selected.dim() != 4:
        raise ConfigurationError(
            f"model {name} returned a map of shape {tuple(selected.shape)}; the web app explains dense outputs of "
            "shape (N, C, H, W) or (N, H, W, C)."
        )
    channels = selected.shape[1] if bundle.output_layout == "channels_first" else selected.shape[-1]
    return LoadedModel(name, bundle, shape, int(channels))


def probe_model(name: str, bundle: ModelBundle) -> LoadedModel:
    """Run the model once on a blank picture to learn its input shape and number of classes (or channels)."""
    picture = Image.new("RGB" if bundle.channels == 3 else "L", (256, 256), "black")
    x = bundle.preprocess(picture).unsqueeze(0).to(_device_of(bundle.model))
    try:
        with torch.no_grad():
            output = bundle.model(x)
    except RuntimeError as exc:
        first = first_line(exc)
        raise ConfigurationError(
            f"model {name} failed on a picture preprocessed to shape {tuple(x.shape)} ({first}); it needs another "
            "input size or preprocessing."
        ) from None
    if bundle.dense:
        return _dense_probe(name, bundle, output, tuple(x.shape[1:]))
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ConfigurationError(f"model {name} returned {shape}; the web app explains classifiers (N, classes).")
    return LoadedModel(name, bundle, tuple(x.shape[1:]), int(output.shape[1]))


def _device_of(model: nn.Module) -> torch.device:
    return model_device(model) or torch.device("cpu")


@dataclass
class _Slot:
    """One worker's private model copies and its cache of prepared explainers."""

    models: dict[str, nn.Module]
    explainers: OrderedDict[tuple[Any, ...], Explainer] = field(default_factory=OrderedDict)


@dataclass
class Outcome:
    """The result of one request: the JSON result, the heatmap PNG and the raw relevance."""

    result: ExplainResult
    heatmap_png: bytes
    relevance: np.ndarray


class ExplainService:
    """Explains images with the server's models under a concurrency limit and a bounded queue.

    Parameters
    ----------
    models
        The models by name (the first is the default).
    max_concurrent
        Explanations running at once (each has a private copy of the models).
    max_queue
        Requests that may wait for a running explanation to finish; more get :class:`ServerBusyError`.
    max_pixels
        Decompression-bomb guard for uploads.
    queue_timeout
        Seconds a request waits for a slot before it is answered 503.
    explainer_cache
        Prepared explainers kept per slot (each holds its modified weights).
    max_uploads
        Request bodies read at the same time; more get :class:`ServerBusyError` before reading.
    """

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        max_concurrent: int = 2,
        max_queue: int = 16,
        max_pixels: int = 16_000_000,
        queue_timeout: float = 60.0,
        explainer_cache: int = 4,
        max_uploads: int = 32,
        tuned: TunedEntry | None = None,
    ) -> None:
        if not models:
            raise ConfigurationError("the web app needs at least one model.")
        if max_concurrent < 1 or max_queue < 0 or max_uploads < 1:
            raise ConfigurationError(
                f"concurrency and uploads must be >= 1 and the queue >= 0, got {max_concurrent}, {max_uploads} and "
                f"{max_queue}."
            )
        self.models = dict(models)
        self.default_model = next(iter(self.models))
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_pixels = max_pixels
        self.queue_timeout = queue_timeout
        self.explainer_cache = explainer_cache
        self.max_uploads = max_uploads
        self.tuned = tuned  # relprop serve --composite tuned.json: the "tuned" composite (relprop.web.tuned)
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for k in range(max_concurrent):
            copies = {
                name: m.bundle.model if k == 0 else copy.deepcopy(m.bundle.model) for name, m in self.models.items()
            }
            self._slots.put(_Slot(copies))
        self._workers = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="relprop-explain")
        self._lock = threading.Lock()
        self.admitted = 0
        self.reading = 0
        self.running = 0
        self.completed = 0
        self.rejected = 0
        self.failed = 0
        self.peak_running = 0
        self.peak_admitted = 0

    # -- admission ---------------------------------------------------------------------------------
    def begin_reading(self) -> None:
        """Take one of the ``max_uploads`` places for reading a request body, or raise :class:`ServerBusyError`."""
        with self._lock:
            if self.reading >= self.max_uploads:
                self.rejected += 1
                raise ServerBusyError(
                    f"the server is busy: {self.reading} uploads are arriving, its limit (--max-uploads "
                    f"{self.max_uploads}); retry in a moment"
                )
            self.reading += 1

    def end_reading(self) -> None:
        """Give back the place taken by :meth:`begin_reading`."""
        with self._lock:
            self.reading -= 1

    def admit(self) -> None:
        """Take a place (running or waiting) for one request, or raise :class:`ServerBusyError`."""
        with self._lock:
            if self.admitted >= self.max_concurrent + self.max_queue:
                self.rejected += 1
                raise ServerBusyError(
                    f"the server is busy: {self.running} explanation(s) running and {self.admitted - self.running} "
                    f"waiting, its limits (--concurrency {self.max_concurrent}, --queue {self.max_queue}); retry in a "
                    "moment"
                )
            self.admitted += 1
            self.peak_admitted = max(self.peak_admitted, self.admitted)

    def release(self) -> None:
        """Give back the place taken by :meth:`admit`."""
        with self._lock:
            self.admitted -= 1

    def status(self) -> dict[str, int]:
        """Counts for ``GET /api/status``: bodies arriving, explanations running and waiting, totals."""
        with self._lock:
            return {
                "reading": self.reading,
                "max_uploads": self.max_uploads,
                "running": self.running,
                "waiting": self.admitted - self.running,
                "max_concurrent": self.max_concurrent,
                "max_queue": self.max_queue,
                "completed": self.completed,
                "rejected": self.rejected,
                "failed": self.failed,
                "peak_running": self.peak_running,
                "peak_admitted": self.peak_admitted,
            }

    # -- validation (cheap, before waiting for a slot) ---------------------------------------------
    def validate(self, form: ExplainForm, has_upload: bool) -> None:
        """Check names and parameters against what this server offers; raise :class:`RequestError`."""
        model_name = form.model or self.default_model
        if model_name not in self.models:
            valid = list(self.models)
            raise RequestError(
                422, f"unknown model {model_name!r}; this server offers: {', '.join(valid)}", "model", valid
            )
        if form.method not in _methods.names():
            valid = _methods.names()
            raise RequestError(
                422, f"unknown method {form.method!r}; choose one of: {', '.join(valid)}", "method", valid
            )
        given = {k: v for k, v in self._params(form).items() if v is not None}
        if form.method == "lrp":
            accepted = {name: params for name, _, params in _composites.describe()}
            if self.tuned is not None:
                accepted[TUNED] = ()
            composite = form.composite or DEFAULT_COMPOSITE
            if composite not in accepted:
                valid = list(accepted)
                raise RequestError(
                    422, f"unknown composite {composite!r}; choose one of: {', '.join(valid)}", "composite", valid
                )
            unknown = sorted(set(given) - set(accepted[composite]))
            if unknown:
                takes = [p for p in accepted[composite] if p in PARAMETERS]
                raise RequestError(
                    422,
                    f"composite {composite!r} does not take {', '.join(unknown)}; it takes: "
                    f"{', '.join(takes) or 'none'}",
                    unknown[0],
                    takes,
                )
        else:
            if form.composite is not None or given:
                field_name = "composite" if form.composite is not None else sorted(given)[0]
                raise RequestError(
                    422, f"{field_name} applies to method 'lrp' only, not to {form.method!r}; drop it", field_name
                )
            if form.score != "logit":
                raise RequestError(
                    422, f"score 'log-odds' applies to method 'lrp' only, not to {form.method!r}", "score"
                )
        if form.alpha is not None and form.beta is not None and abs(form.alpha - form.beta - 1.0) > 1e-9:
            raise RequestError(
                422,
                f"alpha and beta must satisfy alpha = beta + 1 (the αβ rule conserves relevance only then), got "
                f"alpha={form.alpha:g}, beta={form.beta:g}; give one of them and the other follows",
                "alpha",
            )
        self._validate_target(form, self.models[model_name])
        if has_upload == (form.sample is not None):
            raise RequestError(
                422,
                "send either an image file in the 'image' field or a sample id in 'sample' (GET /api/samples), not "
                + ("both" if has_upload else "neither"),
                "image" if not has_upload else "sample",
            )
        if form.sample is not None and form.sample not in samples():
            valid = list(samples())
            raise RequestError(
                422, f"unknown sample {form.sample!r}; choose one of: {', '.join(valid)}", "sample", valid
            )

    @staticmethod
    def _validate_target(form: ExplainForm, loaded: LoadedModel) -> None:
        """Class targets for classifiers; a region (box, channel, class:K) for dense models."""
        name, count = loaded.name, loaded.num_classes
        if not loaded.bundle.dense:
            for field_name in ("region", "channel"):
                if getattr(form, field_name) is not None:
                    raise RequestError(
                        422,
                        f"{field_name} applies to models with a dense output map; model {name} returns class scores",
                        field_name,
                    )
            if form.target.startswith("class:"):
                raise RequestError(
                    422,
                    f"target {form.target} applies to segmentation models; for model {name} give a class index",
                    "target",
                )
            if form.target != "predicted" and int(form.target) >= count:
                raise RequestError(
                    422,
                    f"target {form.target} is out of range for model {name} with {count} classes; "
                    f"choose 'predicted' or 0..{count - 1}",
                    "target",
                )
            return
        if form.target != "predicted" and not form.target.startswith("class:"):
            raise RequestError(
                422,
                f"model {name} returns a dense output map; explain a region of it (region=x0,y0,x1,y1 and channel=K) "
                "or the pixels predicted as a class (target=class:K), not target "
                f"{form.target}",
                "target",
            )
        if form.target.startswith("class:"):
            index = int(form.target.partition(":")[2])
            if loaded.bundle.output_layout != "channels_first":
                raise RequestError(
                    422, f"target {form.target} applies to segmentation models; model {name} has score maps", "target"
                )
            if index >= count:
                raise RequestError(
                    422,
                    f"target {form.target} is out of range for model {name} with {count} classes; choose class:0.."
                    f"class:{count - 1}",
                    "target",
                )
            if form.channel is not None:
                raise RequestError(
                    422, f"channel applies to regions; target {form.target} explains channel {index} itself", "channel"
                )
        if form.channel is not None and form.channel >= count:
            raise RequestError(
                422,
                f"channel {form.channel} is out of range for model {name} with {count} output channels; choose "
                f"0..{count - 1}",
                "channel",
            )
        if form.region is not None:
            x0, y0, x1, y1 = (int(v) for v in form.region.split(","))
            if not (x0 < x1 and y0 < y1):
                raise RequestError(
                    422, f"region {form.region} is empty; give x0 < x1 and y0 < y1 (x1, y1 exclusive)", "region"
                )
        if form.score != "logit":
            raise RequestError(
                422, "score 'log-odds' applies to class scores, not to a region of a dense output", "score"
            )

    @staticmethod
    def _params(form: ExplainForm) -> dict[str, float | None]:
        """The composite parameters given; one of α and β implies the other (α = β + 1)."""
        alpha, beta = form.alpha, form.beta
        if alpha is not None and beta is None:
            beta = alpha - 1.0
        elif beta is not None and alpha is None:
            alpha = beta + 1.0
        return {"epsilon": form.epsilon, "gamma": form.gamma, "alpha": alpha, "beta": beta}

    # -- the work (runs in a worker thread) --------------------------------------------------------
    def submit(self, form: ExplainForm, upload: IO[bytes] | None) -> Future[Outcome]:
        """Queue :meth:`explain` on the service's own worker threads (one per slot).

        A fixed set of threads runs all explanations, so that the memory their allocators keep
        is bounded by ``max_concurrent``, not by how many threads a server's pool ever used.
        """
        return self._workers.submit(self.explain, form, upload, time.monotonic())

    def explain(self, form: ExplainForm, upload: IO[bytes] | None, queued_at: float | None = None) -> Outcome:
        """Wait for a slot, then decode, explain and draw; ``form`` must have passed :meth:`validate`."""
        if queued_at is not None and time.monotonic() - queued_at > self.queue_timeout:
            with self._lock:
                self.failed += 1
            raise ServerBusyError(f"the request waited more than {self.queue_timeout:g} s for its turn; retry later")
        try:
            slot = self._slots.get(timeout=self.queue_timeout)
        except queue.Empty:
            raise ServerBusyError(
                f"no explanation slot became free within {self.queue_timeout:g} s; retry later"
            ) from None
        with self._lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        ok = False
        try:
            outcome = self._explain_in_slot(slot, form, upload)
            ok = True
            return outcome
        finally:
            with self._lock:
                self.running -= 1
                if ok:
                    self.completed += 1
                else:
                    self.failed += 1
            self._slots.put(slot)

    def close(self) -> None:
        """Stop the worker threads once their current work is done."""
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _explain_in_slot(self, slot: _Slot, form: ExplainForm, upload: IO[bytes] | None) -> Outcome:
        started = time.perf_counter()
        name = form.model or self.default_model
        loaded = self.models[name]
        bundle = loaded.bundle
        model = slot.models[name]
        if upload is not None:
            try:
                item = read_image_bytes(upload, "upload", max_pixels=self.max_pixels)
            except ImageReadError as exc:
                raise RequestError(422, str(exc), "image") from None
        else:
            assert form.sample is not None
            sample = samples()[form.sample]
            item = ImageInput(Path(sample.id), sample.load())  # a label for notes; never opened
        try:
            # A model that keeps the picture's shape (CRAFT) is judged on the input this picture gets.
            shape = None if getattr(bundle.preprocess, "keeps_aspect", False) else loaded.input_shape
            prepared = model_input(bundle, item.image, "upload", self.max_pixels, shape)
        except ImageReadError as exc:
            raise RequestError(422, str(exc), "image") from None
        notes = list(item.notes) + prepared.notes
        x = prepared.tensor.unsqueeze(0).to(_device_of(model))
        target = _target(form, bundle)
        params = {k: v for k, v in self._params(form).items() if v is not None}
        composite = None
        try:
            if form.method == "lrp":
                composite = form.composite or DEFAULT_COMPOSITE
                if composite == TUNED and self.tuned is not None:
                    result = self._explain_tuned(self.tuned, name, model, x, target, form.score)
                else:
                    explainer = self._explainer(slot, name, model, loaded, composite, params)
                    result = explainer(x, target, top=form.score)
            else:
                output = bundle.output
                result = explain_fn(model, x, target, method=form.method, nonfinite="report", output=output)
        except TargetError as exc:
            # A box outside this picture's output map, or no pixel of the class: the request's region is at fault.
            field_name = "region" if form.region is not None else "target"
            raise RequestError(422, str(exc), field_name) from None
        except RelpropError:
            raise
        except RuntimeError as exc:
            first = first_line(exc)
            raise RequestError(422, f"model {name} failed on an input of shape {tuple(x.shape)} ({first})") from None
        check_finite(result, 0, "upload" if upload is not None else f"sample {form.sample}")
        relevance = result.relevance[0].detach().to("cpu", torch.float32)
        picture = bundle.display(x[0].detach().cpu())
        heat, overlay = _draw(picture, relevance, form.clip_percentile)
        summary = self._summarise(loaded, form, composite, params, result, relevance, notes)
        summary["caveats"] = prepared.caveats
        heat_png = _png(heat)
        output_map = None
        if bundle.dense:
            layout = bundle.output_layout or "channels_first"
            output_map = _data_url(_png(output_map_image(result.output[0], layout)))
        summary["images"] = ResultImages(
            input=_data_url(_png(_enlarge(picture))),
            heatmap=_data_url(heat_png),
            overlay=_data_url(_png(overlay)),
            output_map=output_map,
        )
        summary["seconds"] = round(time.perf_counter() - started, 4)
        return Outcome(ExplainResult(**summary), heat_png, relevance.numpy())

    @staticmethod
    def _explain_tuned(
        tuned: TunedEntry, name: str, model: nn.Module, x: torch.Tensor, target: Any, score: str
    ) -> Explanation:
        refusal = tuned.refusal(name)
        if refusal is not None:
            raise RequestError(422, refusal, "composite")
        if score != "logit" and tuned.tuned.candidate.reference is not None:
            raise RequestError(
                422,
                f"score 'log-odds' does not apply to the tuned {tuned.tuned.spec}, which explains f(x) - f(x̄)",
                "score",
            )
        return tuned.explain(model, x, target, score)

    def _explainer(
        self,
        slot: _Slot,
        name: str,
        model: nn.Module,
        loaded: LoadedModel,
        composite: str,
        params: dict[str, float],
    ) -> Explainer:
        key = (name, composite, tuple(sorted(params.items())))
        explainer = slot.explainers.get(key)
        if explainer is not None:
            slot.explainers.move_to_end(key)
            return explainer
        accepted = {n: p for n, _, p in _composites.describe()}[composite]
        arguments: dict[str, Any] = dict(params)
        if "low" in accepted:
            arguments.update(low=loaded.bundle.low.view(-1), high=loaded.bundle.high.view(-1))
        # check_finite names the upload; a dense model's selected output is explained
        explainer = Explainer(model, composite, nonfinite="report", output=loaded.bundle.output, **arguments)
        slot.explainers[key] = explainer
        while len(slot.explainers) > self.explainer_cache:
            slot.explainers.popitem(last=False)
        return explainer

    @staticmethod
    def _classes(loaded: LoadedModel, result: Explanation) -> dict[str, Any]:
        """Classifiers: the prediction, the explained class and the top classes; dense models: the region."""
        bundle = loaded.bundle
        if isinstance(result.target, RegionTarget):
            described = result.target
            output = result.output[0]
            layout = bundle.output_layout or "channels_first"
            height, width = output.shape[1:] if layout == "channels_first" else output.shape[:2]
            return {
                "prediction": None,
                "target": None,
                "top": [],
                "region": RegionResult(
                    description=described.describe(0),
                    kind=described.kind,
                    channels=list(described.channels),
                    area=float(described.area[0]),
                    score=float(result.ledger.score[0]),
                    box=None if described.box is None else list(described.box),
                    class_index=described.class_index,
                ),
                "output_map": OutputMapInfo(
                    width=int(width), height=int(height), layout=layout, channels=loaded.class_names()
                ),
            }
        probabilities = torch.softmax(result.output[0].detach().double(), 0).cpu()
        top = torch.argsort(probabilities, descending=True)[: min(5, probabilities.numel())]

        def scored(index: int) -> ClassScore:
            return ClassScore(index=index, name=bundle.class_name(index), probability=float(probabilities[index]))

        return {
            "prediction": scored(int(top[0])),
            "target": scored(int(result.target[0])),
            "top": [scored(int(i)) for i in top],
        }

    def _summarise(
        self,
        loaded: LoadedModel,
        form: ExplainForm,
        composite: str | None,
        params: dict[str, float],
        result: Explanation,
        relevance: torch.Tensor,
        notes: list[str],
    ) -> dict[str, Any]:
        classes = self._classes(loaded, result)
        ledger = result.ledger
        layers = []
        for entry in ledger.entries:
            if entry.relevance_out is None or entry.absorbed is None:
                continue
            layers.append(
                LedgerLayer(
                    index=entry.index,
                    path=entry.path,
                    function=entry.function,
                    rule=entry.rule,
                    relevance_in=float(entry.relevance_out[0]),
                    absorbed=float(entry.absorbed[0]),
                    bias=None if entry.bias is None else float(entry.bias[0]),
                )
            )
        r = relevance.double()
        magnitude = np.abs(viz.relevance_map(r))
        # The colour scale of viz.heatmap: the largest |R| (or its percentile) is drawn in full colour.
        scale = (
            float(np.percentile(magnitude, form.clip_percentile)) if form.clip_percentile else float(magnitude.max())
        )
        return {
            "model": loaded.name,
            "method": form.method,
            "composite": composite,
            "params": params,
            "score_type": "region" if loaded.bundle.dense else form.score if form.method == "lrp" else "logit",
            **classes,
            "ledger": LedgerSummary(
                score=float(ledger.score[0]),
                input_relevance=float(ledger.input_relevance[0]),
                absorbed=float(ledger.absorbed[0]),
                bias_absorbed=float(ledger.bias_absorbed[0]),
                top_absorbed=None if ledger.top_absorbed is None else float(ledger.top_absorbed[0]),
                residual=float(ledger.residual[0]),
                closes=ledger.closes(),
                layers=layers,
            ),
            "relevance": RelevanceSummary(
                shape=list(relevance.shape),
                sum=float(r.sum()),
                positive=float(r.clamp(min=0).sum()),
                negative=float(r.clamp(max=0).sum()),
                min=float(r.min()),
                max=float(r.max()),
                scale=scale if scale > 0 else 1.0,
            ),
            "notes": notes,
        }


def _target(form: ExplainForm, bundle: ModelBundle) -> Any:
    """What to explain: a class index (classifiers), or a region of a dense model's output map."""
    if not bundle.dense:
        return None if form.target == "predicted" else int(form.target)
    layout = bundle.output_layout or "channels_first"
    box = (
        None if form.region is None else region(box=tuple(int(v) for v in form.region.split(",")), output_layout=layout)
    )
    if form.target.startswith("class:"):
        return class_region(int(form.target.partition(":")[2]), within=box, output_layout=layout)
    if box is None:  # the whole output map
        return WholeMap(channel=form.channel, output_layout=layout)
    return region(box=box.area, channel=form.channel, output_layout=layout)


def _enlarge(image: Image.Image) -> Image.Image:
    w, h = image.size
    if max(w, h) >= DISPLAY_SIZE:
        return image
    factor = DISPLAY_SIZE / max(w, h)
    return image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.NEAREST)


def _draw(
    picture: Image.Image, relevance: torch.Tensor, clip_percentile: float | None
) -> tuple[Image.Image, Image.Image]:
    heat = _enlarge(viz.heatmap(relevance, clip_percentile))
    overlay = viz.overlay(_enlarge(picture), relevance, clip_percentile=clip_percentile)
    return heat, overlay


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
