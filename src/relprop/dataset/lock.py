"""One writer per store: an exclusive lock on a file inside the store.

The lock is a ``flock`` on ``STORE/.relprop-lock``; the kernel drops it when the process
ends, however it ends (SIGKILL included), so a dead run never blocks the next one. The file
holds who took the lock (host, pid, start time) for the messages: it is emptied on a clean
release, so a non-empty file found by the next run that gets the lock names a run that died,
and that run is reported as taken over. File systems without ``flock`` (some network mounts)
fall back to checking the recorded process on this host.

Readers never take the lock; :func:`lock_holder` tells them whether a live run holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import StoreError

__all__ = ["LOCK_FILE", "StoreLock", "lock_holder"]

LOCK_FILE = ".relprop-lock"
# A reader probing the lock holds it (shared) for microseconds; a writer retries this long.
_ACQUIRE_SECONDS = 2.0
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        holder = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?"}
    return holder if isinstance(holder, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """The exclusive write lock of the store at ``store`` (a folder that exists).

    ``acquire`` raises :class:`~relprop.errors.StoreError` when another live run holds it and
    returns a note when it took over the lock of a run that died.
    """

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.path = self.store / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; return a note naming a dead run whose lock was taken over, if any."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(
                f"cannot write to store {self.store} ({exc.strerror}); choose a writable --out location"
            ) from None
        try:
            got = self._flock(fd)
        except BaseException:
            os.close(fd)
            raise
        previous = _read(self.path)
        live = previous and (previous.get("host") != socket.gethostname() or _alive(previous.get("pid")))
        if not got and live:  # no flock here: fall back to the recorded process
            os.close(fd)
            raise self._busy(previous or {})
        self._fd = fd
        self._write_holder()
        if previous:
            return f"took over the lock of a run that stopped without releasing it ({_describe(previous)})"
        return None

    def _flock(self, fd: int) -> bool:
        """Lock ``fd`` exclusively; ``False`` if the file system has no flock; raise if a live run holds it."""
        deadline = time.monotonic() + _ACQUIRE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise self._busy(_read(self.path) or {}) from None
                time.sleep(0.05)
            except OSError as exc:
                if exc.errno in _NO_FLOCK:
                    return False
                raise

    def _busy(self, holder: dict[str, Any]) -> StoreError:
        return StoreError(
            f"store {self.store} is being written by another run ({_describe(holder)}); wait for it to finish or "
            f"choose another --out (if that run is gone on another machine, delete {self.path})"
        )

    def _write_holder(self) -> None:
        assert self._fd is not None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        data = json.dumps(holder).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Empty the lock file (a clean end) and drop the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # a full or read-only disk must not hide the run's own error
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(store: Path) -> dict[str, Any] | None:
    """Who holds the store's write lock (``host``, ``pid``, ``started``), or ``None`` if no live run does."""
    path = Path(store) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path) or {}
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            holder = _read(path)
            same_host = holder is not None and holder.get("host") == socket.gethostname()
            return holder if holder and (not same_host or _alive(holder.get("pid"))) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
