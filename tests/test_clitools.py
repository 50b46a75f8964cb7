"""What every command shares: unique and stable output names, the one writer (atomic, one-line OS
errors, no temporary file left however it stops) and the quiet stop on Ctrl-C and SIGTERM."""

from __future__ import annotations

import errno
import itertools
import os
import signal
import unicodedata
from pathlib import Path

import click
import pytest

from relprop import clitools
from relprop.clitools import (
    UserError,
    output_names,
    prepare_output_folder,
    remove_temporaries,
    stopping_quietly,
    write_atomic,
)


def fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["scans/seven.png", "one.jpg"], ["seven", "one"]),  # unique stems: the stem
        (["a.png", "a.jpg", "a-2.png"], ["a.png", "a.jpg", "a-2"]),  # same stem, other suffix: the whole name
        (["x/a.png", "y/a.png", "b.png"], ["x_a.png", "y_a.png", "b"]),  # same name in sub-folders: the path
        ([f"{NFC}.png", f"{NFD}.jpg"], [f"{NFC}.png", f"{NFD}.jpg"]),  # equal after Unicode normalisation
        ([".hidden.png", "..png"], ["hidden", "input"]),  # never a hidden output file
        (["/abs/dir/a.png", "../up/a.png"], ["abs_dir_a.png", "up_a.png"]),
    ],
)
def test_output_names_are_the_stem_or_the_relative_path(paths: list[str], expected: list[str]) -> None:
    assert output_names([Path(p) for p in paths]) == expected


CASES = [
    ["a.png", "a.jpg", "a-2.png", "a-2.jpg", "a"],
    ["x/a.png", "x_a.png", "x/a.jpg", "y/x_a.png", "x_a.png.png"],
    [f"{NFC}.png", f"{NFD}.png", f"{NFC.upper()}.png", f"sub/{NFC}.png"],
    ["A/b.png", "a/B.png", "a_b.png", "A_B.png"],
]


@pytest.mark.parametrize("paths", CASES)
def test_output_names_are_unique_under_folding_and_do_not_depend_on_order(paths: list[str]) -> None:
    names = dict(zip(paths, output_names([Path(p) for p in paths]), strict=True))
    assert len({fold(n) for n in names.values()}) == len(paths)  # distinct even where the file system folds
    assert all(not n.startswith(".") and "/" not in n for n in names.values())
    for order in itertools.permutations(paths):
        assert dict(zip(order, output_names([Path(p) for p in order]), strict=True)) == names  # stable


def test_names_that_still_collide_get_a_hash_of_their_path() -> None:
    names = output_names([Path("x/a.png"), Path("y/a.png"), Path("x_a.png"), Path("x_a.jpg")])
    # x/a.png and x_a.png both become "x_a.png" by their path: both get a hash of it.
    assert names[1:4:2] == ["y_a.png", "x_a.jpg"]
    assert names[0] != names[2] and all(len(n) == len("x_a.png-") + 8 for n in (names[0], names[2]))
    assert names[0].startswith("x_a.png-") and names[2].startswith("x_a.png-")
    # Names equal only where the file system ignores case are as much a collision.
    upper, lower = output_names([Path("A.png"), Path("a.png")])
    assert upper.startswith("A.png-") and lower.startswith("a.png-") and fold(upper) != fold(lower)


def test_write_atomic_writes_with_open_permissions_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    write_atomic(target, lambda p: p.write_text("hello"))
    assert target.read_text() == "hello" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(UserError, match="already exists; pass --force"):
        write_atomic(target, lambda p: p.write_text("again"), force=False)
    assert target.read_text() == "hello"


@pytest.mark.parametrize("where", ["in the writer", "at the rename"])
def test_an_interrupt_anywhere_in_a_write_leaves_neither_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    target = tmp_path / "result.png"

    def writer(path: Path) -> None:
        path.write_bytes(b"half a file")
        if where == "in the writer":
            raise KeyboardInterrupt

    def interrupted_rename(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    if where == "at the rename":
        monkeypatch.setattr(clitools.os, "replace", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, writer)
    assert list(tmp_path.iterdir()) == [] and not clitools._PENDING


def test_temporaries_of_an_interrupted_clean_up_are_removed_at_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt can also land in the ``finally`` that removes the temporary file: the stop removes it."""
    real_discard = clitools._discard

    def interrupted_discard(temporary: Path) -> None:
        raise KeyboardInterrupt  # a second Ctrl-C, during the clean-up of the first

    def interrupted_write(path: Path) -> None:
        path.write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(clitools, "_discard", interrupted_discard)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "a.npy", interrupted_write)
    monkeypatch.setattr(clitools, "_discard", real_discard)
    leftover = [p.name for p in tmp_path.iterdir()]
    assert len(leftover) == 1 and leftover[0].startswith(".a.npy.") and leftover[0].endswith(".tmp")
    remove_temporaries()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "reason", "advice"),
    [
        (errno.ENOSPC, "No space left on device", "free some space or choose another --out folder"),
        (errno.EROFS, "Read-only file system", "the file system is read-only; choose another --out folder"),
        (errno.EACCES, "Permission denied", "you may not write there; choose another --out folder"),
    ],
)
def test_os_errors_while_writing_are_one_line_naming_the_file(
    tmp_path: Path, code: int, reason: str, advice: str
) -> None:
    def failing(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(code, os.strerror(code))

    target = tmp_path / "heat.png"
    with pytest.raises(UserError) as raised:
        write_atomic(target, failing)
    assert raised.value.format_message() == f"cannot write {target} ({reason}); {advice}"
    assert list(tmp_path.iterdir()) == []


def test_output_folders_that_cannot_be_written_are_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match=r"cannot write into the folder .*file.txt/out \(Not a directory\); a part"):
        prepare_output_folder(tmp_path / "file.txt" / "out")
    if Path("/proc/self").is_dir():
        with pytest.raises(UserError, match=r"cannot write into the folder /proc/relprop-out \("):
            prepare_output_folder(Path("/proc/relprop-out"))
    prepare_output_folder(tmp_path / "new" / "deep")
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # created, and the probe is gone


def test_read_only_folders_are_refused_up_front(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(UserError, match=r"\(Permission denied\); you may not write there"):
        prepare_output_folder(folder)


@pytest.mark.parametrize(("signum", "code", "line"), [(signal.SIGTERM, 143, "terminated by SIGTERM"),
                                                      (signal.SIGHUP, 129, "terminated by SIGHUP")])  # fmt: skip
def test_signals_stop_quietly_and_remove_temporaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int, code: int, line: str
) -> None:
    before = signal.getsignal(signum)
    leftover = tmp_path / ".x.tmp"

    def write(path: Path) -> None:
        leftover.write_text("in progress")
        clitools._PENDING.add(leftover)
        os.kill(os.getpid(), signum)  # arrives here, in the main thread, as an exception

    with pytest.raises(click.exceptions.Exit) as stopped, stopping_quietly():
        write(tmp_path / "x")
    assert stopped.value.exit_code == code
    assert capsys.readouterr().err == f"{line}\n"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signum) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler
