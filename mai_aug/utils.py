"""Small helpers shared by the commands: progress lines and files written all-or-nothing."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mai_aug.errors import MaiAugError

if TYPE_CHECKING:  # pandas and matplotlib are imported by the commands that write tables and figures
    import pandas as pd
    from matplotlib.figure import Figure


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would have
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise MaiAugError(f"{path}: cannot write ({reason}); {kept}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`atomic_write` of a text file (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_csv_atomic(frame: pd.DataFrame, path: Path, **options: Any) -> None:
    """``frame.to_csv(path, **options)`` through :func:`atomic_write` (gzip-compressed where ``path`` ends in .gz)."""
    buffer = io.BytesIO()  # rendered first: gzip would name the temporary file in its header
    frame.to_csv(buffer, compression="gzip" if Path(path).suffix == ".gz" else None, **options)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_figure_atomic(figure: Figure, path: Path, **options: Any) -> None:
    """``figure.savefig(path, **options)`` through :func:`atomic_write`, in the format of ``path``'s suffix."""
    atomic_write(path, lambda f: figure.savefig(f, format=Path(path).suffix.lstrip("."), **options))


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
