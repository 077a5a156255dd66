"""Atomic file writes: a reader sees the old file or the new one, never half of either. And the
checks a program makes of a path before the work: that it can write there, or read a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On any exception the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    # mkstemp creates 0600; a model or plot is for everyone the umask allows, like open() gives.
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode())


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> None:
    """Let `writer` fill a temporary file, then move it into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def unwritable(path: Path) -> str | None:
    """Why a write here could not write `path` (None if it can), for a check before the work
    that fills it rather than after: a directory in its place, or a nearest existing ancestor
    (missing directories are created) that is no directory or takes no new file."""
    if path.is_dir():
        return "is a directory"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    try:  # a trial, as access() says yes to root even where nothing can be written (/proc)
        with tempfile.TemporaryFile(dir=parent):  # unnamed (O_TMPFILE): nothing left behind
            pass
    except OSError as exc:
        return f"cannot write in {parent} ({exc.strerror})"
    return None


def unreadable(path: Path) -> str | None:
    """Why `path` is no file this user can read (None if it is one), for a file flag's check
    at start: a directory, nothing there, a pipe or a device (opening one could block, and
    reading it once empties it), or a file without read permission."""
    if path.is_dir():
        return "is a directory"
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a regular file"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    return None
