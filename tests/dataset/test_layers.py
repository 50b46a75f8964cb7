"""Inner-layer relevance in the store: it holds exactly what relprop.explain(..., layers=...) returns.

These tests need the engine's ``layers=``/``layer_reduce=`` keywords (``Explanation.layers``), which
land on main with the engine work; until then they fail with a TypeError from the Explainer call.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from relprop.cli import main
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.errors import ConfigurationError
from relprop.models import digits_test_set, load_digits_model

from .support import BOUNDS, ROOT, TESTS, reference, torch_threads

LAYERS = ["features.5", "classifier.2"]  # a max-pool output (32 channels, 4×4) and a dense ReLU output (128)


@pytest.mark.parametrize(("layer_reduce", "dtype"), [("channels", "float32"), (None, "float32"), (None, "float16")])
def test_store_holds_what_explain_returns_at_the_layers(tmp_path: Path, layer_reduce: str | None, dtype: str) -> None:
    model = load_digits_model()
    store = explain_dataset(model, "digits", tmp_path / "s.zarr", layers=LAYERS, layer_reduce=layer_reduce,
                            dtype=dtype, batch_size=16, chunk_size=48, progress="none", **BOUNDS)  # fmt: skip
    expected = reference(model, digits_test_set().images, 16, layers=LAYERS, layer_reduce=layer_reduce, **BOUNDS)
    assert store.layers == LAYERS
    shapes = {"features.5": (32,) if layer_reduce else (32, 4, 4), "classifier.2": (128,)}
    for name in LAYERS:
        stored = store.layer(name)
        assert stored.shape == (360, *shapes[name])
        want = expected[f"layers/{name}"]
        # Per-channel sums are small and kept in float32; whole maps follow the relevance dtype.
        if dtype == "float16" and len(shapes[name]) > 1:
            want = want.astype(np.float16)
        np.testing.assert_array_equal(stored[:], want, err_msg=name)
    np.testing.assert_array_equal(store.relevance[:], expected["relevance"].astype(dtype))
    reopened = RelevanceStore(store.path, expect={"layers": LAYERS, "layer_reduce": layer_reduce})
    assert reopened.layer("classifier.2")[7].shape == (128,)


def test_an_unknown_layer_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"features\.99"):
        explain_dataset(load_digits_model(), "digits", tmp_path / "s.zarr", layers=["features.99"], progress="none",
                        **BOUNDS)  # fmt: skip
    result = CliRunner().invoke(main, ["explain-dataset", "digits", "--out", str(tmp_path / "s.zarr"),
                                       "--layers", "features.5,features.99"])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "features.99" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.heavy
def test_ray_workers_store_the_same_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(TESTS)]))
    model = load_digits_model()
    store = explain_dataset(model, "digits", tmp_path / "s.zarr", layers=LAYERS, executor="ray", workers=2,
                            batch_size=16, chunk_size=48, progress="none", **BOUNDS)  # fmt: skip
    with torch_threads(1):
        expected = reference(model, digits_test_set().images, 16, layers=LAYERS, layer_reduce="channels", **BOUNDS)
    for name in LAYERS:
        scale = float(np.abs(expected[f"layers/{name}"]).max())
        np.testing.assert_allclose(store.layer(name)[:], expected[f"layers/{name}"], rtol=0, atol=1e-6 * scale)
