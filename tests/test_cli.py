"""The command line, driven as a user would: real image files in, PNG/NPY/JSON/CSV out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from relprop.cli import main, write_atomic
from relprop.models import digits_test_set

RELPROP = [sys.executable, "-m", "relprop.cli"]


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(main, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def digit_files(tmp_path: Path) -> list[Path]:
    """Real test digits written as dark ink on white paper, enlarged (as a user's scans would be)."""
    test = digits_test_set()
    paths = []
    for i in range(7):
        arr = (test.images[i, 0].numpy() * 255).round().astype(np.uint8)
        path = tmp_path / f"digit{i}_label{int(test.labels[i])}.png"
        Image.fromarray(255 - arr, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def test_explain_writes_heatmaps_relevance_and_summary(tmp_path: Path, digit_files: list[Path]) -> None:
    code, out, err = run(["explain", *map(str, digit_files), "--out", "out", "--overlay"], tmp_path)
    assert code == 0, err
    assert "explained 7 of 7 inputs" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "digits" and summary["method"] == "lrp:epsilon-gamma-box"
    for record, path in zip(summary["inputs"], digit_files, strict=True):
        assert record["status"] == "ok"
        label = int(path.stem.split("label")[1])
        assert record["predicted"] == label  # the embedded model reads the user's files correctly
        relevance = np.load(tmp_path / record["relevance"])
        assert relevance.shape == (1, 8, 8)
        assert abs(relevance.sum() - record["relevance_sum"]) < 1e-4
        assert abs(record["explained_score"] - record["relevance_sum"] - record["absorbed"] - record["residual"]) < 1e-3
        heat = np.asarray(Image.open(tmp_path / record["heatmap"]).convert("RGB")).astype(int)
        assert heat.shape == (128, 128, 3)
        small = heat[::16, ::16]  # one pixel per relevance cell
        r = relevance[0]
        red = (small[..., 0] > small[..., 2] + 10) & (small[..., 1] < 245)
        blue = (small[..., 2] > small[..., 0] + 10) & (small[..., 1] < 245)
        assert np.all(r[red] > 0) and np.all(r[blue] < 0)  # red exactly where relevance is positive
        assert red.sum() > 0
        strongest = np.unravel_index(np.abs(r).argmax(), r.shape)
        assert tuple(small[strongest]) in ((255, 0, 0), (0, 0, 255))  # full colour at the max of |R|
        assert Image.open(tmp_path / record["overlay"]).size == (128, 128)
    csv_lines = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("file,status,predicted") and len(csv_lines) == 8
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_bad_inputs_get_one_line_each_and_the_rest_is_processed(tmp_path: Path, digit_files: list[Path]) -> None:
    (tmp_path / "notimage.png").write_text("hello")
    good = digit_files[0].read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.zeros((12, 12, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((np.arange(256, dtype=np.uint16) * 200).reshape(16, 16)).save(tmp_path / "deep16.png")
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 Mpx, a few kB on disk
    args = ["explain", str(digit_files[0]), "notimage.png", "truncated.png", "missing.png", "rgba.png", "deep16.png",
            "bomb.png", "nothing-*.png", "--out", "out"]  # fmt: skip
    code, out, err = run(args, tmp_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert "error: notimage.png: not an image file PIL can read" in lines
    assert any(line.startswith("error: truncated.png: corrupt or truncated image") for line in lines)
    assert "error: missing.png: no such file" in lines
    assert (
        "error: bomb.png: image has more than 64,000,000 pixels; refusing to decode it (decompression-bomb guard)"
        in lines
    )
    assert "error: pattern nothing-*.png matches no files" in lines
    assert "note: rgba.png: composited RGBA on white, dropped alpha" in lines
    assert "note: deep16.png: converted I;16 (16-bit) to 8-bit grey" in lines
    assert "Traceback" not in err
    assert "explained 3 of 8 inputs" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {Path(r["file"]).name: r["status"] for r in summary["inputs"]}
    assert status == {
        digit_files[0].name: "ok", "notimage.png": "error", "truncated.png": "error", "missing.png": "error",
        "rgba.png": "ok", "deep16.png": "ok", "bomb.png": "error",
    }  # fmt: skip


def test_existing_outputs_are_not_overwritten_without_force(tmp_path: Path, digit_files: list[Path]) -> None:
    assert run(["explain", str(digit_files[0]), "--out", "out"], tmp_path)[0] == 0
    heat = tmp_path / "out" / f"{digit_files[0].stem}_heatmap.png"
    before = heat.read_bytes()
    code, _, err = run(["explain", str(digit_files[0]), "--out", "out", "--composite", "epsilon"], tmp_path)
    assert code == 2
    expected = f"error: {Path('out') / heat.name} already exists; pass --force to overwrite it or choose another --out"
    assert err.strip() == expected + " folder"
    assert heat.read_bytes() == before
    code, _, _ = run(["explain", str(digit_files[0]), "--out", "out", "--composite", "epsilon", "--force"], tmp_path)
    assert code == 0 and heat.read_bytes() != before


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "result.png"

    def failing(path: Path) -> None:
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, failing, force=False)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet5000"], "error: unknown model 'resnet5000'; use 'digits', a torchvision name"),
        (["--composite", "epsilon-gama"], "error: unknown composite 'epsilon-gama'; choose one of: lrp-0, epsilon,"),
        (["--device", "cuda"], "error: device 'cuda' was requested but CUDA is not available here; use --device cpu."),
        (["--target", "eleven"], "error: --target must be 'predicted', 'log-odds' or a class index, got 'eleven'"),
        (["--target", "12"], "error: target 12 is out of range for a model with 10 outputs; valid classes are 0..9."),
        (["--composite", "epsilon", "--gamma", "0.5"], "error: composite 'epsilon' does not take --gamma"),
        (["--method", "magic"], "error: unknown method 'magic'; choose one of: lrp, gradient, gradient-x-input"),
        (["--method", "smoothgrad:n=4", "--epsilon", "0.1"], "error: --epsilon apply to LRP; give 'smoothgrad'"),
        (["--method", "gradient", "--target", "log-odds"], "error: --target log-odds and --contrast apply to LRP"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    tmp_path: Path, digit_files: list[Path], args: list[str], message: str
) -> None:
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = run(["explain", str(digit_files[0]), "--out", "out", *args], tmp_path)
    assert code == 2
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_weights_that_do_not_match_name_the_first_key(tmp_path: Path, digit_files: list[Path]) -> None:
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "resnet18.pt")
    code, _, err = run(["explain", str(digit_files[0]), "--model", "resnet34", "--weights", "resnet18.pt"], tmp_path)
    assert code == 2
    assert err.strip() == (
        "error: weights file resnet18.pt does not match architecture resnet34: key 'layer1.2.conv1.weight' is missing."
    )
    bad_shape = {k: v for k, v in state.items()}
    bad_shape["fc.weight"] = torch.zeros(10, 512)
    torch.save(bad_shape, tmp_path / "bad.pt")
    code, _, err = run(["explain", str(digit_files[0]), "--model", "resnet18", "--weights", "bad.pt"], tmp_path)
    assert "key 'fc.weight' has shape (10, 512), the architecture expects (1000, 512)." in err


def test_torchvision_model_with_weights_file_and_colour_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    code, _, err = run(
        ["explain", "astronaut.png", "--model", "resnet18", "--weights", "weights.pt", "--out", "out", "--overlay"],
        tmp_path,
    )
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]
    relevance = np.load(tmp_path / record["relevance"])
    assert relevance.shape == (3, 224, 224) and np.isfinite(relevance).all()
    with torch.no_grad():
        from relprop.models.loading import load_model

        bundle = load_model("resnet18", tmp_path / "weights.pt")
        expected = int(bundle.model(bundle.preprocess(Image.open(tmp_path / "astronaut.png"))[None]).argmax())
    assert record["predicted"] == expected


def test_pickled_model_file_and_factory_spec(
    tmp_path: Path, digit_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from relprop.models.digits import load_digits_model

    torch.save(load_digits_model(), tmp_path / "full_model.pt")
    (tmp_path / "my_models.py").write_text(
        "from relprop.models.digits import load_digits_model\n\ndef build():\n    return load_digits_model()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("full_model.pt", "my_models:build"):
        out = f"out-{spec.replace(':', '-')}"
        code, _, err = run(
            [
                "explain",
                str(digit_files[1]),
                "--model",
                spec,
                "--input-size",
                "8",
                "--mean",
                "0",
                "--std",
                "1",
                "--out",
                out,
            ],
            tmp_path,
        )
        assert code == 0, err  # one --mean/--std value: a one-channel model at --input-size 8
        record = json.loads((tmp_path / out / "summary.json").read_text())["inputs"][0]
        assert np.load(tmp_path / record["relevance"]).shape == (1, 8, 8)
    code, _, err = run(["explain", str(digit_files[1]), "--model", "my_models:build", "--out", "rgb"], tmp_path)
    assert code == 2  # ImageNet defaults feed 3×224×224 to a one-channel 8×8 model
    error = err.strip().splitlines()[-1]  # after the note on the grey-level picture
    assert error.startswith("error: inputs of shape (1, 3, 224, 224) do not fit the model: its first layer")
    assert error.endswith("; check --input-size, --mean and --std for this model") and "Traceback" not in err


def test_demo_writes_the_contact_sheet(tmp_path: Path) -> None:
    code, out, err = run(["demo", "--out", "demo", "--count", "3"], tmp_path)
    assert code == 0, err
    sheet = Image.open(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.size[0] > 400 and sheet.size[1] > 250
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert len(summary["digits"]) == 3
    for digit in summary["digits"]:
        assert digit["label"] == digit["predicted"]
        for explanation in digit["explanations"].values():
            assert abs(explanation["residual"]) < 1e-3
    assert "contact sheet: demo/contact_sheet.png" in out


def test_listings() -> None:
    runner = CliRunner()
    composites = runner.invoke(main, ["composites"])
    assert composites.exit_code == 0 and "epsilon-gamma-box" in composites.stdout and "montavon" in composites.stdout
    rules = runner.invoke(main, ["rules"])
    assert (
        rules.exit_code == 0
        and "GammaRule" in rules.stdout
        and "applies to: conv, conv_transpose, linear" in rules.stdout
    )


def test_console_script_exits_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*RELPROP, "explain", "missing.png", "--model", "nope"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model 'nope'") and "Traceback" not in proc.stderr


def test_timm_model_with_weights_file_and_grey_input(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    torch.save(model.state_dict(), tmp_path / "timm.pt")
    from skimage import data

    Image.fromarray(data.camera()).save(tmp_path / "camera.png")  # a real grey-level photo
    code, _, err = run(
        ["explain", "camera.png", "--model", "timm:resnet10t", "--weights", "timm.pt", "--out", "out"], tmp_path
    )
    assert code == 0, err
    assert "note: camera.png: grey-level image repeated on three channels for an RGB model" in err
    record = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]
    assert np.load(tmp_path / record["relevance"]).shape[0] == 3


def test_unknown_torchvision_weights_name_lists_the_valid_ones(tmp_path: Path, digit_files: list[Path]) -> None:
    code, _, err = run(["explain", str(digit_files[0]), "--model", "resnet18", "--weights", "IMAGENET9K"], tmp_path)
    assert code == 2
    assert err.startswith(
        "error: unknown weights 'IMAGENET9K' for resnet18; pass a state_dict file or one of: DEFAULT,"
    )
    assert "IMAGENET1K_V1" in err


def test_torchscript_model_file_explains_like_the_eager_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    eager = torchvision.models.resnet18().eval()
    torch.jit.save(torch.jit.trace(eager, torch.randn(1, 3, 64, 64)), tmp_path / "scripted.pt")
    torch.save(eager.state_dict(), tmp_path / "weights.pt")
    from skimage import data

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    code, _, err = run(
        ["explain", "coffee.png", "--model", "scripted.pt", "--input-size", "64", "--out", "ts"], tmp_path
    )
    assert code == 0, err
    assert "converted the TorchScript archive" in err
    code, _, err = run(
        [
            "explain",
            "coffee.png",
            "--model",
            "resnet18",
            "--weights",
            "weights.pt",
            "--input-size",
            "64",
            "--out",
            "eager",
        ],
        tmp_path,
    )
    assert code == 0, err
    scripted = np.load(tmp_path / "ts" / "coffee_relevance.npy")
    reference = np.load(tmp_path / "eager" / "coffee_relevance.npy")
    assert scripted.shape == (3, 64, 64)
    assert np.abs(scripted - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("spec", ["gradient", "smoothgrad:n=4,sigma=0.1", "deeplift:reveal-cancel", "deep-taylor"])
def test_explain_with_other_methods(tmp_path: Path, digit_files: list[Path], spec: str) -> None:
    code, _, err = run(["explain", *map(str, digit_files[:2]), "--method", spec, "--out", "out"], tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == spec
    for record in summary["inputs"]:
        assert np.isfinite(np.load(tmp_path / record["relevance"])).all()


def test_compare_puts_methods_side_by_side(tmp_path: Path, digit_files: list[Path]) -> None:
    code, out, err = run(["compare", *map(str, digit_files[:3]), "--out", "sheet.png"], tmp_path)
    assert "compared 7 methods on 3 inputs" in out
    assert code == 0, err
    summary = json.loads((tmp_path / "sheet.json").read_text())
    assert summary["methods"][0] == "lrp:epsilon-gamma-box" and "deeplift" in summary["methods"]
    assert len(summary["inputs"]) == 3
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size[0] > 96 * (1 + len(summary["methods"]))
    code, _, err = run(["compare", str(digit_files[0]), "--method", "gradient", "--method", "lrp:lrp-0",
                        "--out", "two.png"], tmp_path)  # fmt: skip
    assert code == 0, err
    two = json.loads((tmp_path / "two.json").read_text())
    # LRP-0 equals gradient × input, not the plain gradient: both columns are really computed
    record = two["inputs"][0]["methods"]
    assert abs(record["lrp:lrp-0"]["relevance_sum"] - record["gradient"]["relevance_sum"]) > 1e-3


# -- hardening: names, folders, unusual values, OS errors, NaN, interrupts -------------------------


def digit_image(index: int, size: int = 64) -> Image.Image:
    pixels = (digits_test_set().images[index, 0].numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(255 - pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)


def library_relevance(path: Path) -> np.ndarray:
    """The default explanation of an image file, computed with the library directly."""
    import relprop
    from relprop.models.loading import load_model

    bundle = load_model("digits")
    x = bundle.preprocess(Image.open(path).convert("RGB"))[None]
    result = relprop.Explainer(bundle.model, "epsilon-gamma-box", low=bundle.low.view(-1), high=bundle.high.view(-1))
    return result(x).relevance[0].numpy()


def test_colliding_stems_extensions_folders_and_unicode_get_their_own_outputs(tmp_path: Path) -> None:
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é")
    files = {"a.png": 0, "a.jpg": 1, "a-2.png": 2, "sub/a.png": 3, f"{nfc}.png": 4, f"{nfd}.bmp": 5}
    for name, index in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        image = digit_image(index)
        image.save(tmp_path / name) if not name.endswith(".jpg") else image.save(tmp_path / name, quality=100)
    code, out, err = run(["explain", *files, "--out", "out"], tmp_path)
    assert code == 0, err
    assert f"explained {len(files)} of {len(files)} inputs" in out
    records = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]
    assert [r["file"] for r in records] == list(files)
    heatmaps = [r["heatmap"] for r in records]
    assert len({unicodedata.normalize("NFC", h).casefold() for h in heatmaps}) == len(files)  # six output sets
    assert len(list((tmp_path / "out").glob("*_relevance.npy"))) == len(files)
    for record in records:  # each record points at its own input's files
        relevance = np.load(tmp_path / record["relevance"])
        np.testing.assert_allclose(relevance, library_relevance(tmp_path / record["file"]), rtol=1e-4, atol=1e-6)
        assert record["predicted"] == int(digits_test_set().labels[files[record["file"]]])
    assert records[0]["heatmap"] == str(Path("out") / "a.png_heatmap.png")
    assert records[2]["heatmap"] == str(Path("out") / "a-2_heatmap.png")
    assert records[3]["heatmap"] == str(Path("out") / "sub_a.png_heatmap.png")


def test_sub_folders_are_named_and_searched_with_recursive(tmp_path: Path) -> None:
    (tmp_path / "scans" / "more").mkdir(parents=True)
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    digit_image(0).save(tmp_path / "scans" / "top.png")
    digit_image(1).save(tmp_path / "scans" / "more" / "inner.png")
    digit_image(2).save(tmp_path / "empty" / "deeper" / "only.png")
    code, out, err = run(["explain", "scans", "--out", "flat"], tmp_path)
    assert code == 0 and "explained 1 of 1 inputs" in out
    assert (
        "note: folder scans; its 1 sub-folder(s) (more) were not searched: pass --recursive to include them"
        in err.splitlines()
    )
    code, out, err = run(["explain", "empty", "--out", "none"], tmp_path)
    assert code == 1
    assert err.startswith("error: folder empty contains no image files (.png, ")
    assert "its 1 sub-folder(s) (deeper) were not searched: pass --recursive to include them" in err
    code, out, err = run(["explain", "scans", "empty", "--recursive", "--out", "deep"], tmp_path)
    assert code == 0 and "explained 3 of 3 inputs" in out and "note:" not in err
    names = sorted(p.name for p in (tmp_path / "deep").glob("*_heatmap.png"))
    assert names == ["inner_heatmap.png", "only_heatmap.png", "top_heatmap.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "os:system"], "error: model factory os:system needs arguments (command); --model takes a "
         "function or class that builds the model without arguments."),
        (["--model", "json:loads"], "error: model factory json:loads needs arguments (s); --model takes"),
        (["--model", "broken_models:raising"], "error: model factory broken_models:raising failed "
         "(ZeroDivisionError: division by zero); it must build the model without arguments."),
        (["--target", "99999999999999999999"], "error: --target 99999999999999999999 is not a class index of any "
         "model (at most 2,147,483,647)"),
        (["--contrast", "-99999999999999999999"], "error: --contrast -99999999999999999999 is not a class index"),
        (["--method", "gradient", "--composite", "gamma"], "error: --composite applies to method lrp, not to "
         "'gradient'; drop it or use --method lrp"),
        (["--method", "lrp:gamma", "--composite", "epsilon"], "error: --method lrp:gamma names composite 'gamma' "
         "and --composite 'epsilon'; give one of them"),
        (["--composite", "epsilon", "--low", "0"], "error: --low and --high set z^B bounds, which lrp:epsilon "
         "does not use"),
        (["--method", "gradient", "--high", "1"], "error: --low and --high set z^B bounds, which gradient does"),
        (["--epsilon", "nan"], "error: Invalid value for '--epsilon': 'nan' is not a finite number (see "),
        (["--gamma", "inf"], "error: Invalid value for '--gamma': 'inf' is not a finite number"),
        (["--low", "nan"], "error: --low must be finite numbers, got 'nan'"),
        (["--model", "resnet18", "--std", "0.2,0,0.2"], "error: --std must be positive finite numbers"),
        (["--input-size", "100000"], "error: Invalid value for '--input-size': 100000 is not in the range"),
        (["--out", "input.png/out"], "error: cannot write into the folder input.png/out (Not a directory); a part of "
         "the path is a file, not a folder; choose another --out folder"),
    ],
)  # fmt: skip
def test_unusual_values_and_unusable_paths_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    (tmp_path / "broken_models.py").write_text("def raising():\n    return 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    digit_image(0).save(tmp_path / "input.png")
    code, _, err = run(["explain", "input.png", *args], tmp_path)
    assert code == 2
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_output_inside_proc_is_one_line(tmp_path: Path) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    digit_image(0).save(tmp_path / "input.png")
    code, _, err = run(["explain", "input.png", "--out", "/proc/relprop-out"], tmp_path)
    assert code == 2 and err.startswith("error: cannot write into the folder /proc/relprop-out (")
    assert len(err.strip().splitlines()) == 1


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    digit_image(0).save(tmp_path / "input.png")
    real_save = Image.Image.save

    def save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        if "heatmap" in str(fp):
            Path(str(fp)).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", save)
    code, _, err = run(["explain", "input.png", "--out", "out"], tmp_path)
    assert code == 2
    assert err.strip() == (
        f"error: cannot write {Path('out') / 'input_heatmap.png'} (No space left on device); free some space or "
        "choose another --out folder"
    )
    assert list((tmp_path / "out").iterdir()) == []


NAN_MODELS = """
import torch
from torch import nn
from relprop.models.digits import load_digits_model


class NanForBlank(nn.Module):
    '''The digits model, whose output is NaN for an all-black input (log 0 times 0).'''

    def __init__(self) -> None:
        super().__init__()
        self.inner = load_digits_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightest = x.flatten(1).amax(1, keepdim=True)
        return self.inner(x) + torch.log(brightest) * 0


def nan_for_blank() -> nn.Module:
    return NanForBlank().eval()
"""


def test_nan_is_an_error_per_input_never_a_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nan_models.py").write_text(NAN_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    digit_image(3, size=8).save(tmp_path / "digit.png")
    args = ["explain", "black.png", "digit.png", "--model", "nan_models:nan_for_blank", "--method", "gradient",
            "--input-size", "8", "--mean", "0", "--std", "1", "--out", "out"]  # fmt: skip
    code, out, err = run(args, tmp_path)
    assert code == 1
    assert "explained 1 of 2 inputs" in out
    assert err.strip().splitlines() == [
        "error: black.png: no explanation, because the model's output is nan at (0,) (and 9 more); check the "
        "model's weights and how the input is preprocessed."
    ]
    records = {r["file"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]}
    assert records["black.png"]["status"] == "error" and "nan" in records["black.png"]["error"]
    assert (
        records["digit.png"]["status"] == "ok"
        and np.isfinite(np.load(tmp_path / records["digit.png"]["relevance"])).all()
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "digit_heatmap.png", "digit_relevance.npy", "summary.csv", "summary.json",
    ]  # fmt: skip
    json.loads((tmp_path / "out" / "summary.json").read_text(), parse_constant=pytest.fail)  # no NaN in the JSON


SLOW_MODELS = """
import time
from pathlib import Path
from typing import Any
import torch
from torch import nn
from relprop.models.digits import load_digits_model


class Slow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = load_digits_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.1)
        return self.inner(x)


def slow_start() -> nn.Module:
    Path("started").write_text("loading")
    time.sleep(60)
    return load_digits_model()


def slow_explanations() -> nn.Module:
    return Slow().eval()
"""


def start_relprop(tmp_path: Path, args: list[str], module: str = "relprop.cli") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(condition: Any, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_while_the_model_loads_exits_130_quietly(tmp_path: Path) -> None:
    import signal

    (tmp_path / "slow_models.py").write_text(SLOW_MODELS)
    digit_image(0).save(tmp_path / "input.png")
    proc = start_relprop(tmp_path, ["explain", "input.png", "--model", "slow_models:slow_start", "--out", "out"])
    try:
        wait_for(lambda: (tmp_path / "started").exists())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err == "interrupted\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("signum", "code", "line"), [("SIGINT", 130, "interrupted"),
                                                      ("SIGTERM", 143, "terminated by SIGTERM")])  # fmt: skip
def test_a_signal_while_writing_leaves_complete_files_and_no_temporary_ones(
    tmp_path: Path, signum: str, code: int, line: str
) -> None:
    import signal

    (tmp_path / "slow_models.py").write_text(SLOW_MODELS)
    (tmp_path / "in").mkdir()
    for i in range(40):
        digit_image(i % 10).save(tmp_path / "in" / f"d{i:02}.png")
    args = ["explain", "in", "--model", "slow_models:slow_explanations", "--input-size", "8", "--mean", "0",
            "--std", "1", "--batch-size", "1", "--overlay", "--out", "out"]  # fmt: skip
    proc = start_relprop(tmp_path, args)
    try:
        wait_for(lambda: len(list((tmp_path / "out").glob("*_overlay.png"))) >= 3)
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    written = sorted((tmp_path / "out").iterdir())
    assert not [p for p in written if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert 3 <= len([p for p in written if p.name.endswith("_relevance.npy")]) < 40
    for path in written:  # every file there is complete
        if path.suffix == ".npy":
            assert np.load(path).shape == (1, 8, 8)
        else:
            Image.open(path).load()


def test_ctrl_c_while_python_imports_relprop_exits_130_quietly(tmp_path: Path) -> None:
    """The console script starts in ``relprop_launcher``, before relprop and torch are imported: a Ctrl-C
    during those imports (here: held in a stand-in for ``click``, which relprop.cli imports) is quiet too."""
    import signal

    (tmp_path / "click.py").write_text("import pathlib, time\npathlib.Path('importing').touch()\ntime.sleep(60)\n")
    proc = start_relprop(tmp_path, ["explain", "input.png"], module="relprop_launcher")
    try:
        wait_for(lambda: (tmp_path / "importing").exists())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err == "interrupted\n"
