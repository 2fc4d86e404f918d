"""A trained run opened for analysis (config, datalist, network, deterministic part) and the check that an output is current."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from mai_aug.core.devices import resolve_device
from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import LAST_PREFIX, RunLayout
from mai_aug.data.loader import build_dataset
from mai_aug.data.split import load_datalist
from mai_aug.engine.checkpoint import load_checkpoint, load_model_state
from mai_aug.engine.inference import predict_probabilities
from mai_aug.engine.precision import inference_dtype, trained_dtype
from mai_aug.networks.build import build_network
from mai_aug.networks.spec import stored_network
from mai_aug.settings.config import TrainConfig, read_config
from mai_aug.transforms.regimes import Regime, stored_regime
from mai_aug.transforms.shifts import BatchShiftFn

#: ``--cache`` values of runs trained before the image store: both kept decoded images, which the store now does.
LEGACY_CACHE = {"memory": "store", "disk": "store"}


class TrainedRun:
    """A run folder opened for inference: its config, split, regime and network with a checkpoint loaded."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
                 trust: bool | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.layout = RunLayout(self.run_dir)
        raw = read_config(self.run_dir)
        self.config = TrainConfig.from_dict(raw)
        self.names: list[str] = list(raw.get("resolved", {}).get("findings", []))
        self.datalist = load_datalist(self.layout.datalist)
        self.names = self.names or list(self.datalist["labels"])
        self.device = resolve_device(device)
        # the regime as trained, from the spec stored in the run folder: editing a regimes file changes nothing here
        self.regime: Regime = stored_regime(raw, f"`run` {self.run_dir}", trust)
        # autocast as trained: float16 on CUDA, bfloat16 on CPU or CUDA for a CPU-trained run (engine.precision)
        self.amp_dtype = inference_dtype(trained_dtype(raw), self.device)
        self.amp = self.amp_dtype is not None
        self.checkpoint = self.resolve_checkpoint(checkpoint)
        # the network as trained, from the spec stored in the run folder (checked like a user's file unless trusted)
        spec = stored_network(raw, len(self.names), f"`run` {self.run_dir}", trust)
        self.network, _ = build_network(len(self.names), self.config.in_channels, "none", spec,
                                        where=f"`run` {self.run_dir}: network", trust=trust)
        load_model_state(self.network, load_checkpoint(self.checkpoint), self.checkpoint)
        self.network.to(self.device).eval()

    def resolve_checkpoint(self, which: str) -> Path:
        if which == "best":
            path = self.layout.best
        elif which == "last":
            path = self.layout.last or self.layout.checkpoints / f"{LAST_PREFIX}N.pt"
        else:
            path = Path(which)
        if path.is_dir():
            raise MaiAugError(f"`checkpoint` {which}: {path} is a folder; give a checkpoint file (or best, last)")
        if path.exists() and not path.is_file():
            raise MaiAugError(f"`checkpoint` {which}: {path} is not a regular file")
        if not path.is_file():
            raise MaiAugError(f"`checkpoint` {which}: {path} not found (has the run finished an epoch?)")
        return path

    def dataset(self, items: Sequence[dict], train: bool = False, online: bool = True, stored: bool = True) -> Dataset:
        """``items`` as the run's data: read from its image store (``--cache``, ``--cache-dir``), or decoded.

        Args:
            items: datalist-style items; a missing ``label`` becomes all zeros.
            train: apply the regime's random part too.
            online: apply the regime's online part (False: the stored uint8 images).
            stored: False decodes every image (files that are not the run's data, such as ``predict``'s).
        """
        items = [{"image": it["image"], "label": it.get("label", [0] * len(self.names))} for it in items]
        cache = LEGACY_CACHE.get(self.config.cache, self.config.cache) if stored else "none"
        return build_dataset(items, self.regime, train=train, cache=cache,
                             cache_dir=self.config.cache_dir, workers=self.config.threads, progress=False,
                             online=online)

    def predict(self, items: Sequence[dict], batch_size: int | None = None, workers: int = 0,
                stored: bool = True) -> np.ndarray:
        """Sigmoid probabilities (n, findings) for datalist-style items, with the regime's deterministic part."""
        return self.predict_dataset(self.dataset(items, stored=stored), batch_size, workers)

    @torch.no_grad()
    def predict_dataset(self, dataset: Dataset, batch_size: int | None = None, workers: int = 0,
                        shift: BatchShiftFn | None = None) -> np.ndarray:
        """Sigmoid probabilities (n, findings) for a dataset of network-ready items (``image`` as the network takes it).

        ``shift``: a test-time shift of each batch on the run's device (the items then carry their ``index``).
        """
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size * 2, num_workers=workers,
                            pin_memory=self.device.type == "cuda")
        return predict_probabilities(self.network, loader, self.device, self.amp, self.config.in_channels,
                                     len(self.names), amp_dtype=self.amp_dtype, shift=shift)


def checkpoint_identity(path: Path) -> dict[str, str | int]:
    """What names a checkpoint's content: its file name, size and sha256 (``eval/<split>_meta.json``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint": Path(path).name, "size": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def output_current(meta_path: Path, checkpoint: Path, **wanted: Any) -> dict | None:
    """The meta file of an analysis output when it was written from ``checkpoint`` as it is now with the ``wanted``
    settings (each key equal), else None: the one "is this output current" check every analysis uses."""
    try:
        meta = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not Path(checkpoint).is_file():
        return None
    wanted = {**checkpoint_identity(checkpoint), **wanted}
    return meta if all(meta.get(k) == v for k, v in wanted.items()) else None


def evaluated_with(run_dir: Path, split: str, checkpoint: Path, tta: int = 0) -> bool:
    """Whether ``RUN/eval/<split>_*`` were written from ``checkpoint`` as it is now (by its meta file), with
    ``tta`` draws of test-time augmentation where ``tta`` is not 0."""
    return output_current(RunLayout(run_dir).meta(split), checkpoint, split=split,
                          **({"tta": tta} if tta else {})) is not None
