r"""Region targets: explain the score of a region of a dense output (segmentation, detection maps).

A dense model returns a map: ``(N, C, H, W)`` class scores per pixel (``channels_first``,
torchvision's segmentation models), ``(N, H, W, C)`` (``channels_last``, e.g. CRAFT's region
and affinity maps) or ``(N, H, W)`` (``no_channels``). A region target explains

.. math::

    s = \sum_{p} w_p \sum_{c \in \text{channels}} z_{c,p}
    \qquad\text{or, with reduce="mean",}\qquad
    s = \frac{\sum_p w_p \sum_c z_{c,p}}{|\text{channels}| \sum_p w_p},

the sum (or mean) of the chosen output channels over the region's positions ``p`` with
weights ``w_p`` (1 inside, 0 outside; a soft mask's values in ``[0, 1]``). In the gradient
form of LRP the initial gradient at the output is ``∂s/∂z``, so the initial relevance is
``z ⊙ ∂s/∂z`` and the explained score is exactly the region's score: the ledger closes on it.

Regions are given as a mask (boolean or soft, one for the batch or one per sample), a box
``(x0, y0, x1, y1)`` or a polygon of ``(x, y)`` vertices on the output map (pixel
``(row r, column c)`` covers ``[c, c+1) × [r, r+1)``; a box takes columns ``x0 … x1-1`` and rows
``y0 … y1-1``, a polygon the pixels whose centres ``(c + ½, r + ½)`` lie inside it), or as "the
pixels predicted as class k" (:func:`class_region`). :meth:`Region.complement` is everything but
the region; ``contrast=`` explains the region against its complement (``"rest"``), against
other channels on the same region (an index), or against another region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import TargetError
from .rules import per_sample_sum
from .targets import TargetSpec, TopLayer

__all__ = ["LAYOUTS", "REDUCTIONS", "Region", "RegionTarget", "class_region", "region"]

#: Where the channels of a dense output are.
LAYOUTS = ("channels_first", "channels_last", "no_channels")
#: How a region's outputs are combined into the explained score.
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class RegionTarget:
    """What a region target explained: ``Explanation.target`` for region targets.

    Attributes
    ----------
    kind
        ``"mask"``, ``"box"``, ``"polygon"`` or ``"class"`` (pixels predicted as a class).
    channels
        The explained output channels (all of them when the target named none).
    area
        Per sample: the number of output positions in the region (the sum of the weights of a
        soft mask).
    reduce
        ``"sum"`` or ``"mean"``.
    layout
        ``"channels_first"``, ``"channels_last"`` or ``"no_channels"``.
    complement
        Whether the region is everything but the given area.
    box
        The box ``(x0, y0, x1, y1)`` of a box region (one for the batch), else ``None``.
    class_index
        The class of a class region, else ``None``.
    contrast
        What the region was explained against (``"rest"``, ``"channel 3"``, another region's
        description), or ``None``.
    """

    kind: str
    channels: tuple[int, ...]
    area: Tensor
    reduce: str
    layout: str
    complement: bool = False
    box: tuple[int, int, int, int] | None = None
    class_index: int | None = None
    contrast: str | None = None

    def describe(self, sample: int = 0) -> str:
        """One line for sample ``sample``: kind, channels, area, reduction and contrast."""
        what = {"box": f"box {self.box}", "class": f"pixels predicted as class {self.class_index}"}.get(
            self.kind, self.kind
        )
        if self.complement:
            what = f"everything but the {what}"
        channels = "channel" if len(self.channels) == 1 else "channels"
        text = (
            f"{self.reduce} of {channels} {', '.join(map(str, self.channels))} over {what} "
            f"({_number(float(self.area[sample]))} positions)"
        )
        return text if self.contrast is None else f"{text} against {self.contrast}"

    def to_dict(self, sample: int = 0) -> dict[str, Any]:
        """A JSON-ready description for sample ``sample``."""
        return {
            "kind": self.kind,
            "channels": list(self.channels),
            "area": float(self.area[sample]),
            "reduce": self.reduce,
            "layout": self.layout,
            "complement": self.complement,
            "box": None if self.box is None else list(self.box),
            "class_index": self.class_index,
            "contrast": self.contrast,
        }

    def __str__(self) -> str:
        return self.describe(0)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.4g}"


@dataclass(frozen=True)
class _Geometry:
    """Where a layout keeps the channels of an output, and the spatial shape around them."""

    layout: str
    output_shape: tuple[int, ...]

    @property
    def channel_dim(self) -> int | None:
        return {"channels_first": 1, "channels_last": len(self.output_shape) - 1}.get(self.layout)

    @property
    def channels(self) -> int:
        dim = self.channel_dim
        return 1 if dim is None else self.output_shape[dim]

    @property
    def spatial(self) -> tuple[int, ...]:
        shape = self.output_shape
        if self.layout == "channels_first":
            return shape[2:]
        if self.layout == "channels_last":
            return shape[1:-1]
        return shape[1:]

    def expected(self) -> str:
        """The mask shapes that fit, for error messages."""
        spatial = self.spatial
        return f"{spatial} or {(self.output_shape[0], *spatial)}"

    def spread(self, weights: Tensor, channels: tuple[int, ...]) -> Tensor:
        """Weights ``(N, *spatial)`` placed on ``channels`` of a tensor shaped like the output."""
        if self.channel_dim is None:
            return weights
        moved = torch.zeros((*weights.shape, self.channels), dtype=weights.dtype, device=weights.device)
        moved[..., list(channels)] = weights.unsqueeze(-1)
        if self.layout == "channels_last":
            return moved
        return moved.movedim(-1, 1).contiguous()

    def channel_maps(self, z: Tensor) -> Tensor:
        """The output with channels last, ``(N, *spatial, C)``."""
        if self.layout == "channels_first":
            return z.movedim(1, -1)
        return z


class Region(TargetSpec):
    """A region of a dense output as a target; build it with :func:`region` or :func:`class_region`.

    Accepted as ``target=`` by :func:`relprop.explain`, :class:`relprop.Explainer` and every method.
    """

    def __init__(
        self,
        kind: str,
        area: Any,
        *,
        channel: int | Sequence[int] | None = None,
        reduce: str = "sum",
        output_layout: str = "channels_first",
        complement: bool = False,
        class_index: int | None = None,
        within: Region | None = None,
    ) -> None:
        if reduce not in REDUCTIONS:
            raise TargetError(f"region reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}.")
        if output_layout not in LAYOUTS:
            raise TargetError(f"region output_layout must be one of {', '.join(LAYOUTS)}, got {output_layout!r}.")
        self.kind = kind
        self.area = area
        self.channel = _check_channel_spec(channel)
        self.reduce = reduce
        self.layout = output_layout
        self.inverted = bool(complement)
        self.class_index = class_index
        self.within = within

    def complement(self) -> Region:
        """Everything but this region (same channels, reduction and layout)."""
        return self._copy(inverted=not self.inverted)

    def _copy(self, **changes: Any) -> Region:
        twin = Region.__new__(Region)
        twin.__dict__.update(self.__dict__)
        twin.__dict__.update(changes)
        return twin

    def __repr__(self) -> str:
        inner = {"box": f"box={self.area}", "class": f"class_index={self.class_index}"}.get(self.kind, self.kind)
        flags = f", channel={self.channel}" if self.channel is not None else ""
        flags += ", complement=True" if self.inverted else ""
        return f"Region({inner}{flags}, reduce={self.reduce!r}, output_layout={self.layout!r})"

    # -- the area on a concrete output -----------------------------------------------------------
    def weights(self, output: Tensor) -> Tensor:
        """The region's weights on ``output``'s positions, ``(N, *spatial)``, validated per sample."""
        geometry = self._geometry(output)
        weights = self._raw_weights(output, geometry)
        if self.within is not None:
            weights = weights * self.within.weights(output)
        if self.inverted:
            weights = 1.0 - weights
        empty = (weights.reshape(weights.shape[0], -1) > 0).sum(1) == 0
        if bool(empty.any()):
            sample = int(empty.nonzero()[0])
            raise TargetError(
                f"the region ({self._describe_area()}) covers no output position of sample {sample} in the output map "
                f"{geometry.spatial}; give a region with at least one position inside the map."
            )
        return weights

    def _geometry(self, output: Tensor) -> _Geometry:
        shape = tuple(output.shape)
        minimum = 2 if self.layout == "no_channels" else 3
        if len(shape) < minimum:
            example = {"channels_first": "(N, C, H, W)", "channels_last": "(N, H, W, C)"}.get(self.layout, "(N, H, W)")
            raise TargetError(
                f"a region target needs a dense output such as {example} ({self.layout}), but the model output has "
                f"shape {shape}; select the dense output with output=... or explain a class index."
            )
        return _Geometry(self.layout, shape)

    def _raw_weights(self, output: Tensor, geometry: _Geometry) -> Tensor:
        dtype, device = output.dtype, output.device
        if self.kind == "mask":
            return _mask_weights(self.area, geometry, dtype, device)
        if self.kind == "box":
            return _box_weights(self.area, geometry, dtype, device)
        if self.kind == "polygon":
            return _polygon_weights(self.area, geometry, dtype, device)
        assert self.class_index is not None
        maps = geometry.channel_maps(output.detach())
        return (maps.argmax(-1) == self.class_index).to(device=device, dtype=dtype)

    def _describe_area(self) -> str:
        if self.kind == "box":
            return f"box {self.area}"
        if self.kind == "class":
            return f"pixels predicted as class {self.class_index}"
        return self.kind

    def channels(self, output: Tensor) -> tuple[int, ...]:
        """The explained channels of ``output`` (all when none were given), validated."""
        geometry = self._geometry(output)
        if geometry.channel_dim is None:
            if self.channel is not None:
                raise TargetError(
                    f"region channel {self.channel} was given for an output without channels (no_channels, shape "
                    f"{tuple(output.shape)}); drop channel or choose the output_layout that has them."
                )
            return (0,)
        count = geometry.channels
        chosen = tuple(range(count)) if self.channel is None else self.channel
        for c in chosen:
            if not 0 <= c < count:
                raise TargetError(
                    f"region channel {c} is out of range for an output with {count} channels ({self.layout}, shape "
                    f"{tuple(output.shape)}); valid channels are 0..{count - 1}."
                )
        return chosen

    # -- the initial gradient ----------------------------------------------------------------------
    def gradient(self, output: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """``∂s/∂z`` shaped like ``output``, the area per sample, and the channels."""
        geometry = self._geometry(output)
        channels = self.channels(output)
        weights = self.weights(output)
        area = weights.reshape(weights.shape[0], -1).sum(1)
        if self.reduce == "mean":
            weights = weights / (area * len(channels)).view(-1, *([1] * (weights.dim() - 1)))
        return geometry.spread(weights, channels), area, channels

    def resolve(self, output: Tensor, top: str = "logit", contrast: Any = None) -> TopLayer:
        """The initial gradient, the explained region score and the target description."""
        if top != "logit":
            raise TargetError(
                f"top={top!r} applies to class targets of an (N, C) output; a region target explains its own score, "
                "so drop top."
            )
        z = output.detach()
        grad, area, channels = self.gradient(z)
        against = None
        if contrast is not None:
            other, against = self._contrast(contrast)
            grad = grad - other.gradient(z)[0]
        description = RegionTarget(
            kind=self.kind,
            channels=channels,
            area=area,
            reduce=self.reduce,
            layout=self.layout,
            complement=self.inverted,
            box=_single_box(self.area) if self.kind == "box" else None,
            class_index=self.class_index,
            contrast=against,
        )
        score = per_sample_sum(z * grad)
        return TopLayer(grad, description, score, score)  # type: ignore[arg-type]

    def _contrast(self, contrast: Any) -> tuple[Region, str]:
        if isinstance(contrast, Region):
            return contrast, f"region ({contrast._describe_area()})"
        if contrast == "rest":
            return self.complement(), "the rest of the output"
        if isinstance(contrast, bool) or not isinstance(contrast, (int, Sequence)) or isinstance(contrast, str):
            raise TargetError(
                f"a region's contrast must be 'rest' (its complement), a channel index or a Region, got {contrast!r}."
            )
        channels = _check_channel_spec(contrast)
        return self._copy(channel=channels), f"channel {', '.join(map(str, channels or ()))}"


def _check_channel_spec(channel: Any) -> tuple[int, ...] | None:
    if channel is None:
        return None
    values = [channel] if isinstance(channel, int) and not isinstance(channel, bool) else channel
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TargetError(f"region channel must be an index, a non-empty sequence of indices or None, got {channel!r}.")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in values):
        raise TargetError(f"region channels must be integers, got {channel!r}.")
    if len(set(values)) != len(values):
        raise TargetError(f"region channels must be distinct, got {channel!r}.")
    return tuple(int(c) for c in values)


def _per_sample(weights: Tensor, geometry: _Geometry) -> Tensor:
    """``(spatial)`` or ``(1 | N, spatial)`` weights broadcast to ``(N, *spatial)``."""
    n = geometry.output_shape[0]
    if weights.dim() == len(geometry.spatial):
        weights = weights.unsqueeze(0)
    return weights.expand(n, *geometry.spatial)


# -- masks -------------------------------------------------------------------------------------------
def _mask_weights(mask: Any, geometry: _Geometry, dtype: torch.dtype, device: torch.device) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    except (TypeError, ValueError, RuntimeError):
        raise TargetError(f"a region mask must be a tensor or array, got {type(mask).__name__}.") from None
    spatial, n = geometry.spatial, geometry.output_shape[0]
    shape = tuple(t.shape)
    if shape != spatial and shape not in ((n, *spatial), (1, *spatial)):
        raise TargetError(
            f"the region mask has shape {shape}, which does not fit the output {geometry.output_shape} "
            f"({geometry.layout}); it must be {geometry.expected()}."
        )
    if t.dtype == torch.bool:
        return _per_sample(t.to(device=device, dtype=dtype), geometry)
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TargetError(f"a region mask must be boolean or hold numbers in [0, 1], got dtype {t.dtype}.")
    t = t.to(dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > 1).any()):
        low, high = float(t.min()), float(t.max())
        raise TargetError(
            f"region mask values must lie in [0, 1] (a boolean or soft mask), got values from {low:g} to {high:g}; "
            "to explain another weighting of the outputs pass it as an initial-relevance tensor."
        )
    return _per_sample(t.to(device=device, dtype=dtype), geometry)


def _require_2d(geometry: _Geometry, what: str) -> tuple[int, int]:
    if len(geometry.spatial) != 2:
        raise TargetError(
            f"a {what} region needs a 2-D output map, but the output {geometry.output_shape} ({geometry.layout}) has "
            f"spatial shape {geometry.spatial}; give a mask instead."
        )
    height, width = geometry.spatial
    return height, width


def _is_single_box(box: Any) -> bool:
    return isinstance(box, (Sequence, np.ndarray, Tensor)) and len(box) == 4 and all(np.ndim(v) == 0 for v in box)


def _single_box(box: Any) -> tuple[int, int, int, int] | None:
    """The box as four ints when it is one box for the whole batch, else ``None``."""
    if not _is_single_box(box):
        return None
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0, y0, x1, y1


def _box_weights(box: Any, geometry: _Geometry, dtype: torch.dtype, device: torch.device) -> Tensor:
    height, width = _require_2d(geometry, "box")
    n = geometry.output_shape[0]
    boxes = [box] * n if _is_single_box(box) else list(box)
    if len(boxes) != n or not all(_is_single_box(b) for b in boxes):
        raise TargetError(
            f"a region box must be (x0, y0, x1, y1), or a list of {n} such boxes (one per sample), got {box!r}."
        )
    weights = torch.zeros((n, height, width), dtype=dtype, device=device)
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = (_coordinate(v, box) for v in b)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise TargetError(
                f"region box {tuple(b)} does not lie inside the output map of width {width} and height {height}; "
                f"give 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (x1, y1 exclusive)."
            )
        weights[i, y0:y1, x0:x1] = 1.0
    return weights


def _coordinate(value: Any, box: Any) -> int:
    number = float(value)
    if number != int(number):
        raise TargetError(f"region box {box!r} has a non-integer coordinate {value!r}; boxes are in whole pixels.")
    return int(number)


def _polygon_weights(polygon: Any, geometry: _Geometry, dtype: torch.dtype, device: torch.device) -> Tensor:
    height, width = _require_2d(geometry, "polygon")
    n = geometry.output_shape[0]
    single = _as_vertices(polygon)
    polygons = [single] * n if single is not None else [_as_vertices(p) for p in polygon]
    if len(polygons) != n or any(p is None for p in polygons):
        raise TargetError(
            f"a region polygon must be a sequence of at least 3 (x, y) vertices, or a list of {n} such polygons "
            "(one per sample)."
        )
    rows, cols = np.mgrid[0:height, 0:width]
    centres = (cols + 0.5, rows + 0.5)
    masks = [_inside(p, *centres) for p in polygons]  # type: ignore[arg-type]
    return torch.as_tensor(np.stack(masks)).to(device=device, dtype=dtype)


def _as_vertices(polygon: Any) -> np.ndarray | None:
    try:
        vertices = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 3 or not np.isfinite(vertices).all():
        return None
    return vertices


def _inside(vertices: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule: whether each point ``(x, y)`` lies inside the polygon."""
    inside = np.zeros(x.shape, dtype=bool)
    xj, yj = vertices[-1]
    for xi, yi in vertices:
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < at)
        xj, yj = xi, yi
    return inside


# -- public constructors -------------------------------------------------------------------------------
def region(
    mask: Any = None,
    *,
    box: Any = None,
    polygon: Any = None,
    channel: int | Sequence[int] | None = None,
    reduce: str = "sum",
    output_layout: str = "channels_first",
    complement: bool = False,
) -> Region:
    """A region of a dense output to explain: ``target=relprop.targets.region(...)``.

    Give exactly one of ``mask``, ``box`` and ``polygon`` (in the output map's coordinates).

    Parameters
    ----------
    mask
        Boolean mask, or soft mask with values in ``[0, 1]``, shaped like the output map
        (``(H, W)`` for an ``(N, C, H, W)`` output) for the whole batch, or ``(N, H, W)`` with
        one mask per sample.
    box
        ``(x0, y0, x1, y1)`` in whole output pixels, ``x1`` and ``y1`` exclusive; or a list of
        one box per sample.
    polygon
        A sequence of ``(x, y)`` vertices; the pixels whose centres lie inside (even-odd rule)
        form the region. Or a list of one polygon per sample.
    channel
        The output channel (or channels) to explain; ``None``: all of them.
    reduce
        ``"sum"`` (default) or ``"mean"`` of the chosen outputs over the region.
    output_layout
        ``"channels_first"`` (default, ``(N, C, *spatial)``), ``"channels_last"``
        (``(N, *spatial, C)``) or ``"no_channels"`` (``(N, *spatial)``).
    complement
        Explain everything but the region.

    Examples
    --------
    >>> target = relprop.targets.region(box=(10, 20, 40, 32), channel=0, output_layout="channels_last")
    >>> result = relprop.explain(craft, image, target=target, output=0)
    >>> result.target.describe()
    'sum of channel 0 over box (10, 20, 40, 32) (360 positions)'
    """
    given = [name for name, value in (("mask", mask), ("box", box), ("polygon", polygon)) if value is not None]
    if len(given) != 1:
        raise TargetError(
            f"give exactly one of mask, box and polygon to relprop.targets.region, got {', '.join(given) or 'none'}."
        )
    kind = given[0]
    area = {"mask": mask, "box": box, "polygon": polygon}[kind]
    return Region(kind, area, channel=channel, reduce=reduce, output_layout=output_layout, complement=complement)


def class_region(
    class_index: int,
    *,
    within: Region | None = None,
    reduce: str = "sum",
    output_layout: str = "channels_first",
    complement: bool = False,
) -> Region:
    """The pixels a segmentation model predicts as class ``class_index``, explained on that class's channel.

    The region is where ``argmax`` over the channels equals ``class_index`` (on the explained
    inputs), optionally only inside ``within`` (a :func:`region`, e.g. a box around one object).

    Parameters
    ----------
    class_index
        The class (output channel).
    within
        Restrict the region to the positions of another region (its weights multiply).
    reduce, output_layout, complement
        As for :func:`region`. The complement is the pixels *not* predicted as the class.
    """
    if isinstance(class_index, bool) or not isinstance(class_index, int):
        raise TargetError(f"class_region needs an integer class index, got {class_index!r}.")
    if output_layout == "no_channels":
        raise TargetError("class_region needs an output with class channels; output_layout 'no_channels' has none.")
    if within is not None and not isinstance(within, Region):
        raise TargetError(f"class_region within must be a relprop.targets.region(...), got {type(within).__name__}.")
    return Region(
        "class",
        None,
        channel=class_index,
        reduce=reduce,
        output_layout=output_layout,
        complement=complement,
        class_index=class_index,
        within=None if within is None else within._copy(layout=output_layout),
    )
