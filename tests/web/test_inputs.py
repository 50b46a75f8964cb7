"""What the web app does with unusual pictures: extreme aspect ratios are refused before
preprocessing allocates, pictures clearly outside the model's domain carry caveats, and an
explanation holding NaN or Inf is an error, never a 200."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from relprop.models.loading import ModelBundle, load_model
from relprop.web import WebSettings, create_app

from .conftest import digit_label, digit_png


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    rgb = load_model("models:small_cnn")  # ImageNet-style preprocessing: shorter side to 256, centre crop 224
    with TestClient(create_app(WebSettings(), bundles={"digits": load_model(), "rgb": rgb})) as c:
        yield c


def png(size: tuple[int, int], mode: str = "L", colour: Any = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def post(client: TestClient, image: bytes, **fields: str) -> Any:
    return client.post("/api/explain", files={"image": ("p.png", image, "image/png")}, data=fields)


LIMIT = "more than the limit of 16,000,000; crop it to a less extreme aspect ratio"


@pytest.mark.parametrize(
    ("model", "size", "made"),
    [
        ("digits", (1, 6000), "6,000×6,000 = 36,000,000 pixels (padded to a square)"),
        ("digits", (6000, 1), "6,000×6,000 = 36,000,000 pixels (padded to a square)"),
        ("digits", (4001, 3), "4,001×4,001 = 16,008,001 pixels (padded to a square)"),
        ("digits", (4_000_000, 1), "4,000,000×4,000,000 = 16,000,000,000,000 pixels (padded to a square)"),
        ("rgb", (1, 6000), "256×1,536,000 = 393,216,000 pixels (its shorter side resized to 256)"),
        ("rgb", (3000, 2), "384,000×256 = 98,304,000 pixels (its shorter side resized to 256)"),
        ("rgb", (1, 4_000_000), "256×1,024,000,000 = 262,144,000,000 pixels (its shorter side resized to 256)"),
    ],
)
def test_extreme_aspect_ratios_are_refused_with_the_limit(
    client: TestClient, model: str, size: tuple[int, int], made: str
) -> None:
    response = post(client, png(size), model=model)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "image"]
    assert error["msg"] == (
        f"upload: the model's preprocessing would turn this {size[0]}×{size[1]} picture into {made}, {LIMIT}"
    )
    assert post(client, digit_png(4)).json()["prediction"]["index"] == digit_label(4)


@pytest.mark.parametrize(("model", "size"), [("digits", (4000, 4)), ("digits", (3, 3000)), ("rgb", (1000, 100))])
def test_elongated_pictures_within_the_limit_are_explained_with_a_caveat(
    client: TestClient, model: str, size: tuple[int, int]
) -> None:
    response = post(client, png(size, "RGB", (200, 30, 30)), model=model)
    assert response.status_code == 200, response.text
    aspect = max(size) // min(size)
    assert f"its aspect ratio ({aspect}:1) is far from the model's square input" in response.json()["caveats"]


def test_memory_stays_small_for_tiny_files_with_extreme_aspect_ratios() -> None:
    """The peak memory of a fresh server process hardly grows when it refuses 1×6000 and 1×4,000,000 PNGs
    (padding them to squares of float64 values took 551 MiB, and a MemoryError, before)."""
    script = textwrap.dedent(
        """
        import io, resource
        from PIL import Image
        from fastapi.testclient import TestClient
        from relprop.web import create_app

        def png(size):
            buffer = io.BytesIO()
            Image.new("L", size, 255).save(buffer, format="PNG")
            return buffer.getvalue()

        bodies = [png((1, 6000)), png((4_000_000, 1))]
        with TestClient(create_app()) as client:
            client.post("/api/explain", data={"sample": "digit-1"})  # everything loaded and warm
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            codes = [client.post("/api/explain", files={"image": ("p.png", b, "image/png")}).status_code
                     for b in bodies]
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(codes, (after - before) // 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    codes, grown_mib = done.stdout.strip().rsplit(" ", 1)
    assert codes == "[422, 422]"
    assert int(grown_mib) < 64, f"peak memory grew by {grown_mib} MiB"


def test_pictures_outside_the_models_domain_carry_caveats(client: TestClient) -> None:
    photo = client.post("/api/explain", data={"sample": "photo-astronaut", "model": "digits"}).json()
    assert photo["caveats"] == [
        "a colour photo (colourfulness 0.19) given to a model of grey-level pictures",
        "the 512×512 picture is reduced 64× to the model's 1×8×8 grey input",
    ]
    assert photo["images"]["input"].startswith("data:image/png;base64,")  # what the model saw
    grey = client.post("/api/explain", data={"sample": "photo-camera", "model": "digits"}).json()
    assert grey["caveats"] == ["the 512×512 picture is reduced 64× to the model's 1×8×8 grey input"]
    tiny = post(client, png((20, 20), "RGB", (90, 90, 90)), model="rgb").json()
    assert tiny["caveats"] == ["the 20×20 picture is enlarged 11× to the model's 3×224×224 colour input"]
    for scan in (digit_png(3), digit_png(3, size=200)):  # scans of digits on paper, as the model expects
        assert post(client, scan).json()["caveats"] == []
    assert client.post("/api/explain", data={"sample": "photo-chelsea", "model": "rgb"}).json()["caveats"] == []


def test_an_explanation_with_nan_is_an_error_not_a_result() -> None:
    digits = load_model("digits")
    broken = load_model("digits").model
    with torch.no_grad():
        broken.classifier[4].weight[4, 0] = float("nan")  # class 4's logit is NaN; the others are finite
    bundle = ModelBundle(broken, "broken", digits.preprocess, digits.display, digits.low, digits.high, None, 1)
    with TestClient(create_app(bundles={"broken": bundle, "digits": digits})) as client:
        response = post(client, digit_png(0), model="broken")
        assert response.status_code == 422
        assert response.json()["detail"][0]["msg"] == (
            "upload: no explanation, because the model's output is nan at (4,); check the model's weights and how "
            "the input is preprocessed."
        )
        npy = client.post(
            "/api/explain", data={"sample": "digit-0", "model": "broken"}, params={"output": "npy"}
        )  # fmt: skip
        assert npy.status_code == 422 and "sample digit-0: no explanation" in npy.json()["detail"][0]["msg"]
        assert post(client, digit_png(0), model="digits").status_code == 200
        status = client.get("/api/status").json()
        assert status["failed"] == 2 and status["completed"] == 1
