"""Datasets that decode and resize each image once: an 8-bit cache, then the regime's online transforms."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path
from pickle import UnpicklingError

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD
from monai.transforms import Compose
from monai.utils import convert_to_tensor, look_up_option
from torch.utils.data import DataLoader
from tqdm import tqdm

from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.core.files import atomic_write
from mai_aug.data.images import NameBadImage
from mai_aug.transforms.regimes import Regime

CACHE_MODES = ("memory", "disk", "none")


def cache_key(regime: Regime, image_size: int) -> str:
    """A folder name that changes whenever what is cached (the ``load`` part, the size) changes."""
    spec = json.dumps(regime.load_spec, sort_keys=True, default=str)
    return f"{image_size}px-{hashlib.sha1(spec.encode()).hexdigest()[:10]}"


class CheckedPersistentDataset(PersistentDataset):
    """MONAI's PersistentDataset with a cache that repairs itself.

    MONAI 1.6 recomputes a cache file only on two errors ("Invalid magic number", UnpicklingError): a zero-byte
    or truncated file (``PytorchStreamReader failed ...``, ``EOFError``) still raises. And it writes each file in
    the system's temporary folder, then ``shutil.move``s it: a copy, not an atomic rename, when the cache is on
    another filesystem. Here any unreadable entry is recomputed with a warning, and each entry is written to a
    temporary file in the cache folder itself and renamed into place (atomic on POSIX and Windows).
    """

    def _cachecheck(self, item_transformed):
        hashfile = self.cache_dir / f"{self.hash_func(item_transformed).decode('utf-8')}{self.transform_hash}.pt"
        if hashfile.is_file():
            try:
                return torch.load(hashfile, weights_only=self.weights_only)
            except (EOFError, RuntimeError, UnpicklingError, ValueError, OSError) as e:
                cause = first_line(e, limit=120)  # EOFError() has no message
                warnings.warn(f"corrupt disk-cache entry {hashfile} ({cause}): recomputing", stacklevel=2)
        item = self._pre_transform(deepcopy(item_transformed))  # keep the original hashed
        self._write_atomically(item, hashfile)
        return item

    def _write_atomically(self, item, hashfile: Path) -> None:
        entry = convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta)
        pickle_module = look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD)
        with contextlib.suppress(MaiAugError):  # a read-only or full cache still trains, uncached
            atomic_write(hashfile, lambda f: torch.save(entry, f, pickle_module=pickle_module,
                                                        pickle_protocol=self.pickle_protocol), durable=False)


class JoinedCacheDataset(CacheDataset):
    """MONAI's CacheDataset whose caching threads are always joined, also when an item fails.

    MONAI 1.6 fills the cache in a ``multiprocessing.pool.ThreadPool`` context: on the first error it
    ``terminate()``s the pool without joining its threads, and a process that then exits while they are still inside
    torch aborts (``terminate called without an active exception``, status 134) instead of printing the error. Here
    the pool is a ``concurrent.futures.ThreadPoolExecutor``: on an error or an interrupt (Ctrl-C, SIGTERM) the items
    not yet started are cancelled and the running ones finish before it propagates.
    """

    def _fill_cache(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        indices = list(range(self.cache_num)) if indices is None else list(indices)
        pool = ThreadPoolExecutor(max_workers=self.num_workers)
        try:
            loaded = pool.map(self._load_cache_item, indices)
            if self.progress:
                loaded = tqdm(loaded, total=len(indices), desc="Loading dataset")
            return list(loaded)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def shutdown_workers(loader: DataLoader) -> None:
    """Stop a loader's worker processes now: a ``persistent_workers`` loader keeps them until it is collected."""
    iterator = getattr(loader, "_iterator", None)
    loader._iterator = None
    shutdown = getattr(iterator, "_shutdown_workers", None)  # a single-process iterator has no workers
    if shutdown is not None:
        shutdown()


def build_dataset(
    items: Sequence[dict],
    regime: Regime,
    train: bool,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
    online: bool = True,
) -> Dataset:
    """A dataset of network-ready items for ``regime``.

    Args:
        items: datalist items (``image`` path, ``label`` list, ...).
        regime: the augmentation regime.
        train: apply the regime's random part.
        cache: ``memory`` (CacheDataset, uint8 at the training size, decoded by ``workers`` threads),
            ``disk`` (PersistentDataset under ``cache_dir``) or ``none`` (decode every time).
        cache_dir: folder for the disk cache.
        workers: threads decoding the images on the first pass (memory cache).
        progress: show the caching progress bar.
        online: apply the regime's deterministic and random parts; False: items hold the cached uint8 image
            (the batched stage of :mod:`mai_aug.transforms.batched` runs the rest on the training device).
    """
    load = Compose([NameBadImage(regime.cache_transform())])  # a file that does not decode: one named error
    if cache == "none":
        return Dataset(list(items), transform=Compose([load, regime.online_transform(train)]) if online else load)
    if cache == "memory":
        base: Dataset = JoinedCacheDataset(list(items), transform=load, num_workers=max(workers, 1),
                                     progress=progress and sys.stderr.isatty(), copy_cache=False)
    elif cache == "disk":
        if cache_dir is None:
            raise MaiAugError("--cache disk needs a cache folder")
        # The deterministic part ends with EnsureTyped, so hits and misses both return tensors.
        folder = Path(cache_dir) / cache_key(regime, int(regime.load_size))
        base = CheckedPersistentDataset(list(items), transform=load, cache_dir=folder)
    else:
        raise MaiAugError(f"--cache {cache!r}: expected one of {', '.join(CACHE_MODES)}")
    return Dataset(base, transform=regime.online_transform(train)) if online else base
