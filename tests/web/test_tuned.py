"""``relprop serve --composite tuned.json``: the web app offers a ``tuned`` composite for the model it was tuned on."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

import relprop
from relprop.models import digits_test_set
from relprop.models.loading import load_model
from relprop.web import WebSettings, create_app
from relprop.web.command import serve

from .conftest import digit_png

SPEC = "lrp:epsilon,epsilon=1e-06,reference=blur"


@pytest.fixture(scope="module")
def tuned_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = load_model("digits").model
    tuned = relprop.tune(
        model, digits_test_set().images[:8], objective="pixel-flipping:replacement=blur", candidates=[SPEC], budget=None
    )
    return tuned.save(tmp_path_factory.mktemp("tuned") / "tuned.json")


@pytest.fixture(scope="module")
def client(tuned_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(WebSettings(max_concurrent=1, tuned=str(tuned_file)))) as c:
        yield c


def test_the_tuned_composite_is_listed_and_explains_as_the_library_does(client: TestClient, tuned_file: Path) -> None:
    listed = {c["name"]: c for c in client.get("/api/composites").json()}
    assert listed["tuned"]["params"] == [] and SPEC in listed["tuned"]["description"]
    png = digit_png(3)
    response = client.post("/api/explain", files={"image": ("a.png", png, "image/png")}, data={"composite": "tuned"})
    assert response.status_code == 200, response.text
    result = response.json()
    bundle = load_model("digits")
    x = bundle.preprocess(Image.open(io.BytesIO(png))).unsqueeze(0)
    # The tuned entry explains relative to the tuned reference: as reference-aware LRP with that named setting.
    expected = relprop.explain(bundle.model, x, composite="epsilon", epsilon=1e-6, reference="blur")
    assert result["composite"] == "tuned"
    assert result["ledger"]["score"] == pytest.approx(float(expected.score[0]), rel=1e-6)  # f(x) - f(blurred x)
    raw = client.post(
        "/api/explain", files={"image": ("a.png", png, "image/png")}, data={"composite": "tuned"},
        params={"output": "npy"},
    )  # fmt: skip
    np.testing.assert_allclose(np.load(io.BytesIO(raw.content)), expected.relevance[0].numpy(), rtol=1e-5, atol=1e-7)


def test_tuned_composite_errors(client: TestClient) -> None:
    png = digit_png(1)
    fields = {"composite": "tuned", "epsilon": "0.5"}
    response = client.post("/api/explain", files={"image": ("a.png", png, "image/png")}, data=fields)
    assert response.status_code == 422
    assert "composite 'tuned' does not take epsilon" in response.text
    fields = {"composite": "tuned", "score": "log-odds"}
    response = client.post("/api/explain", files={"image": ("a.png", png, "image/png")}, data=fields)
    assert response.status_code == 422
    assert f"score 'log-odds' does not apply to the tuned {SPEC}" in response.text


def test_a_server_without_a_tuned_file_offers_none() -> None:
    with TestClient(create_app(WebSettings(max_concurrent=1))) as c:
        assert "tuned" not in {x["name"] for x in c.get("/api/composites").json()}
        response = c.post(
            "/api/explain", files={"image": ("a.png", digit_png(0), "image/png")}, data={"composite": "tuned"}
        )
        assert response.status_code == 422 and "unknown composite 'tuned'" in response.text


def test_serve_refuses_a_tuned_file_for_another_model(tuned_file: Path, tmp_path: Path) -> None:
    foreign = json.loads(tuned_file.read_text())
    foreign["model"]["fingerprint"] = "sha256:" + "0" * 64
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(foreign))
    result = CliRunner().invoke(serve, ["--port", "0", "--composite", str(path)])
    assert result.exit_code == 2
    assert result.output == (
        f"error: tuned composite {path} was made for another model (DigitsCNN), not for any model this server offers "
        "(digits); tune it for one of them with relprop tune.\n"
    )
