"""Strict checking of preset YAML: known keys only (with the nearest valid name suggested), right types, sane ranges.

A preset is data typed by hand, so a typo (``epoch: 1``) or a quoted number (``image_size: "32"``) must stop the
command with one line instead of being dropped or failing deep inside training.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable
from typing import Any

from mai_aug.data.phantom import PhantomSpec
from mai_aug.engine.config import TrainConfig
from mai_aug.engine.network_spec import lookup_network, network_fields
from mai_aug.errors import MaiAugError
from mai_aug.stats.auc import MIN_BOOTSTRAP

SECTIONS = ("description", "phantom", "data", "regimes", "train", "bootstrap")
DATA_KEYS: dict[str, Any] = {"split": str, "val_frac": float, "test_frac": float, "seed": int, "images": str}
# TrainConfig fields a preset may set: not the run's identity (out, regime, data source) nor per-invocation switches.
NOT_IN_PRESET = {"out", "regime", "data", "datalist", "csv", "images", "resume", "progress", "tensorboard_dir", "hparams",
                 "regimes_file", "device",
                 # the split belongs to the preset's `data:` section, which compare applies once for all runs
                 "split", "val_frac", "test_frac", "views", "split_seed", "require_all_images", "cache_dir"}
CHOICES = {"split": ("patient", "official"), "cache": ("memory", "disk", "none"), "test_shift": ("none", "site"),
           "in_channels": (1, 3), "augment_on": ("auto", "loader", "device")}


def _at_least(low: float, strict: bool = False) -> Callable[[float], bool]:
    return lambda v: v > low if strict else v >= low


RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "epochs": (_at_least(1), "at least 1"), "batch_size": (_at_least(1), "at least 1"),
    "steps_per_epoch": (_at_least(1), "at least 1"), "lr": (_at_least(0, True), "above 0"),
    "weight_decay": (_at_least(0), "at least 0"), "image_size": (_at_least(32), "at least 32"),
    "size": (_at_least(32), "at least 32"), "workers": (_at_least(0), "at least 0"), "seed": (_at_least(0), "at least 0"),
    "early_stop": (_at_least(0), "at least 0"), "n": (_at_least(1), "at least 1"),
    "images_per_patient": (_at_least(1), "at least 1"), "difficulty": (_at_least(0, True), "above 0"),
    "val_frac": (lambda v: 0 <= v < 1, "in [0, 1)"), "test_frac": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "bootstrap": (_at_least(MIN_BOOTSTRAP), f"at least {MIN_BOOTSTRAP}"),
}


def _field_types(cls: type, skip: set[str] = frozenset()) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in skip}


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _check_value(where: str, value: Any, kind: Any) -> None:
    """Raise unless ``value`` fits ``kind`` (int, float, str, bool, list[str], or an Optional of those)."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise MaiAugError(f"{where}: expected a mapping, got {value!r}")
        return
    if typing.get_origin(kind) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MaiAugError(f"{where}: expected a list of strings, got {value!r}")
        return
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(kind, True)
    if not ok:
        raise MaiAugError(f"{where}: expected {_type_name(kind)}{' (finite)' if kind is float else ''}, got {value!r}")


def _check_section(name: str, section: str, values: Any, types: dict[str, Any]) -> None:
    if not isinstance(values, dict):
        raise MaiAugError(f"--preset {name}: {section}: expected a mapping, got {values!r}")
    for key, value in values.items():
        where = f"--preset {name}: {section + '.' if section else ''}{key}"
        if key not in types:
            near = difflib.get_close_matches(str(key), list(types), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(sorted(types))})"
            raise MaiAugError(f"{where}: unknown key{hint}")
        _check_value(where, value, types[key])
        if key in CHOICES and value not in CHOICES[key]:
            raise MaiAugError(f"{where}: {value!r} is not one of {', '.join(map(str, CHOICES[key]))}")
        if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            test, words = RANGES[key]
            if not test(value):
                raise MaiAugError(f"{where}: {value!r} must be {words}")


def check_preset(preset: Any, name: str) -> dict[str, Any]:
    """Return ``preset`` if every section, key, type and range is valid; else raise one line naming the entry."""
    if not isinstance(preset, dict):
        raise MaiAugError(f"--preset {name}: expected a mapping of {', '.join(SECTIONS)}")
    for key in preset:
        if key not in SECTIONS:
            near = difflib.get_close_matches(str(key), SECTIONS, n=1)
            raise MaiAugError(f"--preset {name}: unknown key {key!r}"
                              + (f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(SECTIONS)})"))
    _check_section(name, "phantom", preset.get("phantom", {}), _field_types(PhantomSpec, {"out"}))
    _check_section(name, "data", preset.get("data", {}), DATA_KEYS)
    train = preset.get("train", {})
    if isinstance(train, dict) and "network" in train:  # a name, {name:, args:} or {_target_: ..., args...}
        where = f"--preset {name}: train.network"
        train = {**train, **network_fields(train["network"], where, train.get("network_args"))}
        lookup_network(train["network"], train.get("network_args"), where=where)  # now, not after the phantom
        preset["train"] = train
    _check_section(name, "train", train, _field_types(TrainConfig, NOT_IN_PRESET))
    _check_value(f"--preset {name}: regimes", preset.get("regimes", []), list[str])
    _check_section(name, "", {k: preset[k] for k in ("bootstrap",) if k in preset}, {"bootstrap": int})
    if "description" in preset:
        _check_value(f"--preset {name}: description", preset["description"], str)
    return preset
