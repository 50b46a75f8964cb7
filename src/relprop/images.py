"""Reading image files for explanation, with one clear message per bad file.

Every file is checked on its own: a missing, unreadable, truncated or enormous file is
reported and skipped, the others are still processed. Grey-level, palette, RGBA and 16-bit
images are converted (RGBA is composited on white), with a note saying so.
"""

from __future__ import annotations

import glob
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "UPLOAD_FORMATS",
    "ImageInput",
    "ImageReadError",
    "InputFiles",
    "collect_inputs",
    "find_inputs",
    "read_image",
    "read_image_bytes",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Decompression-bomb guard: the largest image (in pixels) relprop opens.
MAX_PIXELS = 64_000_000
#: Formats :func:`read_image_bytes` decodes by default: common raster formats whose decoders run in-process.
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")


class ImageReadError(ValueError):
    """A file could not be used as an image (the message says why)."""


@dataclass
class ImageInput:
    """A readable image and what was done to it."""

    path: Path
    image: Image.Image
    notes: list[str] = field(default_factory=list)


@dataclass
class InputFiles:
    """What a command's input arguments name.

    Attributes
    ----------
    paths
        The files, in order, without duplicates.
    problems
        ``(spec, message)`` for each argument that named no file (an error for the user).
    notes
        What the user should know, e.g. sub-folders that were not searched.
    """

    paths: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_inputs(specs: Sequence[str], recursive: bool = False) -> InputFiles:
    """Expand files, folders (their images, sorted) and glob patterns.

    A folder contributes the image files directly in it, or with ``recursive`` also those in
    its sub-folders (hidden ones excepted). Without ``recursive``, sub-folders that were not
    searched are named in a note (or in the error, when the folder itself has no images).
    """
    found = InputFiles()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.paths.append(path)

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            images, skipped = _folder_images(p, recursive)
            unsearched = _unsearched(skipped)
            if not images:
                listed = ", ".join(IMAGE_SUFFIXES)
                found.problems.append((spec, f"folder {spec} contains no image files ({listed}){unsearched}"))
            elif skipped:
                found.notes.append(f"folder {spec}{unsearched}")
            for q in images:
                add(q)
        elif any(ch in spec for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                found.problems.append((spec, f"pattern {spec} matches no files"))
            for q in matches:
                add(q)
        else:
            add(p)  # existence is checked when reading, so the message comes per file
    return found


def _unsearched(folders: list[str]) -> str:
    if not folders:
        return ""
    shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
    return f"; its {len(folders)} sub-folder(s) ({shown}) were not searched: pass --recursive to include them"


def _folder_images(folder: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """The image files of ``folder`` (sorted), and the names of the sub-folders not searched."""
    entries = sorted(folder.iterdir())
    images = [q for q in entries if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
    folders = [q for q in entries if q.is_dir() and not q.name.startswith(".")]
    if not recursive:
        return images, [q.name for q in folders]
    for sub in folders:
        images += _folder_images(sub, True)[0]
    return images, []


def collect_inputs(specs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """:func:`find_inputs` without recursion, as ``(paths, problems)``."""
    found = find_inputs(specs)
    return found.paths, found.problems


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageInput:
    """Open and fully decode one image, converting it to RGB or L; raise ImageReadError if unusable."""
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    with warnings.catch_warnings():
        # PIL warns above its own global limit; ours is checked in _decode and reported as one line.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image, notes = _decode(path, str(path), path.name, max_pixels, formats=None)
    return ImageInput(path, image, notes)


def read_image_bytes(
    data: bytes | BinaryIO,
    label: str = "upload",
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] | None = UPLOAD_FORMATS,
) -> ImageInput:
    """Decode an image held in memory (bytes or a binary file object), like :func:`read_image`.

    Parameters
    ----------
    data
        The encoded image: bytes, or a readable binary file object positioned at its start.
    label
        How messages and notes name the image (never used as a path).
    max_pixels
        Decompression-bomb guard: images with more pixels are refused before decoding.
    formats
        PIL format names to try (default :data:`UPLOAD_FORMATS`, the common raster formats, so
        that an upload never reaches a decoder that runs external programs, such as EPS's);
        ``None`` tries every format PIL knows.
    """
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    image, notes = _decode(source, label, label, max_pixels, formats)
    return ImageInput(Path(label), image, notes)


def _decode(
    source: Path | BinaryIO, label: str, short: str, max_pixels: int, formats: Sequence[str] | None
) -> tuple[Image.Image, list[str]]:
    """Fully decode ``source`` with the bomb guard; messages start with ``label``, notes with ``short``.

    The pixel count is checked from the header, before any pixel data is decoded. No global
    state (PIL's own limit, warning filters) is changed, so threads may decode at the same time.
    """
    notes: list[str] = []
    bomb = ImageReadError(
        f"{label}: image has more than {max_pixels:,} pixels; refusing to decode it (decompression-bomb guard)"
    )
    try:
        with Image.open(source, formats=formats) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise bomb
            opened.load()
            image = opened.copy()
    except Image.DecompressionBombError:  # PIL's own, global limit (a backstop above ours)
        raise bomb from None
    except UnidentifiedImageError:
        kinds = "" if formats is None else f" ({', '.join(formats)})"
        raise ImageReadError(f"{label}: not an image file PIL can read{kinds}") from None
    except ImageReadError:
        raise
    except PermissionError as exc:
        raise ImageReadError(f"{label}: cannot read it ({exc.strerror})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{label}: corrupt or truncated image ({exc})") from None
    image, conversion = _normalise_mode(image)
    if conversion:
        notes.append(f"{short}: {conversion}")
    return image, notes


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
