"""From a picture to a model input: the preprocessing's working size is bounded before it
allocates, and clearly out-of-domain pictures are said to be so."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from relprop.images import ImageReadError
from relprop.models.inputs import domain_caveats, model_input
from relprop.models.loading import DigitsPreprocess, ImagePreprocess, check_working_size, load_model


@pytest.mark.parametrize(
    ("size", "made"),
    [((64, 64), (64, 64)), ((1, 6000), (6000, 6000)), ((300, 20), (300, 300))],
)
def test_digits_preprocessing_works_on_the_padded_square(size: tuple[int, int], made: tuple[int, int]) -> None:
    assert DigitsPreprocess().working_size(size) == (made, "padded to a square")


@pytest.mark.parametrize(
    ("size", "made"),
    [
        ((640, 480), (640, 480)),
        ((100, 50), (512, 256)),
        ((1, 6000), (256, 1_536_000)),
        ((10, 10), (256, 256)),
        ((4000, 3000), (4000, 3000)),
    ],
)
def test_image_preprocessing_works_on_the_resized_picture(size: tuple[int, int], made: tuple[int, int]) -> None:
    assert ImagePreprocess(256, 224, [0.5] * 3, [0.2] * 3).working_size(size)[0] == made


def test_the_uint8_padding_gives_the_same_digits_input_as_float_padding() -> None:
    """The square is padded in bytes now (8× less memory); the model's input is bit for bit what the
    float64 padding gave."""
    import numpy as np

    generator = np.random.default_rng(0)
    for size in ((37, 11), (8, 8), (5, 90), (64, 64)):
        pixels = generator.integers(0, 256, size=size[::-1], dtype=np.uint8)
        image = Image.fromarray(pixels, mode="L")
        grey = pixels.astype(np.float64) / 255.0
        grey = 1.0 - grey if grey.mean() > 0.5 else grey
        side = max(grey.shape)
        square = np.zeros((side, side))
        top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
        square[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
        small = Image.fromarray(np.round(square * 255).astype(np.uint8), mode="L").resize((8, 8), Image.Resampling.BOX)
        expected = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).unsqueeze(0)
        assert torch.equal(DigitsPreprocess()(image), expected)


def test_a_picture_over_the_limit_is_refused_before_preprocessing_runs() -> None:
    calls = []

    def preprocess(image: Image.Image) -> torch.Tensor:
        calls.append(image.size)
        return torch.zeros(1, 8, 8)

    check_working_size(preprocess, (4000, 4000), 16_000_000, "x")  # no working_size: the decoded size counts
    with pytest.raises(ImageReadError, match=r"^x: the model's preprocessing would turn this 4001×4000 picture"):
        check_working_size(preprocess, (4001, 4000), 16_000_000, "x")
    bundle = load_model("digits")
    with pytest.raises(ImageReadError, match=r"into 2,001×2,001 = 4,004,001 pixels \(padded to a square\), more "
                       r"than the limit of 4,000,000"):  # fmt: skip
        model_input(bundle, Image.new("L", (2001, 1)), "thin.png", 4_000_000)
    assert calls == []


def test_caveats_name_colour_scale_and_aspect() -> None:
    bundle = load_model("digits")
    assert domain_caveats(bundle, Image.new("L", (64, 64)), (1, 8, 8)) == []
    assert domain_caveats(bundle, Image.new("RGB", (64, 64), (250, 248, 240)), (1, 8, 8)) == []  # paper, not colour
    assert domain_caveats(bundle, Image.new("RGB", (300, 60), (200, 40, 40)), (1, 8, 8)) == [
        "a colour photo (colourfulness 0.63) given to a model of grey-level pictures",
        "the 300×60 picture is reduced 38× to the model's 1×8×8 grey input",
        "its aspect ratio (5:1) is far from the model's square input",
    ]
    assert domain_caveats(bundle, Image.new("L", (20, 20)), (3, 224, 224)) == [
        "the 20×20 picture is enlarged 11× to the model's 3×224×224 colour input"
    ]
