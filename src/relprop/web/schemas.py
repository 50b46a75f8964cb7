"""The web API's request and response shapes (pydantic models; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ClassScore",
    "CompositeInfo",
    "ErrorDetail",
    "ExplainForm",
    "ExplainResult",
    "LedgerLayer",
    "LedgerSummary",
    "MethodInfo",
    "ModelInfo",
    "ParameterInfo",
    "RelevanceSummary",
    "ResultImages",
    "SampleInfo",
    "ServerStatus",
]


class ExplainForm(BaseModel):
    """The text fields of ``POST /api/explain`` (the image comes as the file part ``image``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="A model the server was started with (default: the first).")
    sample: str | None = Field(None, description="A bundled sample image (GET /api/samples) instead of an upload.")
    method: str = Field("lrp", description="Attribution method (GET /api/methods).")
    composite: str | None = Field(None, description="LRP composite (GET /api/composites); default epsilon-gamma-box.")
    epsilon: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="LRP-ε stabiliser.")
    gamma: float | None = Field(None, ge=0, le=1e3, allow_inf_nan=False, description="LRP-γ parameter.")
    alpha: float | None = Field(None, ge=1, le=101, allow_inf_nan=False, description="LRP-αβ alpha (= beta + 1).")
    beta: float | None = Field(None, ge=0, le=100, allow_inf_nan=False, description="LRP-αβ beta.")
    target: str = Field("predicted", pattern=r"^(predicted|\d{1,6})$", description="'predicted' or a class index.")
    score: Literal["logit", "log-odds"] = Field("logit", description="Explain the logit or the log-odds of the class.")
    clip_percentile: float | None = Field(
        None, ge=50, le=100, allow_inf_nan=False, description="Colour scale at this percentile of |R| (default: max)."
    )
    output: Literal["json", "png", "npy"] = Field(
        "json", description="json: the full result; png: the heatmap image; npy: the raw relevance array."
    )


class ClassScore(BaseModel):
    index: int
    name: str
    probability: float


class LedgerLayer(BaseModel):
    index: int = Field(description="Position of the operation in the forward pass.")
    path: str = Field(description="Module path.")
    function: str
    rule: str
    relevance_in: float = Field(description="Relevance that arrived at the operation's output from above.")
    absorbed: float = Field(description="Relevance the operation did not hand down (bias, stabiliser).")
    bias: float | None = Field(description="Part of the absorbed relevance taken by the bias.")


class LedgerSummary(BaseModel):
    score: float = Field(description="The explained score (logit or log-odds).")
    input_relevance: float = Field(description="Σ of the relevance at the input.")
    absorbed: float = Field(description="Relevance absorbed inside the network.")
    bias_absorbed: float
    top_absorbed: float | None = Field(description="Relevance absorbed by the log-odds layer, if any.")
    residual: float = Field(description="score − input relevance − absorbed: rounding error when the ledger closes.")
    closes: bool
    layers: list[LedgerLayer]


class RelevanceSummary(BaseModel):
    shape: list[int]
    sum: float
    positive: float
    negative: float
    min: float
    max: float
    scale: float = Field(description="|R| drawn in full colour (the colour bar's end).")


class ResultImages(BaseModel):
    input: str = Field(description="The model's view of the input, PNG data URL.")
    heatmap: str = Field(description="Relevance, red positive, blue negative, PNG data URL.")
    overlay: str = Field(description="Heatmap blended over the input, PNG data URL.")


class ExplainResult(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    method: str
    composite: str | None
    params: dict[str, float]
    score_type: str
    prediction: ClassScore
    target: ClassScore
    top: list[ClassScore]
    ledger: LedgerSummary
    relevance: RelevanceSummary
    images: ResultImages
    notes: list[str]
    caveats: list[str] = Field(
        default_factory=list,
        description="Ways in which the input is clearly unlike what the model was made for (its answer says little).",
    )
    seconds: float = Field(description="Time spent decoding, explaining and drawing (queueing excluded).")


class ModelInfo(BaseModel):
    name: str
    channels: int
    input_shape: list[int]
    num_classes: int
    classes: list[str]
    notes: list[str]
    default: bool


class ParameterInfo(BaseModel):
    name: str
    label: str
    default: float
    min: float
    max: float
    scale: Literal["linear", "log"]
    description: str


class CompositeInfo(BaseModel):
    name: str
    description: str
    params: list[str] = Field(description="Parameters the composite takes (low/high come from the model).")
    tunable: list[str] = Field(description="Those the API and the page let you set.")


class MethodInfo(BaseModel):
    name: str
    description: str


class SampleInfo(BaseModel):
    id: str
    title: str
    kind: Literal["digit", "photo"]
    url: str


class ServerStatus(BaseModel):
    reading: int = Field(description="Request bodies arriving now (they take no place in the queue).")
    max_uploads: int
    running: int
    waiting: int
    max_concurrent: int
    max_queue: int
    completed: int
    rejected: int
    failed: int
    peak_running: int
    peak_admitted: int


class ErrorDetail(BaseModel):
    detail: str | list[dict[str, object]]
