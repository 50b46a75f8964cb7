"""Reading image files for explanation, with one clear message per bad file.

Every file is checked on its own: a missing, unreadable, truncated or enormous file is
reported and skipped, the others are still processed. Grey-level, palette, RGBA and 16-bit
images are converted (RGBA is composited on white), with a note saying so.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "ImageInput", "collect_inputs", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Decompression-bomb guard: the largest image (in pixels) relprop opens.
MAX_PIXELS = 64_000_000


class ImageReadError(ValueError):
    """A file could not be used as an image (the message says why)."""


@dataclass
class ImageInput:
    """A readable image and what was done to it."""

    path: Path
    image: Image.Image
    notes: list[str] = field(default_factory=list)


def collect_inputs(specs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (their images, sorted) and glob patterns.

    Returns the paths in order without duplicates, and ``(spec, message)`` for each spec that
    matched nothing.
    """
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((spec, f"folder {spec} contains no image files ({', '.join(IMAGE_SUFFIXES)})"))
            for q in found:
                add(q)
        elif any(ch in spec for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append((spec, f"pattern {spec} matches no files"))
            for q in matches:
                add(q)
        else:
            add(p)  # existence is checked when reading, so the message comes per file
    return paths, problems


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageInput:
    """Open and fully decode one image, converting it to RGB or L; raise ImageReadError if unusable."""
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    notes: list[str] = []
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(
            f"{path}: image has more than {max_pixels:,} pixels; refusing to decode it (decompression-bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    image, conversion = _normalise_mode(image)
    if conversion:
        notes.append(f"{path.name}: {conversion}")
    return ImageInput(path, image, notes)


def _normalise_mode(image: Image.Image) -> tuple[Image.Image, str | None]:
    mode = image.mode
    if mode in ("RGB", "L"):
        return image, None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L"), f"converted {mode} ({'16' if top > 255 else '32'}-bit) to 8-bit grey"
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(
            (scaled * 255).round().astype(np.uint8), mode="L"
        ), "converted floating-point image to 8-bit grey"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"composited {mode} on white, dropped alpha"
    if mode == "1":
        return image.convert("L"), "converted 1-bit image to grey"
    return image.convert("RGB"), f"converted {mode} to RGB"
