"""Decoding images from memory (uploads): the same checks as files, without global state."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from relprop.images import ImageReadError, read_image_bytes


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_bytes_and_file_objects_decode_with_conversion_notes() -> None:
    rgba = Image.fromarray(np.full((6, 5, 4), (10, 20, 30, 0), np.uint8), "RGBA")  # fully transparent
    item = read_image_bytes(encoded(rgba), "scan")
    assert item.image.mode == "RGB" and item.image.size == (5, 6)
    assert np.all(np.asarray(item.image) == 255)  # composited on white
    assert item.notes == ["scan: composited RGBA on white, dropped alpha"]
    grey = read_image_bytes(io.BytesIO(encoded(Image.new("L", (3, 3), 7), "JPEG")))
    assert grey.image.mode == "L" and grey.notes == []


def test_only_in_process_raster_formats_are_tried_by_default() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(ImageReadError, match=r"^upload: not an image file PIL can read \(PNG, JPEG, GIF, BMP"):
        read_image_bytes(eps)
    with pytest.raises(ImageReadError, match=r"^upload: corrupt or truncated image"):
        read_image_bytes(encoded(Image.new("RGB", (64, 64)))[:60])


def test_pixel_limit_is_checked_per_call_without_touching_pil_globals() -> None:
    pil_limit = Image.MAX_IMAGE_PIXELS
    png = encoded(Image.new("1", (300, 200)))
    message = r"^big: image has more than 59,999 pixels; refusing to decode it \(decompression-bomb guard\)$"
    with pytest.raises(ImageReadError, match=message):
        read_image_bytes(png, "big", max_pixels=59_999)
    assert read_image_bytes(png, max_pixels=60_000).image.size == (300, 200)
    assert pil_limit == Image.MAX_IMAGE_PIXELS

    # Threads with different limits decode at the same time: each gets its own verdict.
    def decode(limit: int) -> str:
        try:
            read_image_bytes(png, max_pixels=limit)
            return "ok"
        except ImageReadError:
            return "refused"

    limits = [59_999, 60_000] * 50
    with ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(decode, limits))
    assert verdicts == ["refused", "ok"] * 50
