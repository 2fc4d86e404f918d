"""One train settings object from layers: TrainConfig's defaults, a ``--settings`` YAML file, a preset, the command line.

Defaults are written once, in :data:`mai_aug.settings.schema.FIELDS` (TrainConfig's); every other layer holds only what it
sets (the command line's flags that were given, the file's keys), later layers winning. A file's keys are
TrainConfig's fields, checked strictly (unknown key with the nearest valid name, types, choices, ranges); the
resolved settings and where each came from are written to the run folder's ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.core.user_yaml import read_user_yaml
from mai_aug.settings import schema
from mai_aug.settings.config import TrainConfig

#: Where a value may come from, lowest first (``compare`` marks what the study sets per run: out, regime, seed...).
SOURCES = ("default", "file", "preset", "cli", "compare")
#: TrainConfig fields that only a settings file (or compare) sets: no ``train`` flag for them (from the schema).
FILE_ONLY = schema.FILE_ONLY


def setting_names() -> tuple[str, ...]:
    """TrainConfig's fields, in order: the only keys a settings layer may hold."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def read_settings(path: str | Path) -> dict[str, Any]:
    """A ``--settings`` YAML file's settings, checked (see :func:`mai_aug.settings.presets.check_train_section`).

    Raises:
        MaiAugError: one line naming the file and the key: unreadable, not YAML, unknown key (with the nearest
            valid name), wrong type or value, a ``_target_`` without ``--trust-config``.
    """
    from mai_aug.settings.presets import check_train_section  # the preset checks' tables: one set of rules

    path = Path(path)
    raw = read_user_yaml(path, f"`settings` {path}")
    return check_train_section({} if raw is None else raw, str(path), sep=": ")


def build_train_config(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> TrainConfig:
    """The TrainConfig of TrainConfig's defaults overlaid by ``layers`` in order, with ``sources`` recorded.

    Args:
        layers: ``(source, values)`` pairs, lowest first: ``source`` is one of :data:`SOURCES`; ``values`` holds
            only what that layer sets (paths may be ``Path``).

    Raises:
        MaiAugError: a key that is no TrainConfig field (nothing is dropped silently), or no ``out`` anywhere.
    """
    names = setting_names()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        if source not in SOURCES:
            raise ValueError(f"unknown settings source {source!r} (expected one of {', '.join(SOURCES)})")
        for key, value in layer.items():
            if key not in names:
                raise MaiAugError(f"{source} setting {key!r} is not a TrainConfig field")
            values[key], sources[key] = _plain(value), source
    if values.get("out") is None:
        raise MaiAugError("no run folder: give `out` DIR (or out: in the `settings` file)")
    config = TrainConfig(**values)
    config.sources = {name: sources.get(name, "default") for name in names}
    return config


def _plain(value: Any) -> Any:
    """Paths as strings (YAML and the fingerprint hold strings), in lists too."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
