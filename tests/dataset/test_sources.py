"""Data sources: what each kind loads, how a bad sample is reported, and the registry of kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relprop.dataset import (
    ArraySource,
    DigitsSource,
    ImageFolderSource,
    Sample,
    SampleError,
    Source,
    SourceKind,
    TorchDatasetSource,
    as_source,
    open_source,
    register_source,
)
from relprop.dataset import sources as sources_module
from relprop.errors import ConfigurationError
from relprop.models import digits_test_set
from relprop.models.loading import load_model


def _png(path: Path, value: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)
    return path


def test_digits_source_is_the_bundled_test_set() -> None:
    source = open_source("digits")
    test = digits_test_set()
    assert isinstance(source, DigitsSource) and len(source) == 360
    sample = source.load(17)
    assert torch.equal(sample.x, test.images[17]) and sample.label == int(test.labels[17])
    assert sample.path == "digits[17]" and source.describe()["classes"] == [str(c) for c in range(10)]


def test_image_folder_labels_come_from_sorted_class_subfolders(tmp_path: Path) -> None:
    _png(tmp_path / "zebra" / "a.png", 200)
    _png(tmp_path / "ant" / "nested" / "b.png", 10)
    _png(tmp_path / "ant" / "c.png", 20)
    _png(tmp_path / "loose.png", 30)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    bundle = load_model("digits")
    source = open_source(str(tmp_path), bundle.preprocess)
    assert isinstance(source, ImageFolderSource)
    assert source.classes == ["ant", "zebra"]
    names = [Path(f).name for f in source.files]
    assert names == ["loose.png", "c.png", "b.png", "a.png"]
    assert source.labels == [-1, 0, 0, 1]
    sample = source.load(3)
    assert sample.label == 1 and sample.x.shape == (1, 8, 8)
    assert torch.equal(sample.x, bundle.preprocess(Image.open(tmp_path / "zebra" / "a.png")))


def test_a_broken_image_is_a_sample_error_with_its_path(tmp_path: Path) -> None:
    _png(tmp_path / "one" / "good.png", 100)
    broken = tmp_path / "one" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    source = ImageFolderSource(tmp_path, load_model("digits").preprocess)
    with pytest.raises(SampleError, match=rf"^{broken}: (corrupt or truncated image|not an image file PIL can read)"):
        source.load(0)
    assert source.load(1).label == 0


def test_an_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(ConfigurationError) as info:
        ImageFolderSource(tmp_path, load_model("digits").preprocess)
    assert str(info.value).startswith(f"image folder {tmp_path} contains no image files (.png, .jpg")
    with pytest.raises(ConfigurationError, match="needs the model's preprocessing"):
        ImageFolderSource(tmp_path, None)


def test_npz_and_npy_files(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    y = np.arange(5)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    np.save(tmp_path / "inputs.npy", x)
    with_labels = open_source(str(tmp_path / "data.npz"))
    assert isinstance(with_labels, ArraySource) and len(with_labels) == 5
    assert np.array_equal(with_labels.load(3).x.numpy(), x[3]) and with_labels.load(3).label == 3
    plain = open_source(str(tmp_path / "inputs.npy"))
    assert plain.load(4).label == -1 and np.array_equal(plain.load(4).x.numpy(), x[4])
    np.savez(tmp_path / "wrong.npz", images=x)
    with pytest.raises(ConfigurationError, match=r"has no array 'x' \(it has images\); save the model inputs as x="):
        open_source(str(tmp_path / "wrong.npz"))
    np.savez(tmp_path / "labels.npz", x=x, y=np.arange(4))
    with pytest.raises(ConfigurationError, match=r"y has shape \(4,\); it must hold one label per sample \(5\)"):
        open_source(str(tmp_path / "labels.npz"))


@pytest.mark.parametrize("spec", ["digits", "data.npz", "inputs.npy", "ints.npy"])
def test_a_range_loads_the_same_samples_as_one_by_one(tmp_path: Path, spec: str) -> None:
    x = np.random.default_rng(2).random((9, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(9) % 4)
    np.save(tmp_path / "inputs.npy", x)
    np.save(tmp_path / "ints.npy", (x * 255).astype(np.uint8))
    source = open_source(spec if spec == "digits" else str(tmp_path / spec))
    part = source.load_range(2, 7)
    assert part is not None and part.x.dtype == torch.float32 and part.labels.dtype == np.int64
    singles = [source.load(i) for i in range(2, 7)]
    assert torch.equal(part.x, torch.stack([s.x for s in singles]))
    assert part.labels.tolist() == [s.label for s in singles] and part.paths == [s.path for s in singles]


def test_datasets_load_one_by_one() -> None:
    source = TorchDatasetSource([(torch.zeros(1, 8, 8), 1)] * 3)
    assert source.load_range(0, 3) is None  # the run loads each item, so that a broken one fails alone


def test_array_file_source_reopens_after_pickling(tmp_path: Path) -> None:
    import pickle

    x = np.random.default_rng(1).random((3, 2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    source = ArraySource(tmp_path / "x.npy")
    copy = pickle.loads(pickle.dumps(source))
    assert copy._x is None  # a Ray worker opens the file itself, it is not shipped
    assert np.array_equal(copy.load(2).x.numpy(), x[2])


class _Items(torch.utils.data.Dataset):
    classes = ("no", "yes")

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> object:
        if index == 1:
            raise KeyError("record 1 is missing")
        if index == 2:
            return np.ones((2, 2), dtype=np.float64)
        return torch.zeros(2, 2), torch.tensor(1)


def test_torch_dataset_items_and_failures() -> None:
    source = as_source(_Items())
    assert isinstance(source, TorchDatasetSource) and source.classes == ["no", "yes"]
    first = source.load(0)
    assert first.label == 1 and first.x.dtype == torch.float32
    with pytest.raises(SampleError, match=r"_Items\[1\]: KeyError: 'record 1 is missing'$"):
        source.load(1)
    assert source.load(2).label == -1 and source.load(2).x.dtype == torch.float32


def test_unknown_spec_lists_the_kinds() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_source("no/such/place")
    message = str(info.value)
    assert message.startswith("source 'no/such/place' is none of the known kinds (digits: ")
    assert "image-folder: a folder of images" in message


class _Constant(Source):
    kind = "constant"

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Sample:
        return Sample(torch.full((1, 8, 8), float(index)), index % 10, f"constant[{index}]")

    def location(self) -> str:
        return f"constant:{self.n}"


def test_registering_a_kind_makes_specs_open_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources_module, "_KINDS", list(sources_module._KINDS))
    register_source(SourceKind("constant", "constant images", lambda s: s.startswith("constant:"),
                               lambda s, p: _Constant(int(s.split(":")[1]))), first=True)  # fmt: skip
    source = open_source("constant:4")
    assert isinstance(source, _Constant) and len(source) == 4 and source.load(2).x.max() == 2.0
    assert source.describe() == {"kind": "constant", "location": "constant:4", "length": 4, "classes": None}
