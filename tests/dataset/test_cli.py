"""relprop explain-dataset: exit statuses, one-line errors, and what the options store."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from relprop.cli import main
from relprop.dataset import RelevanceStore
from relprop.models import digits_test_set

from .support import assert_store_equals, digits_reference


def _invoke(*args: str) -> object:
    return CliRunner().invoke(main, ["explain-dataset", *args, "--threads", "1"])


def test_explains_the_digits_and_summarises(tmp_path: Path) -> None:
    result = _invoke("digits", "--out", str(tmp_path / "s.zarr"), "--batch-size", "16", "--chunk-size", "48",
                     "--progress", "lines")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("explained 360 samples, 0 failed, in ")
    assert lines[-1].endswith(f"samples/s); store: {(tmp_path / 's.zarr').resolve()}")
    store = RelevanceStore(tmp_path / "s.zarr")
    # The z^B bounds come from the model (digits: [0, 1]), as `relprop explain` does.
    assert store.settings["params"] == {"high": [1.0], "low": [0.0]}
    assert store.metadata["model"]["name"] == "digits"
    assert_store_equals(store, digits_reference(batch_size=16))


def test_options_reach_the_store(tmp_path: Path) -> None:
    result = _invoke("digits", "--out", str(tmp_path / "s.zarr"), "--method", "lrp:epsilon", "--epsilon", "0.25",
                     "--target", "label", "--float16", "--store-inputs", "--progress", "none")  # fmt: skip
    assert result.exit_code == 0, result.output
    store = RelevanceStore(tmp_path / "s.zarr")
    settings = store.settings
    assert (settings["composite"], settings["params"], settings["target"]) == ("epsilon", {"epsilon": 0.25}, "label")
    assert settings["dtype"] == "float16" and store.relevance.dtype == np.float16 and store.inputs is not None
    assert settings["batch_size"] == 32 and store.layout.chunk_size == 2048
    np.testing.assert_array_equal(store.table()["target"], digits_test_set().labels.numpy())


def test_broken_images_exit_1_and_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "7"
    folder.mkdir(parents=True)
    Image.fromarray((digits_test_set().images[0, 0].numpy() * 255).astype(np.uint8)).save(folder / "ok.png")
    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    result = _invoke(str(tmp_path / "images"), "--out", str(tmp_path / "s.zarr"), "--progress", "none")
    assert result.exit_code == 1
    assert f"failed: sample 0: {folder / 'bad.png'}: " in result.output
    assert RelevanceStore(tmp_path / "s.zarr").counts() == {"pending": 0, "ok": 1, "failed": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["digits", "--resume", "--force"],
            "error: --resume continues a store and --force replaces it; pass one of them",
        ),
        (
            ["digits", "--target", "seven"],
            "error: --target must be 'predicted', 'label', 'log-odds' or a class index, got 'seven'",
        ),
        (["digits", "--composite", "nope"], "error: unknown composite 'nope'; choose one of: lrp-0, epsilon"),
        (["digits", "--method", "gradient", "--gamma", "0.5"], "error: --gamma apply to LRP; give 'gradient' its "),
        (["digits", "--batch-size", "16", "--chunk-size", "20"], "error: chunk_size 20 is not a multiple of batch"),
    ],
)
def test_user_errors_are_one_line_with_status_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = _invoke(*args, "--out", str(tmp_path / "s.zarr"))
    assert result.exit_code == 2
    assert result.output.startswith(message) and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()


def test_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _invoke(str(tmp_path / "empty"), "--out", str(tmp_path / "s.zarr"))
    assert result.exit_code == 2
    assert result.output == (
        f"error: image folder {tmp_path / 'empty'} contains no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, "
        ".tiff, .webp, .ppm, .pgm), neither directly nor in class sub-folders.\n"
    )


def test_ray_without_ray_installed_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the package
    result = _invoke("digits", "--out", str(tmp_path / "s.zarr"), "--ray")
    assert result.exit_code == 2
    assert result.output == (
        "error: the Ray executor needs Ray, which is not installed; run pip install 'relprop[distributed]' (or drop "
        "--ray to explain on this machine).\n"
    )
    assert not (tmp_path / "s.zarr").exists()


def test_a_tuned_composite_file_with_a_reference(tmp_path: Path) -> None:
    """``--composite tuned.json`` explains relative to the tuned reference; the store records the tuned setting,
    resuming needs the same one, and flags or layers it cannot take are one-line errors."""
    import hashlib

    import torch

    import relprop
    from relprop.dataset import explain_dataset
    from relprop.models import load_digits_model

    model, images = load_digits_model(), digits_test_set().images[:20]
    spec = "lrp:epsilon,epsilon=1e-06,reference=blur"
    tuned = relprop.tune(model, images[:8], candidates=[spec], budget=None)
    path = tuned.save(tmp_path / "tuned.json")
    data = tmp_path / "x.npz"
    np.savez(data, x=images.numpy(), y=np.arange(20) % 10)
    out = tmp_path / "s.zarr"
    result = _invoke(str(data), "--out", str(out), "--composite", str(path), "--progress", "none")
    assert result.exit_code == 0, result.output
    store = RelevanceStore(out)
    settings = store.settings
    assert (settings["composite"], settings["params"]) == ("tuned:epsilon,epsilon=1e-06,reference=blur", {})
    assert settings["tuned"] == {
        "spec": spec, "composite": "epsilon", "params": {"epsilon": 1e-06}, "reference": "blur",
        "fingerprint": tuned.fingerprint, "objective": "pixel-flipping:replacement=blur",
    }  # fmt: skip
    expected = relprop.explain(model, images, composite=tuned)  # f(x) - f(blurred x), one batch of 20 as the store
    np.testing.assert_allclose(store.relevance[:], expected.relevance.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store.table()["score"], expected.score.numpy(), rtol=1e-5, atol=1e-6)

    resumed = _invoke(str(data), "--out", str(out), "--resume", "--progress", "none")
    assert resumed.exit_code == 2 and resumed.output.startswith(f"error: store {out.resolve()} was written with ")
    assert len(resumed.output.splitlines()) == 1
    flags = _invoke(str(data), "--out", str(tmp_path / "f.zarr"), "--composite", str(path), "--epsilon", "0.5")
    assert flags.exit_code == 2
    assert flags.output == f"error: parameters epsilon are chosen by the tuned composite ({spec}); drop them.\n"
    layers = _invoke(str(data), "--out", str(tmp_path / "l.zarr"), "--composite", str(path), "--layers", "features.5")
    assert layers.exit_code == 2 and not (tmp_path / "l.zarr").exists()
    assert layers.output.startswith("error: layers, layer_reduce cannot be used with reference-aware LRP (tuned:")

    mean_spec = "lrp:epsilon,epsilon=1e-06,reference=dataset-mean"
    with_mean = relprop.tune(model, images[:8], objective="pixel-flipping:replacement=dataset-mean",
                             candidates=[mean_spec], budget=None)  # fmt: skip
    store = explain_dataset(model, data, tmp_path / "m.zarr", composite=with_mean, progress="none")
    recorded = hashlib.sha256(images[:8].mean(0).contiguous().numpy().tobytes()).hexdigest()
    assert store.settings["tuned"]["reference_sha256"] == recorded
    direct = relprop.explain(model, images, composite="epsilon", epsilon=1e-6, reference=images[:8].mean(0))
    np.testing.assert_allclose(store.relevance[:], direct.relevance.numpy(), rtol=1e-5, atol=1e-6)
    assert torch.equal(with_mean.reference_input, images[:8].mean(0))
