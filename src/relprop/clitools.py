"""What every relprop command shares: one-line user errors and writes that never leave half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

__all__ = ["UserError", "refuse_overwrite", "write_atomic"]


class UserError(click.ClickException):
    """A mistake in the command's input: printed as one line ``error: ...``, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def refuse_overwrite(paths: Iterable[Path], force: bool, what: str = "--out folder") -> None:
    """Raise :class:`UserError` for the first path that exists, unless ``force``."""
    if force:
        return
    for path in paths:
        if path.exists():
            raise UserError(f"{path} already exists; pass --force to overwrite it or choose another {what}")


def write_atomic(path: Path, write: Callable[[Path], object], force: bool = True) -> None:
    """Write through a temporary file in the same folder and rename it into place.

    An interrupted run leaves no partial file; an existing file is kept unless ``force``. The
    file gets the permissions a plain ``open()`` would give it (``mkstemp`` makes it private).
    """
    refuse_overwrite([path], force, "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
