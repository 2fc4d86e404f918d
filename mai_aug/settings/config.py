"""Every setting of a training run, resolved, and its comparison on ``--resume``."""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.limits import check_limit
from mai_aug.core.user_yaml import dump_yaml, read_user_yaml

# Settings that may change when a run resumes: they do not change what is computed, or extend it.
RESUMABLE = {"resume", "epochs", "workers", "device", "out", "progress", "cache", "cache_dir", "checkpoint_every",
             "verify_images", "skip_bad_images", "metrics"}


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
    dataset: str = "auto"  # nih, chexpert, csv or auto (mai_aug/data/datasets)
    uncertain: str | None = None  # CheXpert's -1 labels: ones, zeros or ignore (None: the adapter's default)
    image_column: str | None = None  # the generic CSV's columns (--dataset csv)
    labels_column: str | None = None
    label_sep: str = "|"
    label_columns: list[str] = field(default_factory=list)
    patient_column: str | None = None
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
    network: str = "densenet121"  # a name of monai.networks.nets (any case) or a _target_ (engine/network_spec.py)
    network_args: dict[str, Any] = field(default_factory=dict)
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
    # validation metrics (stats/scores.py), auc always; a mapping is a user's metric ({_target_: ..., name: ...})
    metrics: list[str | dict[str, Any]] = field(default_factory=lambda: ["auc"])
    # where each setting came from (default, file, preset, cli, compare): not a setting, written under resolved
    sources: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        from mai_aug.networks.spec import canonical_name

        self.network = canonical_name(self.network)  # ResNet18 and resnet18 are one run, one fingerprint

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
    """Write ``config`` and ``extra`` (resolved values: device, regime entry, split sizes) as YAML, atomically."""
    resolved = {**extra, "sources": dict(config.sources)} if config.sources else extra
    write_text_atomic(Path(path), dump_yaml({**config.to_dict(), "resolved": resolved}))


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, checked: a mapping whose TrainConfig keys hold values of their field's type."""
    path = RunLayout(run_dir).config
    if not path.is_file():
        raise MaiAugError(f"--run {run_dir}: no {path.name} (not a mai-aug run folder)")
    raw = read_user_yaml(path, str(path))
    if raw is None:
        raise MaiAugError(f"{path}: empty (not a mai-aug run config)")
    if not isinstance(raw, dict):
        raise MaiAugError(f"{path}: expected a mapping of settings, got {type(raw).__name__} "
                          f"(not a mai-aug run config)")
    for name, kind in _field_types().items():
        if name in raw and not _is_a(raw[name], kind):
            raise MaiAugError(f"{path}: {name}: {raw[name]!r} is not {_type_name(kind)}")
        check_limit(name, raw.get(name), f"{path}: {name}")
    if "out" not in raw:
        raise MaiAugError(f"{path}: the key 'out' is missing (not a mai-aug run config)")
    if not isinstance(raw.get("resolved", {}), dict):
        raise MaiAugError(f"{path}: resolved: expected a mapping, got {type(raw['resolved']).__name__}")
    return raw


@functools.lru_cache(maxsize=1)
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _is_a(value: Any, kind: Any) -> bool:
    """Whether ``value`` (from YAML) fits the type hint ``kind``: ``int``, ``str | None``, ``list[str]``..."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(_is_a(value, k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is dict:
        return isinstance(value, dict)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_is_a(v, item) for v in value)
    if kind is type(None):
        return value is None
    if kind is float:  # YAML writes 1.0 as 1.0 but a user may write 1; bool is an int in Python, never a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return "a list of strings" if typing.get_args(kind) == (str,) else "a list"
    if typing.get_origin(kind) is dict:
        return "a mapping"
    return " or ".join("null" if k is type(None) else k.__name__ for k in typing.get_args(kind) or (kind,))


def config_differences(old: dict[str, Any], new: TrainConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs and may not change on resume."""
    diffs = []
    for key, value in new.to_dict().items():
        if key in RESUMABLE:
            continue
        if key in old and old[key] != value:
            diffs.append(f"{key}: {old[key]!r} -> {value!r}")
    return diffs


def resumed_epochs(old: dict[str, Any], new: TrainConfig, trained: int, begun: int) -> list[int]:
    """The run's ``extended_from_epochs`` once resumed with ``new.epochs``; refuses fewer than ``trained`` epochs.

    Args:
        old: the run's ``config.yaml``.
        new: the resumed run's settings.
        trained: epochs completed by the checkpoint resumed from.
        begun: epochs started (an epoch interrupted at a checkpoint inside it counts).

    Returns:
        The earlier lengths of a run whose ``epochs`` changed after its second epoch began: its cosine schedule
        then mixes two lengths (epoch 1's rate does not depend on the length), so it is not a fresh run's.
    """
    if new.epochs < trained:
        raise MaiAugError(f"--resume {new.out}: --epochs {new.epochs} is fewer than the {trained} epochs "
                          f"already trained")
    history = list((old.get("resolved") or {}).get("extended_from_epochs") or [])
    before = old.get("epochs", new.epochs)
    if before != new.epochs and begun >= 2:
        history.append(before)
    return history
