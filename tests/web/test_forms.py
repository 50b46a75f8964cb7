"""Reading uploads: limits while streaming, memory or the app's own temp dir, no client path used."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from relprop.web.forms import FormError, read_multipart


async def _chunks(body: bytes, size: int = 65536) -> Any:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see where a file lives")
def test_large_uploads_spool_into_the_apps_own_temp_dir(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    payload = os.urandom(300_000)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="../../../etc/evil.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    tail = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\nx\r\n--{boundary}--\r\n'
    body = head.encode() + payload + tail.encode()

    async def parse() -> Any:
        return await read_multipart(
            f"multipart/form-data; boundary={boundary}", _chunks(body), max_bytes=10**6, spool_bytes=100_000,
            temp_dir=private,
        )  # fmt: skip

    form = anyio.run(parse)
    upload_part = form.files["image"]
    assert upload_part.size == len(payload) and upload_part.file.read() == payload and form.fields == {"sample": "x"}
    assert upload_part.file._rolled  # type: ignore[attr-defined]  # over spool_bytes: on disk (fileno() would roll it)
    where = os.readlink(f"/proc/self/fd/{upload_part.file.fileno()}")
    assert where.startswith(str(private) + "/"), where  # in the app's dir, under a name tempfile chose
    assert "evil" not in where
    form.close()
    assert list(private.iterdir()) == []


def test_limits_on_fields_files_and_boundary_are_400_or_413(tmp_path: Path) -> None:
    def parse(body: bytes, content_type: str = "multipart/form-data; boundary=b", **limits: Any) -> Any:
        async def run() -> Any:
            return await read_multipart(
                content_type, _chunks(body), max_bytes=limits.get("max_bytes", 10**6), spool_bytes=1000,
                temp_dir=tmp_path, max_field_bytes=16,
            )  # fmt: skip

        return anyio.run(run)

    def part(name: str, value: bytes, filename: str | None = None) -> bytes:
        extra = f'; filename="{filename}"' if filename else ""
        return f'--b\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode() + value + b"\r\n"

    cases = [
        (part("epsilon", b"0.25" * 10) + b"--b--\r\n", {}, 400, "form field 'epsilon' is longer than 16 bytes"),
        (part("image", b"x", "a") + part("image2", b"y", "b") + b"--b--\r\n", {}, 400, "at most 1 file part(s)"),
        (part("image", b"x" * 5000, "a") + b"--b--\r\n", {"max_bytes": 4096}, 413, "upload is larger than"),
    ]
    for body, limits, status, message in cases:
        with pytest.raises(FormError) as caught:
            parse(body, **limits)
        assert (caught.value.status, caught.value.message[: len(message)]) == (status, message)
    small = parse(part("image", b"\x89PNG", "a") + b"--b--\r\n")
    assert small.files["image"].file.read() == b"\x89PNG"
    assert not small.files["image"].file._rolled  # type: ignore[attr-defined]  # small: stays in memory
    with pytest.raises(FormError, match="without a boundary"):
        parse(b"", "multipart/form-data")
    assert list(tmp_path.iterdir()) == []  # nothing left behind by refused uploads


def test_url_encoded_forms_are_held_in_memory_so_they_stay_small() -> None:
    from relprop.web.forms import read_urlencoded

    async def parse(body: bytes) -> Any:
        return await read_urlencoded(_chunks(body, 4096), max_bytes=8 * 2**20)

    assert anyio.run(parse, b"sample=digit-3&epsilon=0.5").fields == {"sample": "digit-3", "epsilon": "0.5"}
    with pytest.raises(FormError) as refused:
        anyio.run(parse, b"sample=" + b"x" * 70_000)
    assert refused.value.status == 413
    assert refused.value.message == (
        "a url-encoded form may have at most 65,536 bytes (text fields only); send an image as multipart/form-data"
    )
