"""Datasets that decode and resize each image once: an 8-bit cache, then the regime's online transforms."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from monai.data import CacheDataset, Dataset, PersistentDataset

from mai_aug.errors import MaiAugError
from mai_aug.transforms.regimes import Regime

CACHE_MODES = ("memory", "disk", "none")


def cache_key(regime: Regime, image_size: int) -> str:
    """A folder name that changes whenever what is cached (the ``load`` part, the size) changes."""
    spec = json.dumps(regime.load_spec, sort_keys=True, default=str)
    return f"{image_size}px-{hashlib.sha1(spec.encode()).hexdigest()[:10]}"


def build_dataset(
    items: Sequence[dict],
    regime: Regime,
    train: bool,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
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
    """
    if cache == "none":
        return Dataset(list(items), transform=regime.full_transform(train))
    if cache == "memory":
        base: Dataset = CacheDataset(list(items), transform=regime.cache_transform(), num_workers=max(workers, 1),
                                     progress=progress and sys.stderr.isatty(), copy_cache=False)
    elif cache == "disk":
        if cache_dir is None:
            raise MaiAugError("--cache disk needs a cache folder")
        # The deterministic part ends with EnsureTyped, so hits and misses both return tensors.
        folder = Path(cache_dir) / cache_key(regime, int(regime.load_size))
        base = PersistentDataset(list(items), transform=regime.cache_transform(), cache_dir=folder)
    else:
        raise MaiAugError(f"--cache {cache!r}: expected one of {', '.join(CACHE_MODES)}")
    return Dataset(base, transform=regime.online_transform(train))
