"""Strict checking of preset YAML: known keys only (with the nearest valid name suggested), right types, sane ranges.

A preset is data typed by hand, so a typo (``epoch: 1``) or a quoted number (``image_size: "32"``) must stop the
command with one line instead of being dropped or failing deep inside training.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from mai_aug.core.choices import EXTERNAL_SPLITS, PHANTOM_LAYOUTS, TEST_SHIFTS, UNCERTAIN_POLICIES
from mai_aug.core.errors import MaiAugError
from mai_aug.core.user_yaml import read_user_yaml
from mai_aug.data.phantom import PhantomSpec
from mai_aug.networks.spec import lookup_network, network_fields
from mai_aug.settings.checks import check_mapping, check_value
from mai_aug.settings.checks import nearest as nearest
from mai_aug.settings.schema import BY_NAME, SEED_RANGE, Field, Range, preset_data_fields, preset_fields
from mai_aug.settings.schema import NOT_IN_PRESET as NOT_IN_PRESET
from mai_aug.stats.auc import MIN_BOOTSTRAP

SECTIONS = ("description", "phantom", "data", "regimes", "seeds", "train", "bootstrap", "robustness", "external",
            "primary", "detect")
ROBUSTNESS_FIELDS = {name: Field(name, list[str]) for name in ("shifts", "levels")}  # as --robustness(-levels)
#: The top-level counts of a preset.
COUNT_FIELDS = {"bootstrap": Field("bootstrap", int, range=Range(MIN_BOOTSTRAP)), "seeds": Field("seeds", int)}
#: The phantom's bounds and choices (its types and defaults are PhantomSpec's).
PHANTOM_RULES: dict[str, dict[str, Any]] = {
    "n": {"range": Range(1)}, "size": {"range": Range(32)}, "seed": {"range": SEED_RANGE},
    "images_per_patient": {"range": Range(1)}, "difficulty": {"range": Range(0, low_open=True)},
    "test_frac": {"range": Range(0, 1, high_open=True)}, "test_shift": {"choices": TEST_SHIFTS},
    "layout": {"choices": PHANTOM_LAYOUTS},
}
#: A preset's ``external:`` keys (``compare --external``'s default): a generated phantom (another site) scored by
#: every run, as ``--external-split``, ``--lesion``, ``--uncertain`` and ``--external-name`` would.
EXTERNAL_FIELDS = {"split": Field("split", str, choices=EXTERNAL_SPLITS), "lesion": Field("lesion", bool),
                   "uncertain": Field("uncertain", str, choices=UNCERTAIN_POLICIES), "name": Field("name", str)}


def phantom_fields() -> dict[str, Field]:
    """A preset's ``phantom:`` keys: PhantomSpec's fields but ``out``, with their bounds."""
    hints = typing.get_type_hints(PhantomSpec)
    return {f.name: Field(f.name, hints[f.name], **PHANTOM_RULES.get(f.name, {}))
            for f in dataclasses.fields(PhantomSpec) if f.name != "out"}


def check_preset(preset: Any, name: str) -> dict[str, Any]:
    """Return ``preset`` if every section, key, type and range is valid; else raise one line naming the entry."""
    if not isinstance(preset, dict):
        raise MaiAugError(f"`preset` {name}: expected a mapping of {', '.join(SECTIONS)}")
    for key in preset:
        if key not in SECTIONS:
            near = difflib.get_close_matches(str(key), SECTIONS, n=1)
            raise MaiAugError(f"`preset` {name}: unknown key {key!r}"
                              + (f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(SECTIONS)})"))
    check_mapping(f"`preset` {name}: phantom", preset.get("phantom", {}), phantom_fields())
    check_mapping(f"`preset` {name}: data", preset.get("data", {}), preset_data_fields())
    if "train" in preset:
        preset["train"] = check_train_section(preset["train"], f"`preset` {name}: train", preset_fields())
    check_value(Field("regimes", list[str]), preset.get("regimes", []), f"`preset` {name}: regimes")
    check_mapping(f"`preset` {name}", {k: preset[k] for k in COUNT_FIELDS if k in preset}, COUNT_FIELDS, sep=": ")
    if preset.get("seeds", 1) < 1:
        raise MaiAugError(f"`preset` {name}: seeds: {preset['seeds']} is below 1")
    if "robustness" in preset:
        _check_robustness(preset["robustness"], f"`preset` {name}: robustness")
    if "external" in preset:
        _check_external(preset["external"], f"`preset` {name}: external")
    if "description" in preset:
        check_value(Field("description", str), preset["description"], f"`preset` {name}: description")
    if "primary" in preset:  # macro or a finding name: checked against the study's findings once the data is read
        check_value(Field("primary", str), preset["primary"], f"`preset` {name}: primary")
    if "detect" in preset:
        check_detect(preset["detect"], f"`preset` {name}: detect")
    return preset


def check_detect(value: Any, where: str) -> float:
    """The difference a study is planned to detect (``--detect``, a preset's ``detect:``): a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise MaiAugError(f"{where}: {value!r} must be a number above 0 and below 1 (an AUC difference)")
    return float(value)


def _check_robustness(values: Any, label: str) -> None:
    """A preset's ``robustness: {shifts: [...], levels: [SHIFT=V1,V2, ...]}`` (``compare --robustness``'s default)."""
    from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels

    check_mapping(label, values, ROBUSTNESS_FIELDS)
    parse_levels(values.get("levels", []), values.get("shifts") or list(SHIFT_TYPES), f"{label}: levels")


def _check_external(values: Any, label: str) -> None:
    """A preset's ``external: {phantom: {...}, split:, lesion:, uncertain:, name:}``: the phantom is required."""
    from mai_aug.core.names import check_name

    if not isinstance(values, dict) or "phantom" not in values:
        raise MaiAugError(f"{label}: expected a mapping with a phantom: entry (the external site to generate)")
    check_mapping(label, {k: v for k, v in values.items() if k != "phantom"}, EXTERNAL_FIELDS)
    check_mapping(f"{label}: phantom", values["phantom"], phantom_fields())
    if "name" in values:
        check_name(values["name"], f"{label}: name")


def check_train_section(values: Any, label: str, fields: dict[str, Field] = BY_NAME, sep: str = ".") -> dict[str, Any]:
    """TrainConfig settings typed by hand (a preset's ``train:``, a ``--settings`` file), checked and normalised.

    Known keys only (the nearest one suggested), right types, choices and ranges; the plug-in entries become
    TrainConfig values (``fields``: the keys allowed, every setting's by default): ``network:`` a name,
    ``{name:, args:}`` or ``{_target_: ..., ...}``; ``dataset:`` a name or
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
    check_mapping(label, values, fields, sep)
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
            raise MaiAugError(f"{where}: {str(e).removeprefix('`metrics`: ')}") from None


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


PRESETS = ("demo", "article", "full", "robustness", "external")


def preset_path(name: str) -> Path:
    """A shipped preset by name, or a YAML file."""
    if name in PRESETS:
        return Path(str(resources.files("mai_aug") / "configs" / "presets" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise MaiAugError(f"`preset` {name!r}: not one of {', '.join(PRESETS)} nor a YAML file")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """A preset by name or file, read as data (no aliases) and checked (:func:`mai_aug.settings.presets.check_preset`)."""
    preset = read_user_yaml(preset_path(name), f"`preset` {name}") or {}
    return check_preset(preset, name)
