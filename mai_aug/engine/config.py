"""Every setting of a training run, resolved, and its comparison on ``--resume``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mai_aug.errors import MaiAugError

# Settings that may change when a run resumes: they do not change what is computed, or extend it.
RESUMABLE = {"resume", "epochs", "workers", "device", "out", "progress", "cache", "cache_dir", "checkpoint_every",
             "verify_images", "skip_bad_images"}


@dataclass
class TrainConfig:
    """A run's settings; ``config.yaml`` in the run folder is this, plus the regime's YAML entry."""

    out: str
    regime: str = "basic"
    data: str | None = None
    datalist: str | None = None
    csv: str | None = None
    images: str | None = None
    views: list[str] = field(default_factory=lambda: ["PA", "AP"])
    split: str = "patient"
    val_frac: float = 0.1
    test_frac: float = 0.2
    require_all_images: bool = False
    split_seed: int = 0
    regimes_file: list[str] = field(default_factory=list)
    image_size: int = 320
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    weighted_loss: bool = True
    pretrained: str = "none"
    in_channels: int = 1
    device: str = "auto"
    amp: bool | None = None
    seed: int = 0
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    cache: str = "memory"
    augment_on: str = "auto"  # loader, device or auto: where the regime runs in training (transforms/batched.py)
    cache_dir: str | None = None
    early_stop: int = 0
    checkpoint_every: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard_dir: str | None = None
    hparams: bool = False
    verify_images: bool = False
    skip_bad_images: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out)


def write_config(config: TrainConfig, extra: dict[str, Any], path: Path) -> None:
    """Write ``config`` and ``extra`` (resolved values: device, regime entry, split sizes) as YAML."""
    body = {**config.to_dict(), "resolved": extra}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(body, sort_keys=False))
    tmp.replace(path)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MaiAugError(f"--run {run_dir}: no config.yaml (not a mai-aug run folder)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MaiAugError(f"{path}: not valid YAML ({e})") from None


def config_differences(old: dict[str, Any], new: TrainConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs and may not change on resume."""
    diffs = []
    for key, value in new.to_dict().items():
        if key in RESUMABLE:
            continue
        if key in old and old[key] != value:
            diffs.append(f"{key}: {old[key]!r} -> {value!r}")
    return diffs
