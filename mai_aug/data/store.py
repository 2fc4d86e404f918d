"""One image store per dataset, training size and load spec: every image decoded once, read by every process.

A store is a folder ``ROOT/<size>px-<load hash>-<content hash>/`` under the cache root (``--cache-dir``, else
``$MAI_AUG_CACHE``, else ``~/.cache/mai_aug``) holding two files:

- ``images.npy``: a ``(N, C, H, W)`` uint8 array (the regime's ``load`` part and the rounding to 8 bits, exactly
  what the training pipeline caches), a row read with one positioned read (``os.preadv``) and written with one
  ``os.pwrite``: the OS page cache holds the pixels once for every process and loader worker, nothing is copied
  per process, and no process reads or writes pixels through a memory map (a map counts every page touched in
  the process's resident memory: a process reading 40,000 rows of a 320 px store through one reached 4.4 GB of
  RSS, 521 MB with positioned reads, and a scheduler that polices RSS kills such a job);
- ``index.json``: the images' paths in row order with each file's identity, the array's shape, the load spec.

Why one ``.npy`` and not zarr or LMDB: the images of a store all have one shape, so a flat array is the whole
format; numpy reads it with no extra package, a row is one contiguous slice (one page-cache read), and the file
can be preallocated so a full disk is found before the first image is decoded.

The content identity of an image is its absolute path, byte size and modification time (``st_mtime_ns``), not a
hash: hashing 112,120 NIH PNGs (42 GB) would cost more than decoding them. A store serves any list of images it
holds with unchanged identities, so a learning-curve fraction, another ``--out`` or another study reuses it.

A build writes into ``.<name>.building`` and renames it into place when complete, so readers never see half a
store; an interrupted build leaves that folder, which the next build removes and restarts. Two processes building
the same store take turns on an ``flock``: the second waits, then finds the first one's store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_reason
from mai_aug.core.layout import cache_root

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"
#: The store format: a store written by another version is rebuilt, not misread.
STORE_VERSION = 1
#: The cache root's folder of stores (the phantom cache is its ``phantom`` folder).
STORES_FOLDER = "images"
#: The option that names the cache root in messages.
ROOT_OPTION = "`cache_dir`"


def identity(path: str) -> list[int]:
    """A file's content identity: ``[byte size, st_mtime_ns]`` (see the module docstring for why not a hash)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise MaiAugError(f"{path}: cannot read the image ({e.strerror or e})") from None
    return [int(st.st_size), int(st.st_mtime_ns)]


def store_group(load_spec: Any, image_size: int) -> str:
    """The part of a store's name fixed by what is stored: the size and the ``load`` spec."""
    spec = json.dumps({"load": load_spec, "size": int(image_size), "version": STORE_VERSION},
                      sort_keys=True, default=str)
    return f"{int(image_size)}px-{hashlib.sha1(spec.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class ImageStore:
    """A complete store on disk: its folder, its images' paths (row order) and identities, one image's shape."""

    folder: Path
    paths: list[str]
    identities: list[list[int]]
    shape: tuple[int, ...]
    offset: int  # bytes before the first row (the .npy header)
    rows: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", {p: i for i, p in enumerate(self.paths)})

    @property
    def images_file(self) -> Path:
        return self.folder / IMAGES_FILE

    def row(self, path: str) -> int:
        """The row of image ``path`` (as the datalist names it)."""
        return self.rows[os.path.abspath(path)]

    def holds(self, paths: Sequence[str], now: dict[str, list[int]]) -> bool:
        """Whether every one of ``paths`` (absolute) is here with the identity ``now`` gives it."""
        return all(p in self.rows and self.identities[self.rows[p]] == now[p] for p in paths)


def open_store(folder: Path) -> ImageStore | None:
    """The store in ``folder`` if it is complete and consistent (index, array header and file size agree), else None."""
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
        images = np.load(folder / IMAGES_FILE, mmap_mode="r")
        size = (folder / IMAGES_FILE).stat().st_size
    except (OSError, ValueError, EOFError):  # missing, not JSON, not an .npy, empty
        return None
    shape = tuple(index.get("shape", ()))
    paths = index.get("paths", [])
    if (index.get("version") != STORE_VERSION or images.dtype != np.uint8 or images.shape != (len(paths), *shape)
            or size != images.offset + images.nbytes):
        return None
    return ImageStore(folder, paths, index["identities"], shape, int(images.offset))


def find_store(root: Path, group: str, paths: Sequence[str], now: dict[str, list[int]]) -> ImageStore | None:
    """A complete store of ``group`` under ``root`` that holds all of ``paths`` unchanged, smallest first."""
    candidates = sorted(root.glob(f"{group}-*"), key=lambda f: _size_of(f / IMAGES_FILE))
    for folder in candidates:
        store = open_store(folder)
        if store is not None and store.holds(paths, now):
            return store
    return None


def _size_of(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


@contextlib.contextmanager
def build_lock(path: Path, say: Callable[[str], Any]) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; says whom it waits for when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            say(f"waiting for pid {holder}, which is building the image store {path.stem.lstrip('.')}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class RowFile:
    """Positioned reads and writes of one store array's rows (see the module docstring for why not a memory map).

    The file is opened on first use in each process, so a forked or spawned loader worker opens its own.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], offset: int, write: bool = False) -> None:
        self.path, self.shape, self.offset, self.write = Path(path), tuple(shape), int(offset), write
        self.row_bytes = int(np.prod(self.shape))
        self._fd, self._pid = -1, -1

    def _file(self) -> int:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDWR if self.write else os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, row: int) -> np.ndarray:
        """Row ``row`` as a new (writable) uint8 array of the store's image shape."""
        image, at = np.empty(self.shape, dtype=np.uint8), self.offset + row * self.row_bytes
        if hasattr(os, "preadv"):  # straight into the array
            got = os.preadv(self._file(), [image], at)
        else:  # a platform without preadv: one copy more
            data = os.pread(self._file(), self.row_bytes, at)
            got = len(data)
            image.reshape(-1)[:got] = np.frombuffer(data, np.uint8)
        if got != self.row_bytes:
            raise MaiAugError(f"{self.path}: row {row} is cut short ({got} of {self.row_bytes} bytes): the "
                              f"image store was changed after it was built; delete its folder to rebuild it")
        return image

    def put(self, row: int, image: np.ndarray) -> None:
        """Write ``image`` (the store's shape, uint8) as row ``row``.

        A write cut short goes on from where it stopped: a file system filling up first writes part of a row, and
        the next write then fails with the cause.
        """
        data = memoryview(np.ascontiguousarray(image, dtype=np.uint8).reshape(-1))
        at, done = self.offset + row * self.row_bytes, 0
        while done < len(data):
            try:
                written = os.pwrite(self._file(), data[done:], at + done)
            except OSError as e:  # a file system without fallocate fills up here
                raise MaiAugError(self._write_failure(row, e)) from None
            if written <= 0:  # no progress and no error: stop rather than loop
                raise MaiAugError(f"{self.path}: row {row} of the image store was written short ({done} of "
                                  f"{len(data)} bytes); the disk may be full")
            done += written

    def _write_failure(self, row: int, error: OSError) -> str:
        """The file, the row, the cause, and the bytes the file still lacks (its size less its allocated blocks)."""
        lacking = ""
        if self._pid == os.getpid():  # the file is open: its own figures
            stat = os.fstat(self._fd)
            missing = max(0, stat.st_size - getattr(stat, "st_blocks", 0) * 512)
            lacking = f"; it needs {missing} more bytes, {shutil.disk_usage(self.path.parent).free} free"
        return f"{self.path}: cannot write row {row} of the image store ({write_reason(error)}{lacking})"

    def sync(self) -> None:
        """Flush every process's writes to the file to the disk (before a store is published)."""
        os.fsync(self._file())

    def close(self) -> None:
        if self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = -1, -1

    def __getstate__(self) -> dict:  # another process opens the file itself
        return {**self.__dict__, "_fd": -1, "_pid": -1}

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()


def preallocate(path: Path, shape: tuple[int, ...], root: Path) -> int:
    """Write the store's array header and reserve the file's blocks now (a full disk stops here with the bytes
    needed, not later); return the header's size (the first row's byte offset)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # writes the header only
    offset, needed = int(array.offset), int(array.offset + array.nbytes)
    del array
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, needed)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MaiAugError(f"{ROOT_OPTION} {root}: no space left for the image store ({needed} bytes "
                              f"needed, {shutil.disk_usage(root).free} free)") from None
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: written as it goes
            raise
    finally:
        os.close(fd)
    return offset


def write_index(folder: Path, paths: Sequence[str], identities: Sequence[list[int]], shape: tuple[int, ...],
                load_spec: Any, image_size: int) -> None:
    """``index.json``: the rows' paths and identities, the image shape and what was stored."""
    index = {"version": STORE_VERSION, "paths": list(paths), "identities": list(identities), "shape": list(shape),
             "image_size": int(image_size), "load": load_spec, "identity": "absolute path, byte size, st_mtime_ns"}
    with open(folder / INDEX_FILE, "w") as f:
        json.dump(index, f, default=str)
        f.flush()
        os.fsync(f.fileno())


def default_root() -> Path:
    """Where stores live without ``--cache-dir``: the ``images`` folder of the cache root (``$MAI_AUG_CACHE``)."""
    return cache_root() / STORES_FOLDER


def store_root(cache_dir: str | Path | None) -> Path:
    """The stores' folder of the cache root ``cache_dir`` (``--cache-dir``), else of the default root."""
    return Path(cache_dir) / STORES_FOLDER if cache_dir else default_root()


def say_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
