"""Permission checks made before any long work starts: a folder or file the command will write must accept it.

Without them a read-only run folder fails at its lock file, an unwritable ``eval/`` after loading the network,
and an unwritable ``predict --out`` after inference has finished, each with an ``OSError`` traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import output_file


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest existing parent (where a missing folder would be created)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_writable_folder(folder: str | Path, option: str) -> None:
    """Raise a one-line error unless ``folder`` (or, while it does not exist, the parent it would go in) takes files.

    The check creates and deletes a temporary file rather than asking ``os.access``: that is what the command
    will do, and it also answers truthfully on read-only mounts, network file systems and ACLs.

    Args:
        folder: the folder the command writes into.
        option: the option that named it, for the message (``--out``, ``--run``).
    """
    folder = Path(folder)
    target = _existing_ancestor(folder)
    if not target.is_dir():
        raise MaiAugError(f"{option} {folder}: cannot write there ({target} is not a folder)")
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as e:
        raise MaiAugError(f"{option} {folder}: cannot write in {target} ({e.strerror or e})") from None


def require_writable_file(path: str | Path, option: str) -> None:
    """Raise a one-line error unless ``path`` can be (over)written: its folder takes files, an existing file is a
    regular file (a symlink's target) and writable.

    Args:
        path: the file the command will write.
        option: the option that named it, for the message.
    """
    path = output_file(path, option)  # a symlink's target; a folder, FIFO or device is refused (never opened)
    require_writable_folder(path.parent, option)
    if path.exists():
        try:
            with open(path, "ab"):  # append mode: opened for writing, nothing changed
                pass
        except OSError as e:
            raise MaiAugError(f"{option} {path}: cannot write ({e.strerror or e})") from None


def require_free_space(folder: str | Path, needed: int, option: str) -> None:
    """Raise a one-line error when the file system of ``folder`` has less than ``needed`` bytes free.

    A full disk found after inference would cost the whole run; where the size of the outputs can be estimated,
    it is found first. (A file system that cannot say how full it is passes.)
    """
    target = _existing_ancestor(Path(folder))
    try:
        free = shutil.disk_usage(target).free
    except OSError:
        return
    if free < needed:
        raise MaiAugError(f"{option} {folder}: no space left on the device ({free // 1024} KiB free in {target}, "
                          f"about {needed // 1024} KiB needed)")
