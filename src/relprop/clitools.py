"""What every relprop command shares: one-line user errors and writes that never leave half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

__all__ = ["UserError", "load_bundle", "model_options", "parse_floats", "refuse_overwrite", "write_atomic"]


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


def write_atomic(path: Path, write: Callable[[Path], None], force: bool = True) -> None:
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


def parse_floats(text: str | None, option: str) -> list[float] | None:
    """Comma-separated numbers given to ``option`` (``None`` stays ``None``)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and feed a model, shared by every command that loads one."""
    options = [
        click.option("--model", "model_spec", default="digits", show_default=True,
                     help="digits, a torchvision name, timm:NAME, a saved model or TorchScript file, "
                     "or package.module:factory."),
        click.option("--weights", default=None, help="State-dict file (or torchvision weights name, e.g. DEFAULT)."),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda."),
        click.option("--input-size", type=int, default=None,
                     help="Input size for models without known preprocessing."),
        click.option("--mean", default=None,
                     help="Normalisation mean, comma-separated (models without known preprocessing)."),
        click.option("--std", default=None, help="Normalisation std, comma-separated."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def load_bundle(
    model_spec: str, weights: str | None, device: str, input_size: int | None, mean: str | None, std: str | None
) -> Any:
    """Load the model a command's options name, and print what the user should know about it."""
    from .models.loading import load_model

    bundle = load_model(
        model_spec, weights, device, input_size=input_size, mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
    )  # fmt: skip
    for note in bundle.notes:
        click.echo(f"note: {note}", err=True)
    return bundle
