"""What every relprop command shares: one-line errors, one writer, one way to stop.

* :class:`UserError` — a mistake in the command's input, printed as ``error: ...`` (exit 2).
* :func:`write_atomic` — the only way commands write files: through a temporary name in the
  same folder, renamed into place; an existing file is kept unless ``force``; an operating-system
  error (read-only or full disk, a path through a file, ``/proc``) is one line naming the file.
* :func:`prepare_output_folder` — create (and prove writable) an output folder before long work.
* :func:`output_names` — unique, stable output names for a run's input files.
* :func:`stopping_quietly` — Ctrl-C, SIGTERM and SIGHUP end a command with status 130, 143 or 129
  and one line, after removing every temporary file a write left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import secrets
import signal
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from types import FrameType
from typing import Any

import click

__all__ = [
    "Interrupted",
    "UserError",
    "load_bundle",
    "model_options",
    "os_error_message",
    "output_names",
    "parse_floats",
    "prepare_output_folder",
    "refuse_overwrite",
    "remove_temporaries",
    "stopping_quietly",
    "write_atomic",
]


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


def os_error_message(path: Path, exc: OSError, action: str = "write") -> str:
    """``cannot write PATH (reason)`` and what to do, for an :class:`OSError` met on ``path``."""
    reason = exc.strerror or type(exc).__name__
    advice = {
        errno.ENOSPC: "free some space or choose another --out folder",
        errno.EDQUOT: "free some space or choose another --out folder",
        errno.EROFS: "the file system is read-only; choose another --out folder",
        errno.EACCES: "you may not write there; choose another --out folder",
        errno.EPERM: "you may not write there; choose another --out folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another --out folder",
        errno.EEXIST: "a part of the path is a file, not a folder; choose another --out folder",
    }.get(exc.errno or 0, "choose another --out folder")
    return f"cannot {action} {path} ({reason}); {advice}"


def prepare_output_folder(folder: Path) -> None:
    """Create ``folder`` (with its parents) and prove that a file can be created in it.

    Called before long work, so that a read-only disk, a path through a file or a folder
    inside ``/proc`` is one line at the start, not a failure after the work.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".relprop-probe-{secrets.token_hex(4)}.tmp"
        _PENDING.add(probe)
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        finally:
            _discard(probe)
    except OSError as exc:
        raise UserError(os_error_message(folder, exc, "write into the folder")) from None


# Temporary files being written, so that an interrupt anywhere (even between creating one and
# the ``finally`` that removes it) can still remove it: see :func:`remove_temporaries`.
_PENDING: set[Path] = set()


def write_atomic(path: Path, write: Callable[[Path], object], force: bool = True) -> None:
    """Write through a temporary file in the same folder and rename it into place.

    An interrupted run leaves no partial file and no temporary one; an existing file is kept
    unless ``force``. The file gets the permissions a plain ``open()`` would give it. An
    :class:`OSError` (full or read-only disk, a path through a file ...) becomes a one-line
    :class:`UserError` naming the file.
    """
    refuse_overwrite([path], force, "--out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(os_error_message(path.parent, exc, "create the folder")) from None
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    _PENDING.add(temporary)  # before it exists: no moment where it exists unrecorded
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, as for open()
        write(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise UserError(os_error_message(path, exc)) from None
    finally:
        _discard(temporary)


def _discard(temporary: Path) -> None:
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)
    _PENDING.discard(temporary)


def remove_temporaries() -> None:
    """Remove every temporary file a write has created and not yet renamed or removed."""
    for temporary in list(_PENDING):
        _discard(temporary)


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output name per input path: unique within the run, and the same whatever else is in it.

    An input whose stem no other input shares is named by its stem (``scans/seven.png`` →
    ``seven``). Inputs whose stems collide — compared as file systems that ignore case and
    Unicode normalisation would compare them (NFC, case-folded) — are all named by their whole
    relative path, folders and suffix included (``a.png`` → ``a.png``, ``x/a.png`` → ``x_a.png``),
    so no name depends on which of them came first; names that would still collide get a
    hash of their full path appended.
    """
    stems = [_visible(path.stem) for path in paths]
    stem_count = Counter(_fold(stem) for stem in stems)
    names = [
        stem if stem_count[_fold(stem)] == 1 else _path_name(path) for path, stem in zip(paths, stems, strict=True)
    ]
    for digits in (8, 64):
        name_count = Counter(_fold(name) for name in names)
        if all(name_count[_fold(name)] == 1 for name in names):
            break
        names = [
            name if name_count[_fold(name)] == 1 else f"{name}-{_digest(path)[:digits]}"
            for path, name in zip(paths, names, strict=True)
        ]
    return names


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _visible(name: str) -> str:
    """The name without leading dots (an output must not be a hidden file), ``input`` if nothing is left."""
    return name.lstrip(".") or "input"


def _path_name(path: Path) -> str:
    pure = PurePath(path)
    parts = [part for part in pure.parts if part not in (pure.anchor, ".", "..")]
    return _visible("_".join(parts))


def _digest(path: Path) -> str:
    return hashlib.sha256(os.fsencode(str(path))).hexdigest()


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like a Ctrl-C so that every ``finally`` block runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def stopping_quietly() -> Iterator[None]:
    """Run a command so that Ctrl-C, SIGTERM and SIGHUP stop it with one line and no temporary files.

    Inside, SIGTERM and SIGHUP raise :class:`Interrupted` (a ``KeyboardInterrupt``) like
    Ctrl-C does; when one escapes, every temporary file is removed, ``interrupted`` (or
    ``terminated by SIGTERM``) is printed and the command exits with ``128 + signal number``
    (130 for Ctrl-C). Signal handlers are only touched in the main thread, and restored after.
    """
    watched = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_interrupted) for s in watched} if main_thread else {}
    try:
        yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        ignored = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            remove_temporaries()  # a second Ctrl-C must not stop the clean-up
        finally:
            if ignored is not None:
                signal.signal(signal.SIGINT, ignored)
        click.echo(
            "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}", err=True
        )
        raise click.exceptions.Exit(128 + int(signum)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def parse_floats(text: str | None, option: str, positive: bool = False) -> list[float] | None:
    """Comma-separated finite numbers (``positive``: each > 0), or ``None`` if the option was not given."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive finite" if positive else "finite"
        raise UserError(f"{option} must be {kind} numbers, got {text!r}")
    return values


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose and feed a model, shared by every command that loads one."""
    options = [
        click.option("--model", "model_spec", default="digits", show_default=True,
                     help="digits, a torchvision name, timm:NAME, a saved model or TorchScript file, "
                     "or package.module:factory."),
        click.option("--weights", default=None, help="State-dict file (or torchvision weights name, e.g. DEFAULT)."),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda."),
        click.option("--input-size", type=click.IntRange(1, 8192), default=None,
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
        std=parse_floats(std, "--std", positive=True),
    )  # fmt: skip
    for note in bundle.notes:
        click.echo(f"note: {note}", err=True)
    return bundle
