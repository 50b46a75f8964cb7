"""Heatmaps, overlays and contact sheets as PIL images.

Relevance is drawn red for positive, blue for negative and white for zero, on a scale that
is symmetric around zero (the largest magnitude, or a percentile of it, maps to full colour),
so that the colour of a pixel says the sign and the share of its relevance at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "colorbar",
    "grid",
    "heatmap",
    "heatmap_array",
    "overlay",
    "relevance_map",
    "to_image",
]


def relevance_map(relevance: Any) -> np.ndarray:
    """Reduce relevance of one input to a 2-D map: channels are summed, ``(C, H, W)`` → ``(H, W)``."""
    r = (
        relevance.detach().cpu().double().numpy()
        if isinstance(relevance, torch.Tensor)
        else np.asarray(relevance, dtype=np.float64)
    )
    if r.ndim == 3:
        r = r.sum(0)
    if r.ndim != 2:
        raise ValueError(f"relevance must have shape (H, W) or (C, H, W), got {r.shape}.")
    return r


def _scale(r: np.ndarray, clip_percentile: float | None) -> float:
    magnitude = np.abs(r)
    scale = float(np.percentile(magnitude, clip_percentile)) if clip_percentile is not None else float(magnitude.max())
    return scale if scale > 0 else 1.0


def heatmap_array(relevance: Any, clip_percentile: float | None = None) -> np.ndarray:
    """RGB ``uint8`` array of shape ``(H, W, 3)``: red positive, blue negative, white zero.

    Parameters
    ----------
    relevance
        ``(H, W)`` or ``(C, H, W)`` relevance (tensor or array).
    clip_percentile
        Scale by this percentile of ``|R|`` instead of its maximum (e.g. 99.5), so that a few
        extreme pixels do not wash out the rest; larger values saturate.
    """
    r = relevance_map(relevance)
    v = np.clip(r / _scale(r, clip_percentile), -1.0, 1.0)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def heatmap(
    relevance: Any, clip_percentile: float | None = None, size: int | tuple[int, int] | None = None
) -> Image.Image:
    """Heatmap as a PIL image, optionally enlarged (nearest neighbour keeps pixels visible)."""
    image = Image.fromarray(heatmap_array(relevance, clip_percentile), mode="RGB")
    return _resize(image, size)


def _resize(image: Image.Image, size: int | tuple[int, int] | None) -> Image.Image:
    if size is None:
        return image
    if isinstance(size, int):
        w, h = image.size
        factor = size / max(w, h)
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(size, Image.Resampling.NEAREST)


def to_image(x: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Image.Image:
    """Turn a model input ``(C, H, W)`` back into a picture, undoing ``Normalize(mean, std)`` if given.

    Values are clipped to ``[0, 1]``; one channel gives a grey-level image.
    """
    t = (
        x.detach().cpu().double()
        if isinstance(x, torch.Tensor)
        else torch.as_tensor(np.asarray(x), dtype=torch.float64)
    )
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if mean is not None and std is not None:
        t = t * torch.tensor(std, dtype=t.dtype).view(-1, 1, 1) + torch.tensor(mean, dtype=t.dtype).view(-1, 1, 1)
    arr = (t.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L").convert("RGB")
    return Image.fromarray(np.moveaxis(arr[:3], 0, -1), mode="RGB")


def overlay(
    image: Image.Image,
    relevance: Any,
    alpha: float = 0.6,
    clip_percentile: float | None = None,
) -> Image.Image:
    """Heatmap blended over a grey-level copy of the image (both brought to the image's size)."""
    base = image.convert("L").convert("RGB")
    colours = Image.fromarray(heatmap_array(relevance, clip_percentile), mode="RGB").resize(
        base.size, Image.Resampling.NEAREST
    )
    r = relevance_map(relevance)
    weight = np.clip(np.abs(r) / _scale(r, clip_percentile), 0, 1)
    mask = Image.fromarray(np.round(weight * alpha * 255).astype(np.uint8), mode="L").resize(
        base.size, Image.Resampling.NEAREST
    )
    return Image.composite(colours, base, mask)


def colorbar(height: int = 256, width: int = 24, labels: tuple[str, str, str] = ("-max", "0", "+max")) -> Image.Image:
    """A vertical colour bar (top: +max, red; middle: 0, white; bottom: -max, blue) with labels."""
    ramp = np.linspace(1.0, -1.0, height)[:, None] * np.ones((1, width))
    bar = Image.fromarray(heatmap_array(ramp), mode="RGB")
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (width + 48, height + 2), "white")
    canvas.paste(bar, (0, 1))
    draw = ImageDraw.Draw(canvas)
    draw.text((width + 4, 0), labels[2], fill="black", font=font)
    draw.text((width + 4, height // 2 - 6), labels[1], fill="black", font=font)
    draw.text((width + 4, height - 12), labels[0], fill="black", font=font)
    return canvas


def grid(
    cells: Sequence[Sequence[Image.Image]],
    column_titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    cell_size: int = 96,
    padding: int = 4,
) -> Image.Image:
    """Lay images out in rows and columns with titles above the columns and left of the rows."""
    font = ImageFont.load_default()
    n_rows = len(cells)
    n_cols = max(len(row) for row in cells) if cells else 0
    top = 18 if column_titles else 0
    left = 0
    if row_titles:
        left = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in row_titles) + 8
    width = left + n_cols * (cell_size + padding) + padding
    height = top + n_rows * (cell_size + padding) + padding
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if column_titles:
        for j, title in enumerate(column_titles):
            x = left + padding + j * (cell_size + padding)
            draw.text((x, 3), title[: max(4, cell_size // 6)], fill="black", font=font)
    for i, row in enumerate(cells):
        y = top + padding + i * (cell_size + padding)
        if row_titles:
            draw.text((4, y + cell_size // 2 - 6), row_titles[i], fill="black", font=font)
        for j, cell in enumerate(row):
            x = left + padding + j * (cell_size + padding)
            sheet.paste(_fit(cell, cell_size), (x, y))
    return sheet


def _fit(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    factor = size / max(w, h)
    resample = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.LANCZOS
    resized = image.convert("RGB").resize((max(1, round(w * factor)), max(1, round(h * factor))), resample)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas
