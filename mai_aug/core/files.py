"""Files written all-or-nothing (a temporary file renamed over the target) and write errors said in one line."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mai_aug.core.errors import MaiAugError

if TYPE_CHECKING:  # pandas and matplotlib are imported by the commands that write tables and figures
    import pandas as pd
    from matplotlib.figure import Figure


TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporary files: ".NAME.<random>.tmp" beside NAME


def temporary_files(path: Path) -> list[Path]:
    """The temporary files :func:`atomic_write` is writing (or a killed process left) for ``path``, not yet renamed."""
    return sorted(Path(path).parent.glob(f".{Path(path).name}.*{TEMPORARY_SUFFIX}"))


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], durable: bool = True) -> None:
    """Write ``path`` through ``write(file)`` so that it is either complete or absent, never partial.

    The bytes go to a hidden, uniquely named temporary file in the same folder, then are renamed over ``path``
    (a symlink's target, see :func:`output_file`); with ``durable`` the file is fsynced before the rename and the
    folder after it (checkpoints, run records; a recomputable cache entry skips the fsyncs). A failure (disk full,
    I/O error, a read-only folder) removes the temporary file, leaves any previous ``path`` as it was, and becomes
    one :class:`MaiAugError` naming the file.
    """
    path = output_file(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would have
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        cause = os_error_of(e)
        if cause is None:
            raise
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise MaiAugError(f"{path}: cannot write ({write_reason(cause)}); {kept}") from None
    if durable:
        _fsync_dir(path.parent)


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def output_file(path: str | Path, label: str | None = None) -> Path:
    """The file to write for ``path``: ``path`` itself, or a symlink's target; refuses anything but a regular file.

    Writing renames a new file over the old one, so a FIFO, a device node (``/dev/null``) or a folder named as
    an output would be replaced (or, opened, would block or swallow the output): they are refused; a symlink
    is followed, so its target is written and the link kept.

    Args:
        path: the output file (it need not exist).
        label: what named it, for the message (``--out``); default: the path alone.

    Raises:
        MaiAugError: ``path`` exists and is not a regular file.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file (a FIFO, socket or device)"
        named = f"{label} {path}" if label else str(path)
        raise MaiAugError(f"{named}: exists and is {kind}; give the name of a regular file to write")
    return target


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
