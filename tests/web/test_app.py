"""The web API, driven over HTTP (in-process): results agree with the library, bad input is refused
with a clear status and message, and the server answers the next request correctly after each."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import relprop
from relprop import methods
from relprop.models.loading import ModelBundle, load_model
from relprop.web import WebSettings, create_app

from .conftest import digit_label, digit_png

LIMIT = 256 * 1024  # a small upload limit, so that oversize bodies are cheap to build


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(WebSettings(max_upload_bytes=LIMIT, max_pixels=4_000_000))
    with TestClient(app) as c:
        yield c


def upload(client: TestClient, png: bytes, content_type: str = "image/png", **fields: Any) -> Any:
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/api/explain", files={"image": ("scan.png", png, content_type)}, data=data)


def reference(png: bytes, composite: str = "epsilon-gamma-box", target: int | None = None, **params: float) -> Any:
    """The library's own explanation of the same picture: the oracle for the API."""
    bundle = load_model("digits")
    x = bundle.preprocess(Image.open(io.BytesIO(png))).unsqueeze(0)
    if composite == "epsilon-gamma-box":
        params = {**params, "low": bundle.low.view(-1), "high": bundle.high.view(-1)}
    return relprop.Explainer(bundle.model, composite, **params)(x, target)


def test_listings_describe_models_composites_methods_and_samples(client: TestClient) -> None:
    models = client.get("/api/models").json()
    assert [m["name"] for m in models] == ["digits"]
    assert models[0]["default"] and models[0]["num_classes"] == 10 and models[0]["input_shape"] == [1, 8, 8]
    composites = {c["name"]: c for c in client.get("/api/composites").json()}
    assert list(composites) == relprop.composites.names()
    assert composites["epsilon-gamma-box"]["tunable"] == ["epsilon", "gamma"]
    assert composites["alpha-beta"]["tunable"] == ["alpha", "beta"]
    assert [m["name"] for m in client.get("/api/methods").json()] == methods.names()
    samples = client.get("/api/samples").json()
    assert [s["id"] for s in samples[:10]] == [f"digit-{d}" for d in range(10)]
    assert {"photo-astronaut", "photo-chelsea"} <= {s["id"] for s in samples}
    png = client.get(samples[0]["url"])
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size == (64, 64)


def test_openapi_schema_is_served_and_describes_the_upload(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    assert {"/api/explain", "/api/models", "/api/composites"} <= set(schema["paths"])
    body = schema["paths"]["/api/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["image"] == {
        "type": "string",
        "format": "binary",
        "description": "The image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM); or give 'sample'.",
    }
    assert {"model", "composite", "epsilon", "gamma", "alpha", "beta", "target"} <= set(body["properties"])
    # No page of the app loads anything from elsewhere: the CDN-based docs pages are off.
    assert client.get("/docs").status_code == 404


def test_upload_is_explained_exactly_as_the_library_does(client: TestClient) -> None:
    png = digit_png(5)
    response = upload(client, png, epsilon=0.25, gamma=0.25)
    assert response.status_code == 200, response.text
    result = response.json()
    expected = reference(png, epsilon=0.25, gamma=0.25)
    assert result["prediction"]["index"] == digit_label(5) == result["target"]["index"]
    assert result["ledger"]["score"] == pytest.approx(float(expected.ledger.score[0]), rel=1e-6)
    assert result["ledger"]["input_relevance"] == pytest.approx(float(expected.ledger.input_relevance[0]), rel=1e-5)
    assert result["ledger"]["closes"] and abs(result["ledger"]["residual"]) < 1e-4
    assert len(result["top"]) == 5 and sum(c["probability"] for c in result["top"]) <= 1 + 1e-9
    assert [c["probability"] for c in result["top"]] == sorted((c["probability"] for c in result["top"]), reverse=True)
    raw = client.post(
        "/api/explain", files={"image": ("a.png", png, "image/png")}, data={"epsilon": "0.25", "gamma": "0.25"},
        params={"output": "npy"},
    )  # fmt: skip
    assert raw.headers["content-disposition"] == 'attachment; filename="relprop-relevance.npy"'
    relevance = np.load(io.BytesIO(raw.content))
    np.testing.assert_allclose(relevance, expected.relevance[0].numpy(), rtol=1e-5, atol=1e-7)
    assert result["relevance"]["scale"] == pytest.approx(float(np.abs(relevance).max()), rel=1e-6)
    heat = upload(client, png, epsilon=0.25, gamma=0.25, output="png")
    assert heat.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(heat.content)).convert("RGB")).astype(int)
    assert pixels.shape == (256, 256, 3)
    cells = pixels[16::32, 16::32]  # one pixel per relevance cell (8×8 enlarged 32×)
    r = relevance[0]
    red = (cells[..., 0] > cells[..., 2] + 10) & (cells[..., 1] < 245)
    blue = (cells[..., 2] > cells[..., 0] + 10) & (cells[..., 1] < 245)
    assert red.any() and np.all(r[red] > 0) and np.all(r[blue] < 0)


def test_parameters_target_and_score_change_the_explanation(client: TestClient) -> None:
    png = digit_png(2)
    base = upload(client, png, composite="epsilon", epsilon=0.01).json()
    wider = upload(client, png, composite="epsilon", epsilon=5.0).json()
    # A larger ε absorbs more of the score: less relevance reaches the input.
    assert wider["ledger"]["absorbed"] > base["ledger"]["absorbed"]
    expected = reference(png, "epsilon", epsilon=5.0)
    assert wider["ledger"]["input_relevance"] == pytest.approx(float(expected.ledger.input_relevance[0]), rel=1e-5)
    other = next(c for c in range(10) if c != digit_label(2))
    chosen = upload(client, png, composite="lrp-0", target=other).json()
    assert chosen["target"]["index"] == other and chosen["prediction"]["index"] == digit_label(2)
    assert chosen["ledger"]["score"] == pytest.approx(float(reference(png, "lrp-0", other).ledger.score[0]), rel=1e-6)
    odds = upload(client, png, composite="alpha-beta", alpha=3, beta=2, score="log-odds").json()
    assert odds["score_type"] == "log-odds" and odds["params"] == {"alpha": 3.0, "beta": 2.0}
    p = odds["target"]["probability"]
    assert odds["ledger"]["score"] == pytest.approx(np.log(p / (1 - p)), rel=1e-4)
    sample = client.post("/api/explain", data={"sample": "digit-7", "composite": "gamma", "gamma": "1.5"}).json()
    assert sample["prediction"]["index"] == 7 and sample["composite"] == "gamma"


def _good_request_still_works(client: TestClient) -> None:
    result = upload(client, digit_png(0), composite="lrp-0")
    assert result.status_code == 200, result.text
    expected = reference(digit_png(0), "lrp-0")
    assert result.json()["ledger"]["input_relevance"] == pytest.approx(
        float(expected.ledger.input_relevance[0]), rel=1e-5
    )


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # 81 Mpx in a few kB
    return buffer.getvalue()


def _eps() -> bytes:
    # PIL knows EPS (its decoder runs Ghostscript); uploads are limited to in-process raster decoders.
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"


TYPE_MESSAGE = "the 'image' part has content type"
BAD_UPLOADS = [
    (
        "not an image",
        lambda: b"hello, I am text",
        "image/png",
        422,
        "upload: not an image file PIL can read (PNG, JPEG",
    ),
    ("truncated", lambda: digit_png(3)[:120], "image/png", 422, "upload: corrupt or truncated image"),
    ("empty", lambda: b"", "image/png", 422, "the uploaded image is empty"),
    ("bomb", _bomb, "image/png", 422, "upload: image has more than 4,000,000 pixels; refusing to decode it"),
    ("eps", _eps, "application/postscript", 415, f"{TYPE_MESSAGE} application/postscript"),
    ("eps as octet-stream", _eps, "application/octet-stream", 422, "upload: not an image file PIL can read"),
    (
        "text part",
        lambda: b"a,b\n1,2\n",
        "text/csv",
        415,
        "the 'image' part has content type text/csv; upload an image",
    ),
    (
        "oversize",
        lambda: os.urandom(LIMIT + 1),
        "image/png",
        413,
        "upload is larger than the server's limit of 262,144",
    ),
]


@pytest.mark.parametrize(("data", "content_type", "status", "message"), [b[1:] for b in BAD_UPLOADS],
                         ids=[b[0] for b in BAD_UPLOADS])  # fmt: skip
def test_bad_uploads_get_a_clear_status_and_the_server_goes_on(
    client: TestClient, data: Any, content_type: str, status: int, message: str
) -> None:
    response = upload(client, data(), content_type)
    assert response.status_code == status
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else detail[0]["msg"]
    assert text.startswith(message), text
    _good_request_still_works(client)


def test_oversize_body_without_content_length_is_cut_off_while_streaming(client: TestClient) -> None:
    boundary = "relprop-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    sent = []

    def body() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check up front
        yield head
        for _ in range(64):
            sent.append(1)
            yield b"\0" * 16384

    response = client.post(
        "/api/explain", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413
    assert "larger than the server's limit" in response.json()["detail"]
    _good_request_still_works(client)


@pytest.mark.parametrize(
    ("fields", "field", "message", "valid"),
    [
        ({"model": "/etc/passwd"}, "model", "unknown model '/etc/passwd'; this server offers: digits", ["digits"]),
        ({"composite": "epsilon-gama"}, "composite", "unknown composite 'epsilon-gama'; choose one of: lrp-0, epsilon",
         relprop.composites.names()),
        ({"method": "magic"}, "method", "unknown method 'magic'; choose one of: lrp", methods.names()),
        ({"sample": "../../etc/passwd"}, "sample", "unknown sample '../../etc/passwd'; choose one of: digit-0", None),
        ({"composite": "epsilon", "gamma": "0.5"}, "gamma", "composite 'epsilon' does not take gamma; it takes: "
         "epsilon", ["epsilon"]),
        ({"target": "12"}, "target", "target 12 is out of range for model digits with 10 classes", None),
        ({"target": "seven"}, "target", "String should match pattern", None),
        ({"epsilon": "nan"}, "epsilon", "Input should be a finite number", None),
        ({"gamma": "-1"}, "gamma", "Input should be greater than or equal to 0", None),
        ({"composite": "alpha-beta", "alpha": "3", "beta": "1"}, "alpha", "alpha and beta must satisfy alpha = beta "
         "+ 1", None),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted", None),
    ],
    ids=["model-path", "composite", "method", "sample-path", "param", "target-range", "target-text", "nan", "negative",
         "alpha-beta", "extra"],
)  # fmt: skip
def test_unusable_values_get_422_naming_the_field_and_the_valid_values(
    client: TestClient, fields: dict[str, str], field: str, message: str, valid: list[str] | None
) -> None:
    fields = {"sample": "digit-4", **fields} if "sample" not in fields else fields
    response = client.post("/api/explain", data=fields)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["msg"].startswith(message) or message in error["msg"], error["msg"]
    if valid is not None:
        assert error["ctx"]["valid"][: len(valid)] == valid
    _good_request_still_works(client)


def test_wrong_request_content_types_get_415(client: TestClient) -> None:
    for kwargs in (
        {"json": {"sample": "digit-1"}},
        {"content": digit_png(1), "headers": {"Content-Type": "image/png"}},
        {"content": b"sample=digit-1"},
    ):
        response = client.post("/api/explain", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 415
        assert response.json()["detail"].startswith("send the request as multipart/form-data")
    both = client.post(
        "/api/explain", files={"image": ("a.png", digit_png(1), "image/png")}, data={"sample": "digit-1"}
    )
    assert both.status_code == 422 and "not both" in both.json()["detail"][0]["msg"]
    neither = client.post("/api/explain", files={"other": ("a.png", digit_png(1), "image/png")})
    assert neither.status_code == 422
    _good_request_still_works(client)


def test_no_request_reaches_files_outside_the_app(client: TestClient) -> None:
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/samples/..%2f..%2f..%2fetc%2fpasswd.png",
        "/api/samples/%2e%2e.png",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"root:" not in response.content and b"create_app" not in response.content
    page = client.get("/")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # nothing loaded from elsewhere


def test_failures_inside_an_explanation_are_500_and_the_server_goes_on() -> None:
    digits = load_model("digits")

    def preprocess(image: Image.Image) -> torch.Tensor:
        if image.size == (13, 13):
            raise ZeroDivisionError("a bug in preprocessing")
        return digits.preprocess(image)

    bundle = ModelBundle(digits.model, "flaky", preprocess, digits.display, digits.low, digits.high, None, 1)
    with TestClient(create_app(bundles={"flaky": bundle})) as client:
        buffer = io.BytesIO()
        Image.new("L", (13, 13)).save(buffer, format="PNG")
        response = upload(client, buffer.getvalue())
        assert response.status_code == 500
        assert response.json()["detail"] == "internal error while explaining (ZeroDivisionError); see the server log"
        assert upload(client, digit_png(6)).json()["prediction"]["index"] == digit_label(6)
        status = client.get("/api/status").json()
        assert status["failed"] == 1 and status["completed"] == 1 and status["running"] == 0


def test_rgb_model_explains_bundled_photographs() -> None:
    pytest.importorskip("skimage")
    import models as test_models

    assert callable(test_models.small_cnn)  # a factory: random weights, real photographs
    rgb = load_model("models:small_cnn")
    with TestClient(
        create_app(WebSettings(max_concurrent=1), bundles={"small": rgb, "digits": load_model()})
    ) as client:
        listed = client.get("/api/models").json()
        assert [m["name"] for m in listed] == ["small", "digits"] and listed[0]["input_shape"] == [3, 224, 224]
        result = client.post("/api/explain", data={"sample": "photo-chelsea", "composite": "epsilon-gamma-box"})
        assert result.status_code == 200, result.text
        body = result.json()
        assert body["model"] == "small" and body["relevance"]["shape"] == [3, 224, 224] and body["ledger"]["closes"]
        grey = client.post("/api/explain", data={"sample": "photo-camera"}).json()
        assert grey["notes"] == ["grey-level image repeated on three channels for an RGB model"]


def test_methods_registered_beside_lrp_appear_and_run(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Methods come from relprop.methods' registry: one registered later is offered and used."""
    from relprop.explanation import Explanation
    from relprop.ledger import Ledger

    def gradient_x_input(model: torch.nn.Module, inputs: torch.Tensor, target: Any = None) -> Explanation:
        x = inputs.detach().requires_grad_(True)
        output = model(x)
        chosen = output.argmax(1) if target is None else torch.full((len(x),), int(target))
        score = output.gather(1, chosen[:, None])[:, 0]
        (grad,) = torch.autograd.grad(score.sum(), x)
        relevance = (x * grad).detach()
        ledger = Ledger(score=score.detach(), input_relevance=relevance.flatten(1).sum(1))
        return Explanation(relevance, output.detach(), chosen, ledger)

    monkeypatch.setitem(methods._REGISTRY, "test-gxi", None)  # so that the entry is removed after the test
    methods.register("test-gxi", "gradient × input (test)")(gradient_x_input)
    assert "test-gxi" in [m["name"] for m in client.get("/api/methods").json()]
    png = digit_png(8)
    result = upload(client, png, method="test-gxi", target=3)
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["method"] == "test-gxi" and body["composite"] is None and body["target"]["index"] == 3
    # Uniform LRP-0 equals Gradient×Input: the registered method agrees with the engine.
    assert body["ledger"]["input_relevance"] == pytest.approx(
        float(reference(png, "lrp-0", 3).ledger.input_relevance[0]), rel=1e-4
    )
    refused = upload(client, png, method="test-gxi", epsilon=0.1)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"] == "epsilon applies to method 'lrp' only, not to 'test-gxi'; drop it"
