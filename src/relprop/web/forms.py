"""Reading a ``multipart/form-data`` upload with hard limits, into memory or the app's temp dir.

The body is counted while it streams in: a request announcing (``Content-Length``) or
sending more than the limit is refused with 413 before more of it is read; one arriving too
slowly (:func:`within_time`) with 408. Text fields are
small and kept in memory; a file part stays in memory up to ``spool_bytes`` and then moves
to an anonymous temporary file inside the app's own temp dir (``tempfile`` names it; nothing
the client sends becomes a path). Everything is released by :meth:`UploadForm.close`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import IO, TYPE_CHECKING, cast

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "FormError",
    "UploadForm",
    "UploadedFile",
    "check_content_length",
    "read_multipart",
    "read_urlencoded",
    "within_time",
]


class FormError(Exception):
    """A request body that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class UploadedFile:
    """One file part: its bytes (memory or the app's temp dir) and what the client said about it."""

    field: str
    filename: str
    content_type: str | None
    file: IO[bytes]
    size: int = 0


@dataclass
class UploadForm:
    """The text fields and file parts of one request."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def close(self) -> None:
        """Free the file parts (a spooled file in the temp dir is deleted)."""
        for upload in self.files.values():
            upload.file.close()


def _limit_message(max_bytes: int) -> str:
    return (
        f"upload is larger than the server's limit of {max_bytes:,} bytes ({max_bytes / 2**20:.3g} MiB); send a "
        "smaller image or start the server with a larger --max-upload-mb"
    )


def check_content_length(header: str | None, max_bytes: int) -> None:
    """Refuse (413) a body whose announced length is over ``max_bytes``, before reading any of it."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise FormError(400, f"Content-Length {header!r} is not a number") from None
    if length > max_bytes:
        raise FormError(413, _limit_message(max_bytes))


async def within_time(body: AsyncIterator[bytes], total: float, idle: float) -> AsyncIterator[bytes]:
    """Pass the pieces of ``body`` on; refuse (408) a body that pauses longer than ``idle`` seconds
    between two pieces or takes longer than ``total`` seconds in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    pieces = body.__aiter__()
    while True:
        remaining = deadline - loop.time()
        try:
            chunk = await asyncio.wait_for(pieces.__anext__(), timeout=max(0.0, min(idle, remaining)))
        except StopAsyncIteration:
            return
        except TimeoutError:
            slow = f"took longer than {total:g} s" if remaining <= idle else f"paused for more than {idle:g} s"
            raise FormError(
                408,
                f"the request body {slow}; the server allows {total:g} s for a whole body and {idle:g} s between "
                "two of its pieces",
            ) from None
        yield chunk


async def read_multipart(
    content_type: str,
    body: AsyncIterator[bytes],
    *,
    max_bytes: int,
    spool_bytes: int,
    temp_dir: Path,
    max_fields: int = 32,
    max_field_bytes: int = 1024,
    max_files: int = 1,
) -> UploadForm:
    """Parse a ``multipart/form-data`` body with limits; raise :class:`FormError` on any violation.

    Parameters
    ----------
    content_type
        The request's ``Content-Type`` header (holds the boundary).
    body
        The body as it arrives, chunk by chunk.
    max_bytes
        Largest body accepted (413 beyond it).
    spool_bytes
        A file part larger than this moves from memory to a temporary file in ``temp_dir``.
    max_fields, max_field_bytes, max_files
        Limits on the text fields and file parts (400 beyond them).
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise FormError(400, "multipart/form-data request without a boundary in its Content-Type")
    limits = _PartLimits(max_fields, max_field_bytes, max_files, spool_bytes, temp_dir)
    collector = _MultipartCollector(limits)
    parser = MultipartParser(boundary, collector.callbacks())
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes:
                raise FormError(413, _limit_message(max_bytes))
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        collector.form.close()
        raise FormError(400, "the multipart/form-data body is malformed") from None
    except BaseException:
        collector.form.close()
        raise
    return collector.form


#: A url-encoded form carries only short text fields; it is held in memory, so it is kept small.
MAX_URLENCODED_BYTES = 64 * 1024


async def read_urlencoded(body: AsyncIterator[bytes], *, max_bytes: int, max_fields: int = 32) -> UploadForm:
    """Parse an ``application/x-www-form-urlencoded`` body (text fields only, e.g. a sample id).

    The body is held in memory, so it may have at most ``min(max_bytes, 64 KiB)``.
    """
    from urllib.parse import parse_qsl

    limit = min(max_bytes, MAX_URLENCODED_BYTES)
    received = bytearray()
    async for chunk in body:
        received += chunk
        if len(received) > limit:
            if limit == max_bytes:
                raise FormError(413, _limit_message(max_bytes))
            raise FormError(
                413,
                f"a url-encoded form may have at most {limit:,} bytes (text fields only); send an image as "
                "multipart/form-data",
            )
    try:
        pairs = parse_qsl(received.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        raise FormError(
            400, f"the form body is not valid UTF-8 url-encoded text with at most {max_fields} fields"
        ) from None
    return UploadForm(fields=dict(pairs))


@dataclass(frozen=True)
class _PartLimits:
    """Limits on the parts of one multipart body, and where large file parts go."""

    max_fields: int
    max_field_bytes: int
    max_files: int
    spool_bytes: int
    temp_dir: Path


class _MultipartCollector:
    """The parser's callbacks: collects text fields and file parts into :attr:`form`, within the limits.

    A part's headers arrive first (name and value in pieces), then its data in pieces; a part
    with a ``filename`` is a file (spooled to the temp dir beyond ``spool_bytes``), any other a
    short text field.
    """

    def __init__(self, limits: _PartLimits) -> None:
        self.limits = limits
        self.form = UploadForm()
        self.on_part_begin()

    def callbacks(self) -> MultipartCallbacks:
        names = ("on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
                 "on_header_end", "on_headers_finished")  # fmt: skip
        return cast("MultipartCallbacks", {name: getattr(self, name) for name in names})

    def on_part_begin(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_name = b""
        self.header_value = b""
        self.name = ""
        self.data = b""
        self.file: UploadedFile | None = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.decode("latin-1").lower()] = self.header_value.decode("latin-1")
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self.headers.get("content-disposition"))
        if b"name" not in disposition:
            raise FormError(400, "a multipart part has no name in its Content-Disposition header")
        self.name = disposition[b"name"].decode("utf-8", "replace")
        if b"filename" in disposition:
            self._begin_file(disposition[b"filename"].decode("utf-8", "replace"))
        elif len(self.form.fields) >= self.limits.max_fields:
            raise FormError(400, f"too many form fields (at most {self.limits.max_fields})")

    def _begin_file(self, filename: str) -> None:
        limits = self.limits
        if len(self.form.files) >= limits.max_files or self.name in self.form.files:
            raise FormError(400, f"at most {limits.max_files} file part(s) are accepted")
        spool = SpooledTemporaryFile(max_size=limits.spool_bytes, dir=str(limits.temp_dir))  # noqa: SIM115 (closed by UploadForm)
        self.file = UploadedFile(self.name, filename, self.headers.get("content-type"), spool)
        self.form.files[self.name] = self.file

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.file is not None:
            self.file.file.write(chunk)
            self.file.size += len(chunk)
            return
        self.data += chunk
        if len(self.data) > self.limits.max_field_bytes:
            raise FormError(
                400, f"form field {self.name!r} is longer than {self.limits.max_field_bytes} bytes", self.name
            )

    def on_part_end(self) -> None:
        if self.file is not None:
            self.file.file.seek(0)
        else:
            self.form.fields[self.name] = self.data.decode("utf-8", "replace")
