"""Small helpers shared by the commands: progress lines, files written all-or-nothing, user YAML read safely."""

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

import yaml

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

    The bytes go to a hidden, uniquely named temporary file in the same folder, then are renamed over ``path``
    (a symlink's target, see :func:`output_file`); with ``durable`` the file is fsynced before the rename and the
    folder after it (checkpoints, run records; a recomputable cache entry skips the fsyncs). A failure (disk full,
    I/O error, a read-only folder) removes the temporary file, leaves any previous ``path`` as it was, and becomes
    one :class:`MaiAugError` naming the file.
    """
    path = output_file(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


class _AliasRefused(yaml.YAMLError):
    """An alias met by :class:`_DataOnlyLoader`."""


class _DataOnlyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases: shared anchors (``b: [*a, *a, ...]``) expand exponentially when
    walked, so a 1 KB file could keep a command busy indefinitely."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(f"alias *{event.anchor} at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def load_user_yaml(text: str | bytes, label: str) -> Any:
    """Parse YAML typed by a user (the command line, a file's content): data only, no aliases.

    Raises:
        MaiAugError: one line, ``label: not valid YAML (...)`` or ``label: YAML alias ... is not accepted``.
    """
    try:
        return yaml.load(text, Loader=_DataOnlyLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as e:
        raise MaiAugError(f"{label}: YAML {e} is not accepted (anchors and aliases can expand without bound; "
                          f"write the values out)") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an integer of over 4300 digits
        raise MaiAugError(f"{label}: not valid YAML ({' '.join(str(e).split())})") from None


def read_user_yaml(path: str | Path, label: str) -> Any:
    """Read a user's YAML file (regimes file, preset, settings, a run's ``config.yaml``) with :func:`load_user_yaml`.

    Args:
        path: the file.
        label: what named it, for messages (``--preset mine.yaml``).

    Raises:
        MaiAugError: one line naming ``label``: missing, unreadable, not UTF-8, not valid YAML, or with aliases.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MaiAugError(f"{label}: file not found") from None
    except OSError as e:
        raise MaiAugError(f"{label}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MaiAugError(f"{label}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
    return load_user_yaml(text, label)


class _NoAliasDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing a value shared twice in full instead of as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any, **options: Any) -> str:
    """``data`` as YAML without anchors or aliases, so that :func:`read_user_yaml` reads back what mai_aug wrote."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, **options)
