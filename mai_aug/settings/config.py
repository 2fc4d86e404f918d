"""Every setting of a training run, resolved, and its comparison on ``--resume``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.user_yaml import dump_yaml, read_user_yaml
from mai_aug.settings.checks import check_value
from mai_aug.settings.schema import FIELDS, Field, dataclass_fields, setting_of
from mai_aug.settings.schema import RESUMABLE as RESUMABLE  # settings that may change when a run resumes


class _TrainConfigMethods:
    """What TrainConfig does beyond holding its fields (those come from :data:`mai_aug.settings.schema.FIELDS`)."""

    # where each setting came from (default, file, preset, cli, compare): not a setting, written under resolved
    sources: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        from mai_aug.networks.spec import canonical_name

        if hasattr(self, "network"):
            self.network = canonical_name(self.network)  # ResNet18 and resnet18 are one run, one fingerprint

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out)


def config_class(fields: Iterable[Field] = FIELDS, name: str = "TrainConfig") -> type:
    """A settings dataclass with one field per :class:`~mai_aug.settings.schema.Field`, in order, with its default."""
    cls = dataclasses.make_dataclass(name, dataclass_fields(fields), bases=(_TrainConfigMethods,))
    cls.__module__ = __name__
    cls.__doc__ = "A run's settings; ``config.yaml`` in the run folder is this, plus the regime's YAML entry."
    return cls


TrainConfig = config_class()


def write_config(config: TrainConfig, extra: dict[str, Any], path: Path) -> None:
    """Write ``config`` and ``extra`` (resolved values: device, regime entry, split sizes) as YAML, atomically."""
    resolved = {**extra, "sources": dict(config.sources)} if config.sources else extra
    write_text_atomic(Path(path), dump_yaml({**config.to_dict(), "resolved": resolved}))


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, checked: a mapping whose TrainConfig keys hold values of their field's type."""
    path = RunLayout(run_dir).config
    if not path.is_file():
        raise MaiAugError(f"`run` {run_dir}: no {path.name} (not a mai-aug run folder)")
    raw = read_user_yaml(path, str(path))
    if raw is None:
        raise MaiAugError(f"{path}: empty (not a mai-aug run config)")
    if not isinstance(raw, dict):
        raise MaiAugError(f"{path}: expected a mapping of settings, got {type(raw).__name__} "
                          f"(not a mai-aug run config)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in raw:
            check_value(setting_of(f), raw[f.name], f"{path}: {f.name}", types_only=True)
    if "out" not in raw:
        raise MaiAugError(f"{path}: the key 'out' is missing (not a mai-aug run config)")
    if not isinstance(raw.get("resolved", {}), dict):
        raise MaiAugError(f"{path}: resolved: expected a mapping, got {type(raw['resolved']).__name__}")
    return raw


def config_differences(old: dict[str, Any], new: Any) -> list[str]:
    """``key: old -> new`` for every setting that differs and may not change on resume."""
    values = new.to_dict()
    fixed = [f.name for f in dataclasses.fields(new) if not setting_of(f).resumable]
    return [f"{key}: {old[key]!r} -> {values[key]!r}" for key in fixed if key in old and old[key] != values[key]]


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
        raise MaiAugError(f"`resume` {new.out}: `epochs` {new.epochs} is fewer than the {trained} epochs "
                          f"already trained")
    history = list((old.get("resolved") or {}).get("extended_from_epochs") or [])
    before = old.get("epochs", new.epochs)
    if before != new.epochs and begun >= 2:
        history.append(before)
    return history
