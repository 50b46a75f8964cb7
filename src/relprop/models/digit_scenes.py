"""A small segmentation network trained on real digits composed into scenes, with its shipped weights.

A *scene* is a 48×48 grey canvas (values in ``[0, 1]``) with three of scikit-learn's 8×8
handwritten digits, each enlarged to 16×16 (bilinear), pasted at random, non-overlapping
positions. Every pixel is labelled: 0 for the background, ``d + 1`` for a pixel of digit ``d``
whose ink is at least :data:`INK_THRESHOLD`. The network (:class:`DigitScenesNet`, a two-level
U-Net with bilinear upsampling and skip connections) returns per-pixel scores
``(N, 11, 48, 48)``. (The digits are enlarged because relevance at the input spreads a pixel
or two beyond the features that carry it — onto the background next to a digit's edge — which
on an 8×8 digit is a quarter of its area.)

``scripts/train_digit_scenes.py`` trains it reproducibly from the training digits of
``scripts/train_digits.py``; the test scenes (:func:`digit_scenes_test_set`) are composed,
with a fixed seed, from the held-out test digits that ship with the package, so no digit of a
test scene was seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .digits import _data_path, digits_test_set

__all__ = [
    "CANVAS",
    "CLASSES",
    "DIGITS_PER_SCENE",
    "DIGIT_SIZE",
    "INK_THRESHOLD",
    "DigitScenesNet",
    "Scene",
    "SceneObject",
    "compose_scenes",
    "digit_scenes_test_set",
    "load_digit_scenes_model",
]

WEIGHTS_FILE = "digit_scenes_segnet.pt"
#: Side of a scene in pixels.
CANVAS = 48
#: Digits per scene.
DIGITS_PER_SCENE = 3
#: Background and the ten digits.
CLASSES = 11
#: A digit pixel belongs to the digit when its ink (pixel value / 16) reaches this.
INK_THRESHOLD = 0.25
#: Seed of the shipped test scenes.
TEST_SEED = 1
#: Side of a digit in a scene (the 8×8 digits enlarged twice).
DIGIT_SIZE = 16


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class DigitScenesNet(nn.Module):
    """Two-level U-Net for digit scenes: ``(N, 1, 48, 48)`` → scores ``(N, 11, 48, 48)``.

    Encoder blocks of two 3×3 convolutions (12, 24, 48 channels) separated by 2×2 max pools;
    the decoder upsamples bilinearly, concatenates the encoder's skip features and applies a
    3×3 convolution; a 1×1 convolution gives the class scores (about 60k parameters).
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _block(1, 12)
        self.enc2 = _block(12, 24)
        self.bottom = _block(24, 48)
        self.dec2 = nn.Sequential(nn.Conv2d(48 + 24, 24, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Sequential(nn.Conv2d(24 + 12, 12, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(12, CLASSES, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.enc1(x)
        b = self.enc2(F.max_pool2d(a, 2))
        c = self.bottom(F.max_pool2d(b, 2))
        up = F.interpolate(c, scale_factor=2.0, mode="bilinear", align_corners=False)
        d = self.dec2(torch.cat([up, b], dim=1))
        up = F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(self.dec1(torch.cat([up, a], dim=1)))


@dataclass(frozen=True)
class SceneObject:
    """One digit of a scene: its class and its 16×16 cell ``(x0, y0, x1, y1)`` (``x1``, ``y1`` exclusive)."""

    digit: int
    box: tuple[int, int, int, int]

    @property
    def label(self) -> int:
        """Its class in the label map and the output channel that scores it (``digit + 1``)."""
        return self.digit + 1

    def cell(self, size: int = CANVAS) -> Tensor:
        """The object's input pixels, ``(size, size)`` boolean."""
        x0, y0, x1, y1 = self.box
        mask = torch.zeros((size, size), dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        return mask


@dataclass(frozen=True)
class Scene:
    """Scenes: ``images`` ``(N, 1, 48, 48)`` in ``[0, 1]``, per-pixel ``labels`` ``(N, 48, 48)``, objects of each."""

    images: Tensor
    labels: Tensor
    objects: list[list[SceneObject]]


def _positions(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` non-overlapping digit cells on the canvas (rejection sampling)."""
    while True:
        corners = [tuple(int(v) for v in rng.integers(0, CANVAS - DIGIT_SIZE + 1, size=2)) for _ in range(count)]
        if all(
            abs(a[0] - b[0]) >= DIGIT_SIZE or abs(a[1] - b[1]) >= DIGIT_SIZE
            for i, a in enumerate(corners)
            for b in corners[i + 1 :]
        ):
            return corners  # type: ignore[return-value]


def compose_scenes(digits: np.ndarray, labels: np.ndarray, count: int, seed: int) -> Scene:
    """``count`` scenes of :data:`DIGITS_PER_SCENE` digits drawn (with a fixed seed) from ``digits``.

    Parameters
    ----------
    digits
        ``(M, 8, 8)`` digit images with values in ``[0, 1]`` (enlarged to :data:`DIGIT_SIZE`).
    labels
        ``(M,)`` their classes.
    count
        Number of scenes.
    seed
        Seed of the draw (digits and positions).
    """
    rng = np.random.default_rng(seed)
    size = (DIGIT_SIZE, DIGIT_SIZE)
    enlarged = F.interpolate(torch.as_tensor(digits, dtype=torch.float32)[:, None], size=size, mode="bilinear")
    digits = enlarged[:, 0].clamp(0.0, 1.0).numpy()
    images = np.zeros((count, 1, CANVAS, CANVAS), dtype=np.float32)
    label_maps = np.zeros((count, CANVAS, CANVAS), dtype=np.int64)
    objects: list[list[SceneObject]] = []
    for n in range(count):
        chosen = rng.choice(len(digits), size=DIGITS_PER_SCENE, replace=False)
        scene_objects = []
        for index, (x0, y0) in zip(chosen, _positions(rng, DIGITS_PER_SCENE), strict=True):
            digit = digits[index]
            images[n, 0, y0 : y0 + DIGIT_SIZE, x0 : x0 + DIGIT_SIZE] = digit
            cell = label_maps[n, y0 : y0 + DIGIT_SIZE, x0 : x0 + DIGIT_SIZE]
            cell[digit >= INK_THRESHOLD] = int(labels[index]) + 1
            scene_objects.append(SceneObject(int(labels[index]), (x0, y0, x0 + DIGIT_SIZE, y0 + DIGIT_SIZE)))
        objects.append(scene_objects)
    return Scene(torch.from_numpy(images), torch.from_numpy(label_maps), objects)


def digit_scenes_test_set(count: int = 100) -> Scene:
    """``count`` test scenes composed from the held-out test digits that ship with the package (seeded)."""
    test = digits_test_set()
    return compose_scenes(test.images[:, 0].numpy(), test.labels.numpy(), count, TEST_SEED)


def load_digit_scenes_model(weights: str | Path | None = None, device: str | torch.device = "cpu") -> DigitScenesNet:
    """The trained :class:`DigitScenesNet` in eval mode (the shipped weights unless ``weights`` names a file)."""
    model = DigitScenesNet()
    path = Path(weights) if weights is not None else _data_path(WEIGHTS_FILE)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().to(device)
