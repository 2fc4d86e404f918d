"""Build an image store (:mod:`mai_aug.data.store`) once: decode every image in worker processes, then publish it.

Worker processes, not threads: decoding a PNG holds the GIL for part of its time, and a pool of processes that
each write their rows straight into the preallocated file (``os.pwrite``) returns nothing but error lines to the
parent.
On an error or an interrupt the pool is shut down with its queued chunks cancelled and its running ones finished,
so the command exits with its one line (a thread pool left inside torch at exit aborts the process instead).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.core.preflight import require_free_space, require_writable_folder
from mai_aug.core.progress import Progress
from mai_aug.data.images import NameBadImage
from mai_aug.data.store import (
    IMAGES_FILE,
    ROOT_OPTION,
    ImageStore,
    RowFile,
    build_lock,
    default_root,
    find_store,
    identity,
    open_store,
    preallocate,
    say_to_stderr,
    store_group,
    write_index,
)
from mai_aug.transforms.regimes import Regime

#: What one worker process needs, set once by :func:`_start_worker` (inherited through ``fork``, not pickled).
_WORKER: dict[str, Any] = {}


def ensure_store(paths: Sequence[str], regime: Regime, root: str | Path | None = None, workers: int = 0,
                 progress: bool = True, say: Callable[[str], Any] = say_to_stderr) -> ImageStore:
    """A store under ``root`` holding ``paths`` as ``regime`` loads them: an existing one, else built now.

    Args:
        paths: image files (as a datalist names them); repeats are stored once.
        regime: its ``load`` part and size decide what is stored.
        root: the stores' folder (default ``$MAI_AUG_CACHE/images``).
        workers: decoding processes (0: one per core).
        progress: print progress lines with an ETA while building.
        say: where the waiting and built lines go.
    """
    root = Path(root) if root is not None else default_root()
    wanted = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    if not wanted:
        raise MaiAugError("no images to store")
    now = {p: identity(p) for p in wanted}
    group = store_group(regime.load_spec, regime.load_size)
    found = find_store(root, group, wanted, now) if root.is_dir() else None
    if found is not None:
        return found
    require_writable_folder(root, ROOT_OPTION)
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(json.dumps([[p, *now[p]] for p in wanted]).encode()).hexdigest()[:12]
    name = f"{group}-{key}"
    with build_lock(root / f".{name}.lock", say):
        found = find_store(root, group, wanted, now)  # built by the process this one waited for
        if found is not None:
            return found
        return _build(root, name, wanted, [now[p] for p in wanted], regime, workers or default_workers(),
                      progress, say)


def default_workers() -> int:
    """One decoding process per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _build(root: Path, name: str, paths: list[str], identities: list[list[int]], regime: Regime, workers: int,
           progress: bool, say: Callable[[str], Any]) -> ImageStore:
    """Decode ``paths`` into ``root/.name.building``, then rename it to ``root/name`` (readers see all or nothing)."""
    start = time.monotonic()
    building = root / f".{name}.building"
    shutil.rmtree(building, ignore_errors=True)  # an interrupted build's leftovers: restarted (this process holds the lock)
    building.mkdir()
    load = NameBadImage(regime.cache_transform())
    shape = tuple(_decode(load, paths[0]).shape)
    require_free_space(root, len(paths) * int(np.prod(shape)), ROOT_OPTION)
    rows = RowFile(building / IMAGES_FILE, shape, preallocate(building / IMAGES_FILE, (len(paths), *shape), root),
                   write=True)
    say(f"image store: decoding {len(paths)} images at {regime.load_size} px into {root / name} with "
        f"{min(workers, len(paths))} processes (once for every run that uses them)")
    try:
        _decode_all(rows, paths, load, workers, Progress("image store", len(paths)) if progress else None)
        rows.sync()  # the pixels are on the disk before the store is published
    except BaseException:  # a full disk, a bad image, an interrupt: the partial file goes, its blocks are freed
        rows.close()
        shutil.rmtree(building, ignore_errors=True)
        raise
    rows.close()
    write_index(building, paths, identities, shape, regime.load_spec, regime.load_size)
    _remove_damaged(root / name)
    os.rename(building, root / name)
    store = open_store(root / name)
    if store is None:  # pragma: no cover - only a concurrent deletion gets here
        raise MaiAugError(f"{ROOT_OPTION} {root}: the image store {name} could not be read back after writing it")
    say(f"image store: {len(paths)} images, {store.images_file.stat().st_size / 2**20:.1f} MiB, "
        f"in {time.monotonic() - start:.1f} s")
    return store


def _remove_damaged(folder: Path) -> None:
    """A store of this name that was not served (it failed :func:`open_store`'s checks): renamed away, deleted."""
    if folder.exists():
        aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _decode(load: Callable, path: str) -> torch.Tensor:
    """One image as the regime caches it: a uint8 tensor."""
    return load({"image": path, "label": [0]})["image"]


def _decode_all(rows: RowFile, paths: list[str], load: Callable, workers: int, progress: Progress | None) -> None:
    """Fill every row of ``rows``; raise the first bad image's one line after the pool has stopped."""
    chunks = _chunks(len(paths), workers)
    if workers <= 1 or len(chunks) == 1:
        _start_worker(rows, paths, load, threads=None)
        try:
            for done, chunk in enumerate(chunks, 1):
                _raise_first(_decode_chunk(chunk))
                if progress:
                    progress(min(done * len(chunk), len(paths)))
        finally:
            _WORKER.clear()
        return
    _decode_in_processes(rows, paths, load, workers, chunks, progress)


def _decode_in_processes(rows: RowFile, paths: list[str], load: Callable, workers: int, chunks: list[range],
                         progress: Progress | None) -> None:
    """The chunks in ``workers`` forked processes, the first bad image stopping the rest."""
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                               initargs=(rows, paths, load, 1))
    try:
        pending = {pool.submit(_decode_chunk, chunk): len(chunk) for chunk in chunks}
        done = 0
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION, timeout=1.0)
            for future in finished:
                done += pending.pop(future)
                _raise_first(future.result())
            if progress and finished:
                progress(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(count: int, workers: int) -> list[range]:
    """Row ranges small enough to balance ``workers`` and show progress, large enough to cost little to send."""
    size = max(1, min(256, count // max(workers * 8, 1)))
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def _start_worker(rows: RowFile, paths: list[str], load: Callable, threads: int | None) -> None:
    """Keep what decoding needs for this process (and keep torch to ``threads`` threads here)."""
    if threads is not None:
        torch.set_num_threads(threads)
    _WORKER.update(rows=rows, paths=paths, load=load)


def _decode_chunk(rows: range) -> list[tuple[int, str]]:
    """Decode ``rows`` into the array; the rows whose image failed, each with its one-line message."""
    rows_file, paths, load = _WORKER["rows"], _WORKER["paths"], _WORKER["load"]
    shape = rows_file.shape
    bad = []
    for row in rows:
        try:
            image = _decode(load, paths[row])
        except MaiAugError as e:
            bad.append((row, str(e)))
            continue
        if tuple(image.shape) != shape:
            bad.append((row, f"{paths[row]}: decoded to shape {tuple(image.shape)}, the store's images are {shape}"))
            continue
        rows_file.put(row, image.numpy())
    return bad


def _raise_first(bad: list[tuple[int, str]]) -> None:
    if bad:
        raise MaiAugError(first_line(MaiAugError(min(bad)[1])))
