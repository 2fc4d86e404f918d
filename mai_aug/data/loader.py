"""Datasets that decode and resize each image once (the shared image store), then apply the regime's online part."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import Dataset
from monai.transforms import Compose
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from mai_aug.core.choices import CACHE_MODES
from mai_aug.core.errors import MaiAugError
from mai_aug.data.images import NameBadImage
from mai_aug.data.store import ImageStore, RowFile, store_root
from mai_aug.data.store_build import ensure_store
from mai_aug.transforms.regimes import Regime


class IndexedDataset(TorchDataset):
    """Items of ``data`` with their ``index``: a batch's test-time shift seeds each image's noise from it (and TTA
    each batch's draws from its first index), so an image's shifted version does not depend on the worker it is
    loaded in."""

    def __init__(self, data: Sequence) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        return {**self.data[index], "index": index}


class StoreDataset(TorchDataset):
    """Datalist items whose ``image`` is read from an image store: the uint8 tensor the regime's load part gives.

    Each item's row is read from the store's file with one positioned read (:class:`~mai_aug.data.store.RowFile`:
    the file is opened once per process, a loader worker opens its own; nothing is mapped or copied per process).
    """

    def __init__(self, items: Sequence[dict], store: ImageStore) -> None:
        self.items = list(items)
        self.rows = [store.row(item["image"]) for item in self.items]
        self.file = RowFile(store.images_file, store.shape, store.offset)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.items[index])
        item["image"] = torch.from_numpy(self.file.read(self.rows[index]))
        item["label"] = torch.as_tensor(item["label"], dtype=torch.float32)  # as the load part's EnsureTyped
        return item


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
    cache: str = "store",
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
        cache: ``store`` (the shared image store under ``cache_dir``, built if missing: :mod:`mai_aug.data.store`)
            or ``none`` (decode every time).
        cache_dir: the cache root (default ``$MAI_AUG_CACHE``); stores live in its ``images`` folder.
        workers: processes decoding the images when the store is built (0: one per core).
        progress: show the store's build progress.
        online: apply the regime's deterministic and random parts; False: items hold the stored uint8 image
            (the batched stage of :mod:`mai_aug.transforms.batched` runs the rest on the training device).
    """
    if cache == "none":
        load = Compose([NameBadImage(regime.cache_transform())])  # a file that does not decode: one named error
        return Dataset(list(items), transform=Compose([load, regime.online_transform(train)]) if online else load)
    if cache != "store":
        raise MaiAugError(f"`cache` {cache!r}: expected one of {', '.join(CACHE_MODES)}")
    store = ensure_store([item["image"] for item in items], regime, store_root(cache_dir), workers=workers,
                         progress=progress)
    base = StoreDataset(items, store)
    return Dataset(base, transform=regime.online_transform(train)) if online else Dataset(base)
