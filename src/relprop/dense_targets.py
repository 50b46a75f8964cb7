"""Region targets written as text (command line, web form), and output maps drawn for people.

The command line and the web app name the region of a dense output to explain with a few words:

* ``region:x0,y0,x1,y1`` — a box on the *output map* (whole output pixels, ``x1`` and ``y1``
  exclusive, as :func:`relprop.targets.region` takes it);
* ``region:MASK.png`` — a mask picture: pixels of grey level 128 or more (after conversion to
  grey) are in the region. A mask the size of the output map is used as it is; a mask of another
  size with the same aspect ratio — typically drawn on the picture as the model saw it, which
  is larger than the output map of models that downsample (CRAFT's maps have half its size) —
  is resized to the output map with nearest-neighbour sampling (each output position takes the
  mask pixel nearest its centre), and a note says so; a mask of another aspect ratio is refused;
* ``,channel=K`` (or ``channel=K+L``) after either: explain only output channel(s) ``K``;
  ``,reduce=mean``: the mean instead of the sum over the region;
* ``class:K`` — the pixels a segmentation model predicts as class ``K`` (argmax over channels),
  explained on channel ``K``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import TargetError
from .regions import LAYOUTS, REDUCTIONS, Region, RegionTarget, _Geometry, class_region, region

__all__ = [
    "MASK_LEVEL",
    "FittedMask",
    "WholeMap",
    "class_colour",
    "is_dense_target",
    "output_map_image",
    "parse_dense_target",
    "read_mask",
    "region_record",
]

#: Grey level (0–255) from which a pixel of a mask picture belongs to the region.
MASK_LEVEL = 128
#: Relative difference of aspect ratio up to which a mask is resized to the output map (rounding).
ASPECT_TOLERANCE = 0.05


def is_dense_target(text: str) -> bool:
    """Whether a target text names a region of a dense output (``region:...`` or ``class:...``)."""
    return text.startswith(("region:", "class:"))


class FittedMask(Region):
    """A mask region whose mask is resized (nearest neighbour) to the output map when their sizes differ.

    ``notes`` collects one line per resizing done, for the caller to show.
    """

    def __init__(self, mask: Tensor, source: str, **options: Any) -> None:
        super().__init__("mask", mask, **options)
        self.source = source
        self.notes: list[str] = []

    def _raw_weights(self, output: Tensor, geometry: _Geometry) -> Tensor:
        mask = self.area
        if len(geometry.spatial) != 2:
            raise TargetError(
                f"mask {self.source} is a 2-D picture, but the output {geometry.output_shape} ({geometry.layout}) has "
                f"spatial shape {geometry.spatial}; choose --output-layout so that the output map is 2-D."
            )
        height, width = geometry.spatial
        mask_height, mask_width = mask.shape
        if (mask_height, mask_width) != (height, width):
            ratio = (mask_width / mask_height) / (width / height)
            if abs(ratio - 1.0) > ASPECT_TOLERANCE:
                raise TargetError(
                    f"mask {self.source} is {mask_width}×{mask_height} pixels, which does not fit the output map of "
                    f"{width}×{height}; draw it on the output map (relprop explain writes NAME_output.png) or on the "
                    "model's view of the picture (NAME_overlay.png with --overlay)."
                )
            rows = ((torch.arange(height) + 0.5) * mask_height / height).long().clamp(max=mask_height - 1)
            cols = ((torch.arange(width) + 0.5) * mask_width / width).long().clamp(max=mask_width - 1)
            mask = mask[rows][:, cols]
            note = (
                f"mask {self.source} ({mask_width}×{mask_height}) resized to the output map ({width}×{height}) with "
                "nearest-neighbour sampling"
            )
            if note not in self.notes:
                self.notes.append(note)
        if not bool(mask.any()):
            raise TargetError(
                f"mask {self.source} covers no position of the output map ({width}×{height}) once resized to it; draw "
                "a larger region."
            )
        weights = mask.to(device=output.device, dtype=output.dtype)
        return weights.unsqueeze(0).expand(geometry.output_shape[0], height, width)


class WholeMap(Region):
    """Every position of the output map (a dense model's explanation before a region is chosen)."""

    def __init__(self, **options: Any) -> None:
        super().__init__("whole map", None, **options)

    def _raw_weights(self, output: Tensor, geometry: _Geometry) -> Tensor:
        return torch.ones((geometry.output_shape[0], *geometry.spatial), dtype=output.dtype, device=output.device)


def read_mask(path: Path) -> Tensor:
    """A mask picture as a boolean ``(H, W)`` tensor: grey level ≥ :data:`MASK_LEVEL` is in the region.

    Raises
    ------
    TargetError
        If the file cannot be read as a picture, or no pixel is set.
    """
    from .images import ImageReadError, read_image

    try:
        picture = read_image(path).image
    except ImageReadError as exc:
        raise TargetError(f"the region mask cannot be used: {exc}") from None
    grey = np.asarray(picture.convert("L"))
    mask = torch.from_numpy(grey >= MASK_LEVEL)
    if not bool(mask.any()):
        raise TargetError(
            f"region mask {path} has no pixel of grey level {MASK_LEVEL} or more; draw the region in white on black."
        )
    return mask


def parse_dense_target(text: str, layout: str = "channels_first", option: str = "--target") -> Region:
    """A region target from its text (see the module docstring), for an output with ``layout``.

    Raises
    ------
    TargetError
        Naming the option, the text at fault and the accepted forms.
    """
    if layout not in LAYOUTS:
        raise TargetError(f"output layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    kind, _, rest = text.partition(":")
    if kind == "class":
        try:
            index = int(rest)
        except ValueError:
            raise TargetError(f"{option} {text!r}: class:K needs a class index K, e.g. class:3.") from None
        if index < 0:
            raise TargetError(f"{option} {text!r}: the class index must be 0 or more.")
        return class_region(index, output_layout=layout)
    if kind != "region" or not rest:
        raise TargetError(
            f"{option} {text!r} is not a region; use region:x0,y0,x1,y1, region:MASK.png or class:K (with "
            ",channel=K after a region)."
        )
    parts = rest.split(",")
    options = dict(_option(part, text, option) for part in parts if "=" in part)
    place = [part for part in parts if "=" not in part]
    channel = _channels(options.pop("channel", None), text, option)
    reduce = options.pop("reduce", "sum")
    if reduce not in REDUCTIONS:
        raise TargetError(f"{option} {text!r}: reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}.")
    if options:
        raise TargetError(f"{option} {text!r}: unknown setting {next(iter(options))!r}; use channel=K or reduce=mean.")
    if len(place) == 4:
        return region(box=_box(place, text, option), channel=channel, reduce=reduce, output_layout=layout)
    if len(place) == 1:
        path = Path(place[0])
        return FittedMask(read_mask(path), str(path), channel=channel, reduce=reduce, output_layout=layout)
    raise TargetError(
        f"{option} {text!r}: a region is a box x0,y0,x1,y1 (four whole numbers) or a mask picture, got {len(place)} "
        "values."
    )


def _option(part: str, text: str, option: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    if not value:
        raise TargetError(f"{option} {text!r}: setting {key!r} has no value; e.g. channel=0.")
    return key.strip(), value.strip()


def _channels(value: str | None, text: str, option: str) -> int | tuple[int, ...] | None:
    if value is None:
        return None
    try:
        channels = tuple(int(v) for v in value.split("+"))
    except ValueError:
        raise TargetError(f"{option} {text!r}: channel must be an index (or K+L), got {value!r}.") from None
    if any(c < 0 for c in channels):
        raise TargetError(f"{option} {text!r}: channel indices are 0 or more, got {value!r}.")
    return channels[0] if len(channels) == 1 else channels


def _box(values: list[str], text: str, option: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in values)
    except ValueError:
        raise TargetError(
            f"{option} {text!r}: a box is four whole numbers x0,y0,x1,y1 on the output map (x1, y1 exclusive)."
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise TargetError(f"{option} {text!r}: a box needs x0 < x1 and y0 < y1 (x1, y1 exclusive).")
    return x0, y0, x1, y1


def region_record(target: RegionTarget, sample: int) -> dict[str, Any]:
    """Flat summary fields of a region target for one sample (JSON and CSV)."""
    return {
        "target_kind": target.kind,
        "target_channels": "+".join(map(str, target.channels)),
        "target_area": float(target.area[sample]),
        "target_description": target.describe(sample),
    }


# A fixed palette for class maps: background black, then distinct colours.
_PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
        (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
        (128, 128, 128),
    ],
    dtype=np.uint8,
)  # fmt: skip


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of class ``index`` in :func:`output_map_image` (the palette repeats after 21 classes)."""
    r, g, b = (int(v) for v in _PALETTE[index % len(_PALETTE)])
    return r, g, b


def output_map_image(output: Tensor, layout: str) -> Image.Image:
    """One sample's output map as a picture, one picture pixel per output position.

    More than three channels (class scores): each position coloured by its predicted class
    (argmax; :func:`class_colour`). One to three channels (score maps such as CRAFT's region
    and affinity): channel 0 red, 1 green, 2 blue, each from 0 to its largest value. No
    channels: grey from the smallest to the largest value.
    """
    z = output.detach().float().cpu()
    if layout == "channels_first":
        z = z.movedim(0, -1)
    elif layout == "no_channels":
        z = z.unsqueeze(-1)
    if z.dim() != 3:
        raise TargetError(f"an output map must be 2-D with channels, got shape {tuple(output.shape)} ({layout}).")
    if z.shape[-1] > 3:
        return Image.fromarray(_PALETTE[(z.argmax(-1) % len(_PALETTE)).numpy()], mode="RGB")
    if layout == "no_channels":
        low, high = float(z.min()), float(z.max())
        grey = (z[..., 0] - low) / (high - low if high > low else 1.0)
        return Image.fromarray((grey.numpy() * 255).round().astype(np.uint8), mode="L").convert("RGB")
    rgb = torch.zeros((*z.shape[:2], 3))
    for c in range(z.shape[-1]):
        top = float(z[..., c].max())
        rgb[..., c] = (z[..., c] / top).clamp(0, 1) if top > 0 else 0.0
    return Image.fromarray((rgb.numpy() * 255).round().astype(np.uint8), mode="RGB")
