"""Real sample images the page offers besides uploads.

Held-out test digits of the embedded model (one per class, shipped with relprop) and, when
scikit-image is installed (the ``web`` extra), the photographs it bundles. Samples are chosen
by id from this fixed table; an id never becomes a path.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

__all__ = ["Sample", "sample_png", "samples"]

#: scikit-image's bundled photographs shown as samples: (function name, title).
PHOTOS = (
    ("astronaut", "astronaut (Eileen Collins)"),
    ("chelsea", "cat (Chelsea)"),
    ("coffee", "cup of coffee"),
    ("rocket", "rocket launch"),
    ("camera", "cameraman (grey)"),
    ("text", "printed text (for text detectors)"),
)
#: Held-out digit scenes (digit-scenes model) offered as samples.
SCENES = 3
#: Digits are drawn enlarged by this factor; box-averaging them back to 8×8 gives the test values.
DIGIT_SCALE = 8


@dataclass(frozen=True)
class Sample:
    """A bundled image: ``load()`` returns a fresh copy of it as a PIL image (read once, then cached)."""

    id: str
    title: str
    kind: str
    loader: Callable[[], Image.Image]

    def load(self) -> Image.Image:
        return _loaded(self.id).copy()


@cache
def _loaded(sample_id: str) -> Image.Image:
    image = samples()[sample_id].loader()
    image.load()
    return image


def _digit_loader(index: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from ..models.digits import digits_test_set

        pixels = digits_test_set().images[index, 0].numpy()
        grey = Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L")
        return grey.resize((8 * DIGIT_SCALE, 8 * DIGIT_SCALE), Image.Resampling.NEAREST)

    return load


def _scene_loader(index: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from ..models.digit_scenes import digit_scenes_test_set

        pixels = digit_scenes_test_set(SCENES).images[index, 0].numpy()
        return Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L")

    return load


def _photo_loader(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        import skimage.data

        array = np.asarray(getattr(skimage.data, name)())
        return Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")

    return load


@cache
def samples() -> dict[str, Sample]:
    """The available samples by id: ten test digits (one per class), digit scenes, then photographs if available."""
    from ..models.digits import digits_test_set

    test = digits_test_set()
    table: dict[str, Sample] = {}
    labels = test.labels.numpy()
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[0])
        table[f"digit-{digit}"] = Sample(
            f"digit-{digit}", f"test digit {digit} (#{index})", "digit", _digit_loader(index)
        )
    for index in range(SCENES):
        table[f"scene-{index}"] = Sample(
            f"scene-{index}", f"digit scene {index} (held out)", "scene", _scene_loader(index)
        )
    try:
        import skimage.data  # noqa: F401 (optional: the web extra)
    except ImportError:
        return table
    for name, title in PHOTOS:
        table[f"photo-{name}"] = Sample(f"photo-{name}", title, "photo", _photo_loader(name))
    return table


@cache
def sample_png(sample_id: str) -> bytes:
    """The sample as PNG bytes (``KeyError`` for an unknown id)."""
    image = samples()[sample_id].load()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
