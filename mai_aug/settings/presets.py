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
from importlib import resources
from pathlib import Path
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.core.limits import check_limit
from mai_aug.core.user_yaml import read_user_yaml
from mai_aug.data.phantom import PhantomSpec
from mai_aug.networks.spec import lookup_network, network_fields
from mai_aug.settings.config import TrainConfig
from mai_aug.stats.auc import MIN_BOOTSTRAP

SECTIONS = ("description", "phantom", "data", "regimes", "seeds", "train", "bootstrap", "robustness", "primary", "detect")
ROBUSTNESS_KEYS: dict[str, Any] = {"shifts": list[str], "levels": list[str]}  # as --robustness, --robustness-levels
DATA_KEYS: dict[str, Any] = {"split": str, "val_frac": float, "test_frac": float, "seed": int, "images": str}
# TrainConfig fields a preset may set: not the run's identity (out, regime, data source) nor per-invocation switches.
NOT_IN_PRESET = {"out", "regime", "data", "datalist", "csv", "images", "resume", "progress", "tensorboard_dir", "hparams",
                 "regimes_file", "device",
                 # the split belongs to the preset's `data:` section, which compare applies once for all runs
                 "split", "val_frac", "test_frac", "views", "split_seed", "require_all_images", "cache_dir",
                 # how --data is read: compare's --dataset and its options (a run's own value would go unused)
                 "dataset", "uncertain", "image_column", "labels_column", "label_sep", "label_columns",
                 "patient_column"}
CHOICES = {"split": ("patient", "official"), "cache": ("memory", "disk", "none"), "test_shift": ("none", "site"),
           "in_channels": (1, 3), "augment_on": ("auto", "loader", "device"), "uncertain": ("ones", "zeros", "ignore")}


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
    "split_seed": (_at_least(0), "at least 0"), "checkpoint_every": (_at_least(0), "at least 0"),
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
        items = (str, dict) if typing.get_args(kind) != (str,) else str  # metrics: names or a user's mappings
        if not isinstance(value, list) or not all(isinstance(v, items) for v in value):
            words = "strings" if items is str else "names or mappings"
            raise MaiAugError(f"{where}: expected a list of {words}, got {value!r}")
        return
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(kind, True)
    if not ok:
        raise MaiAugError(f"{where}: expected {_type_name(kind)}{' (finite)' if kind is float else ''}, got {value!r}")


def nearest(key: str, names: list[str]) -> str | None:
    """The valid name nearest ``key``: difflib's closest, else the one ``key``'s initials spell (learning_rate: lr)."""
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return close[0]
    initials = "".join(word[:1] for word in key.lower().split("_"))
    return initials if "_" in key and initials in names else None


def _check_section(label: str, values: Any, types: dict[str, Any], sep: str = ".") -> None:
    """Check a mapping's keys and values; messages name ``label``, and ``label{sep}key`` for a key's value."""
    if not isinstance(values, dict):
        raise MaiAugError(f"{label}: expected a mapping, got {values!r}")
    for key, value in values.items():
        where = f"{label}{sep}{key}"
        if key not in types:
            near = nearest(str(key), list(types))
            hint = f" (did you mean {near!r}?)" if near else f" (valid: {', '.join(sorted(types))})"
            raise MaiAugError(f"{label}: unknown key {key!r}{hint}")
        _check_value(where, value, types[key])
        if key in CHOICES and value is not None and value not in CHOICES[key]:
            raise MaiAugError(f"{where}: {value!r} is not one of {', '.join(map(str, CHOICES[key]))}")
        if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            test, words = RANGES[key]
            if not test(value):
                raise MaiAugError(f"{where}: {value!r} must be {words}")
        check_limit(str(key), value, where)


def check_preset(preset: Any, name: str) -> dict[str, Any]:
    """Return ``preset`` if every section, key, type and range is valid; else raise one line naming the entry."""
    if not isinstance(preset, dict):
        raise MaiAugError(f"--preset {name}: expected a mapping of {', '.join(SECTIONS)}")
    for key in preset:
        if key not in SECTIONS:
            near = difflib.get_close_matches(str(key), SECTIONS, n=1)
            raise MaiAugError(f"--preset {name}: unknown key {key!r}"
                              + (f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(SECTIONS)})"))
    _check_section(f"--preset {name}: phantom", preset.get("phantom", {}), _field_types(PhantomSpec, {"out"}))
    _check_section(f"--preset {name}: data", preset.get("data", {}), DATA_KEYS)
    if "train" in preset:
        preset["train"] = check_train_section(preset["train"], f"--preset {name}: train", NOT_IN_PRESET)
    _check_value(f"--preset {name}: regimes", preset.get("regimes", []), list[str])
    _check_section(f"--preset {name}", {k: preset[k] for k in ("bootstrap", "seeds") if k in preset},
                   {"bootstrap": int, "seeds": int}, sep=": ")
    if preset.get("seeds", 1) < 1:
        raise MaiAugError(f"--preset {name}: seeds: {preset['seeds']} is below 1")
    if "robustness" in preset:
        _check_robustness(preset["robustness"], f"--preset {name}: robustness")
    if "description" in preset:
        _check_value(f"--preset {name}: description", preset["description"], str)
    if "primary" in preset:  # macro or a finding name: checked against the study's findings once the data is read
        _check_value(f"--preset {name}: primary", preset["primary"], str)
    if "detect" in preset:
        check_detect(preset["detect"], f"--preset {name}: detect")
    return preset


def check_detect(value: Any, where: str) -> float:
    """The difference a study is planned to detect (``--detect``, a preset's ``detect:``): a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise MaiAugError(f"{where}: {value!r} must be a number above 0 and below 1 (an AUC difference)")
    return float(value)


def _check_robustness(values: Any, label: str) -> None:
    """A preset's ``robustness: {shifts: [...], levels: [SHIFT=V1,V2, ...]}`` (``compare --robustness``'s default)."""
    from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels

    _check_section(label, values, ROBUSTNESS_KEYS)
    parse_levels(values.get("levels", []), values.get("shifts") or list(SHIFT_TYPES), f"{label}: levels")


def check_train_section(values: Any, label: str, skip: set[str] = frozenset(), sep: str = ".") -> dict[str, Any]:
    """TrainConfig settings typed by hand (a preset's ``train:``, a ``--settings`` file), checked and normalised.

    Known keys only (the nearest one suggested), right types, choices and ranges; the plug-in entries become
    TrainConfig values: ``network:`` a name, ``{name:, args:}`` or ``{_target_: ..., ...}``; ``dataset:`` a name or
    ``{_target_: my_adapter.read_mine}``; ``metrics:`` names or ``{_target_: ..., name: ...}`` (a ``_target_``
    outside MONAI only under ``--trust-config``). Each is resolved now, before any data is read or trained on.
    """
    if not isinstance(values, dict):
        raise MaiAugError(f"{label}: expected a mapping, got {values!r}")
    values = dict(values)
    if "network" in values:
        where = f"{label}{sep}network"
        values.update(network_fields(values["network"], where, values.get("network_args")))
        lookup_network(values["network"], values.get("network_args"), where=where)
    dataset = values.get("dataset")
    if isinstance(dataset, dict):
        values["dataset"] = _dataset_target(dataset, f"{label}{sep}dataset")
    elif isinstance(dataset, str) and dataset not in ("auto", *_dataset_names()):  # a dotted path is code too
        values["dataset"] = _dataset_target({"_target_": dataset}, f"{label}{sep}dataset")
    _check_section(label, values, _field_types(TrainConfig, skip), sep)
    if values.get("metrics"):
        _check_metrics(values["metrics"], f"{label}{sep}metrics")
    return values


def _check_metrics(entries: list, where: str) -> None:
    """Every metric known, or a user's (registered now, trusted only): one line naming the entry if not."""
    from mai_aug.stats.scores import custom_metric, get_metric  # torch and sklearn: only when settings name metrics

    for entry in entries:
        if isinstance(entry, dict):
            custom_metric(entry, where)
            continue
        try:
            get_metric(entry)
        except MaiAugError as e:
            raise MaiAugError(f"{where}: {str(e).removeprefix('--metrics: ')}") from None


def _dataset_names() -> tuple[str, ...]:
    """The registered dataset adapters (nih, chexpert, csv)."""
    from mai_aug.data.datasets import DATASETS

    return tuple(DATASETS)


def _dataset_target(value: dict, where: str) -> str:
    """``{_target_: my_adapter.read_mine}`` as TrainConfig's ``dataset`` (its dotted path), importable and trusted."""
    from mai_aug.core.trust import trusted_callable

    if set(value) != {"_target_"}:
        raise MaiAugError(f"{where}: expected a name or {{_target_: my_module.read_function}}, got {value!r}")
    trusted_callable(value["_target_"], where)
    return value["_target_"]


PRESETS = ("demo", "article", "full", "robustness")


def preset_path(name: str) -> Path:
    """A shipped preset by name, or a YAML file."""
    if name in PRESETS:
        return Path(str(resources.files("mai_aug") / "configs" / "presets" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise MaiAugError(f"--preset {name!r}: not one of {', '.join(PRESETS)} nor a YAML file")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """A preset by name or file, read as data (no aliases) and checked (:func:`mai_aug.settings.presets.check_preset`)."""
    preset = read_user_yaml(preset_path(name), f"--preset {name}") or {}
    return check_preset(preset, name)
