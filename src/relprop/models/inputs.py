"""From a decoded picture to a model's input, as the command line and the web app both do it.

:func:`model_input` checks what preprocessing would cost before it allocates anything
(:func:`~relprop.models.loading.check_working_size`), preprocesses, and says what the user
should know: conversions that were made (:func:`conversion_notes`) and whether the picture is
clearly outside what the model was made for (:func:`domain_caveats`: a colourful photo given to
a grey-level model, a picture reduced or enlarged far more than pictures of its kind would be,
an extreme aspect ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from torch import Tensor

from .loading import ModelBundle, check_working_size

__all__ = ["ModelInput", "conversion_notes", "domain_caveats", "model_input"]

#: Mean colourfulness (max − min over R, G, B, in [0, 1]) above which a picture counts as a colour photo.
#: Photos of ink on paper stay well below (~0.05); scikit-image's photographs lie between 0.16 and 0.42.
COLOURFUL = 0.1
#: A picture whose longer side is this many times the model's counts as reduced far beyond its domain.
MAX_REDUCTION = 32
#: ... and one this many times smaller as enlarged far beyond it.
MAX_ENLARGEMENT = 8
#: Aspect ratios beyond this are padded or cropped so much that the model sees little of the picture.
MAX_ASPECT = 4.0


@dataclass
class ModelInput:
    """A picture as the model will see it, with what the user should know about the way there."""

    tensor: Tensor
    notes: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def conversion_notes(bundle: ModelBundle, image: Image.Image) -> list[str]:
    """Conversions between grey and colour that preprocessing makes for this model."""
    if bundle.channels == 3 and image.mode == "L":
        return ["grey-level image repeated on three channels for an RGB model"]
    if bundle.channels == 1 and image.mode == "RGB" and bundle.name != "digits":  # digits: photos of ink, by design
        return ["colour image converted to grey for a one-channel model"]
    return []


def colourfulness(image: Image.Image) -> float:
    """Mean of max − min over the colour channels, in ``[0, 1]`` (0 for grey pictures).

    Measured on a copy at most 256 pixels wide, so that it costs little for large pictures.
    """
    if image.mode != "RGB":
        return 0.0
    small = image.copy()
    small.thumbnail((256, 256))
    pixels = np.asarray(small, dtype=np.int16)
    return float((pixels.max(2) - pixels.min(2)).mean() / 255.0)


def domain_caveats(bundle: ModelBundle, image: Image.Image, input_shape: Sequence[int]) -> list[str]:
    """Ways in which ``image`` is clearly unlike the pictures the model was made for (empty if none).

    Parameters
    ----------
    bundle
        The model and its preprocessing.
    image
        The decoded picture (RGB or L).
    input_shape
        The model's input ``(C, H, W)`` (what preprocessing produces).
    """
    channels, height, width = (int(v) for v in input_shape[-3:])
    seen = f"{channels}×{height}×{width} {'grey' if channels == 1 else 'colour'} input"
    caveats = []
    colour = colourfulness(image)
    if channels == 1 and colour > COLOURFUL:
        caveats.append(f"a colour photo (colourfulness {colour:.2f}) given to a model of grey-level pictures")
    w, h = image.size
    factor = max(w, h) / max(width, height)
    if factor > MAX_REDUCTION:
        caveats.append(f"the {w}×{h} picture is reduced {factor:.0f}× to the model's {seen}")
    elif factor < 1 / MAX_ENLARGEMENT:
        caveats.append(f"the {w}×{h} picture is enlarged {1 / factor:.0f}× to the model's {seen}")
    aspect = max(w, h) / min(w, h)
    if aspect > MAX_ASPECT:
        caveats.append(f"its aspect ratio ({aspect:.0f}:1) is far from the model's square input")
    return caveats


def model_input(
    bundle: ModelBundle, image: Image.Image, label: str, max_pixels: int, input_shape: Sequence[int] | None = None
) -> ModelInput:
    """Check, preprocess and describe one picture for ``bundle``'s model.

    Parameters
    ----------
    bundle
        The model and its preprocessing.
    image
        The decoded picture.
    label
        How messages name the picture (a file name, ``upload``).
    max_pixels
        The largest picture preprocessing may make (see :func:`~relprop.models.loading.check_working_size`).
    input_shape
        The model's input ``(C, H, W)``; default: the shape preprocessing gives this picture.

    Raises
    ------
    ImageReadError
        If preprocessing would make a picture larger than ``max_pixels``.
    """
    check_working_size(bundle.preprocess, image.size, max_pixels, label)
    tensor = bundle.preprocess(image)
    shape = tuple(input_shape) if input_shape is not None else tuple(tensor.shape)
    return ModelInput(tensor, conversion_notes(bundle, image), domain_caveats(bundle, image, shape))
