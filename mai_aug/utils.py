"""Small helpers shared by the commands: progress lines and files written all-or-nothing."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from mai_aug.errors import MaiAugError


class Progress:
    """Print ``label: done/total (pct) elapsed, ETA`` at most every ``every`` seconds and at the end."""

    def __init__(self, label: str, total: int, every: float = 2.0, stream=None) -> None:
        self.label, self.total, self.every = label, max(int(total), 1), every
        self.start = self.last = time.monotonic()
        self.stream = stream or sys.stderr

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else float("nan")
        print(f"{self.label}: {done}/{total} ({100 * done / total:.0f}%) {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
              file=self.stream, flush=True)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], durable: bool = True) -> None:
    """Write ``path`` through ``write(file)`` so that it is either complete or absent, never partial.

    The bytes go to a hidden temporary file in the same folder, then are renamed over ``path``; with ``durable``
    the file is fsynced before the rename and the folder after it (checkpoints, run records; a recomputable cache
    entry skips the fsyncs). A failure (disk full, I/O error) removes the temporary file, leaves any previous
    ``path`` as it was, and becomes one :class:`MaiAugError` naming the file.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise MaiAugError(f"{path}: cannot write ({write_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would have
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = os_error_of(e)
        if cause is None:
            raise
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise MaiAugError(f"{path}: cannot write ({write_reason(cause)}); {kept}") from None
    if durable:
        _fsync_dir(path.parent)


def os_error_of(error: BaseException) -> OSError | None:
    """``error`` if it is an OSError, else the OSError it wraps: torch's zip writer turns a failed write (disk
    full) into ``RuntimeError: ... unexpected pos``, with the OSError only as its context."""
    if isinstance(error, OSError) or not isinstance(error, RuntimeError):
        return error if isinstance(error, OSError) else None
    seen = error.__cause__ or error.__context__
    for _ in range(10):  # a context chain is short; the bound guards against a cycle
        if seen is None or isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def write_reason(error: OSError) -> str:
    """A failed write's cause in words (``no space left on the device`` for ENOSPC)."""
    return "no space left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`atomic_write` of a text file (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_output(path: Path, text: str) -> None:
    """Write a command's output file: atomically (:func:`atomic_write`) when ``path`` is a regular file or absent;
    directly when it is a device or pipe (``--out /dev/stdout``), which a rename would replace. A failed write
    (disk full: ``/dev/full``) becomes one :class:`MaiAugError` naming the file."""
    path = Path(path)
    if not path.exists() or path.is_file():
        write_text_atomic(path, text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise MaiAugError(f"{path}: cannot write ({write_reason(e)})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
