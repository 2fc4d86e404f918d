"""Run identity: a fingerprint of everything that changes a run's results, stored in the run folder.

``fingerprint.json`` holds the sha256 and its components (the result-changing settings with ``amp`` and
``augment_on`` as resolved for the device, the resolved regime spec, the datalist's content hash, mai_aug's version,
a hash of mai_aug's source and shipped configs, and the epochs a resumed run was stretched from), so that a
mismatch can be listed setting by setting.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import mai_aug
from mai_aug.core.devices import resolve_amp, resolve_step
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import FINGERPRINT_FILE as FINGERPRINT_FILE
from mai_aug.core.layout import RunLayout, checkpoint_epoch
from mai_aug.settings.config import TrainConfig
from mai_aug.settings.schema import NOT_RESULTS as NOT_RESULTS
from mai_aug.settings.schema import setting_of
from mai_aug.transforms.batched import compile_regime

# TrainConfig fields that do not change what a run computes are tagged so in the schema (changes_results=False):
# where and how fast it runs, what it logs and saves, and the data-source fields, which the datalist's content
# stands for (as the resolved regime spec stands for the regime files). Any other field is part of the identity.

def canonical_sha256(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys, no whitespace): equal content, equal hash."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 of mai_aug's source (``**/*.py``) and shipped configs (``configs/**/*.yaml``), once per process.

    Each file's path relative to the package and its bytes enter the hash, in sorted order, so the hash is the
    same wherever the package is installed and changes with any edit of its code or presets.
    """
    package = Path(mai_aug.__file__).parent
    files = sorted([*package.rglob("*.py"), *(package / "configs").rglob("*.yaml")])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def resolved_settings(config: TrainConfig, regime: Any, device: torch.device) -> dict[str, Any]:
    """``amp``, ``augment_on`` and the step's options as :func:`mai_aug.engine.train.train` resolves them for
    ``device``."""
    amp = resolve_amp(config.amp, device)
    batched = config.augment_on != "loader" and not isinstance(compile_regime(regime, config.seed), str)
    step = resolve_step(config.channels_last, config.fused_adam, config.compile, device)
    return {"amp": amp, "augment_on": "device" if batched else "loader", **step.as_settings()}


def components(config: TrainConfig, regime_spec: dict, datalist: dict, resolved: Mapping[str, Any] | None = None,
               extended_from_epochs: Sequence[int] = ()) -> dict[str, Any]:
    """What a run's results depend on, as plain data.

    Args:
        config: the run's settings.
        regime_spec: the resolved regime spec.
        datalist: the run's split.
        resolved: settings as resolved for the device (:func:`resolved_settings`), replacing the unresolved ones.
        extended_from_epochs: the ``epochs`` a resumed run was stretched from after its schedule had diverged.
    """
    values = config.to_dict()
    settings = {f.name: values[f.name] for f in dataclasses.fields(config) if setting_of(f).changes_results}
    settings.update(resolved or {})
    # A JSON round trip makes the in-memory values compare equal to those read back from fingerprint.json.
    return json.loads(json.dumps({
        "settings": settings, "regime": regime_spec, "datalist_sha256": canonical_sha256(datalist),
        "mai_aug_version": mai_aug.__version__, "code_sha256": code_sha256(),
        "extended_from_epochs": list(extended_from_epochs),
    }, default=str))


def fingerprint(parts: dict[str, Any]) -> str:
    """The sha256 naming ``parts`` (from :func:`components`)."""
    return canonical_sha256(parts)


def write_fingerprint(parts: dict[str, Any], run_dir: Path) -> Path:
    """Write ``run_dir/fingerprint.json`` atomically (fsynced hidden temporary file, then a rename)."""
    path = RunLayout(run_dir).fingerprint
    text = json.dumps({"sha256": fingerprint(parts), "components": parts}, indent=1, sort_keys=True) + "\n"
    write_text_atomic(path, text)
    return path


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The components stored in ``run_dir``; None where the folder has no fingerprint, ``{}`` where unreadable."""
    path = RunLayout(run_dir).fingerprint
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_bytes())
    except (OSError, ValueError):  # ValueError: invalid JSON or UTF-8
        return {}
    parts = stored.get("components") if isinstance(stored, dict) else None
    return parts if isinstance(parts, dict) and isinstance(parts.get("settings"), dict) else {}


def epochs_begun(run_dir: Path) -> int:
    """The epochs a run has started, by its newest checkpoint (one saved inside epoch N counts N)."""
    last = RunLayout(run_dir).last
    if last is None:
        return 0
    return checkpoint_epoch(last) + (1 if "_iteration=" in last.name else 0)


def run_status(run_dir: Path, expected: dict[str, Any]) -> tuple[str, list[str]]:
    """How an existing run folder relates to the run ``expected`` describes.

    Returns:
        ``("new", [])`` where nothing was started, ``("finished", [])`` or ``("interrupted", [])`` where the folder
        may be reused, else ``("mismatch", what differs)``. An interrupted run may grow ``epochs`` only while it has
        begun at most one epoch: the cosine's epoch-1 rate does not depend on the length, later ones do.
    """
    run_dir = Path(run_dir)
    stored = read_fingerprint(run_dir)
    if stored is None:
        if RunLayout(run_dir).config.is_file():
            return "mismatch", [f"no {FINGERPRINT_FILE} (made by an older mai_aug)"]
        return "new", []
    if not stored:
        return "mismatch", [f"unreadable {FINGERPRINT_FILE}"]
    finished = RunLayout(run_dir).done.is_file()
    diffs = differences(stored, expected, epochs_may_grow=not finished, begun=epochs_begun(run_dir))
    if diffs:
        return "mismatch", diffs
    return ("finished" if finished else "interrupted"), []


def _epochs_difference(before: Any, after: Any, epochs_may_grow: bool, begun: int) -> str | None:
    """Why a change of ``epochs`` bars reuse, or None where the run may grow to ``after``."""
    grows = isinstance(before, int) and isinstance(after, int) and after > before
    if grows and epochs_may_grow and begun <= 1:
        return None
    if grows and epochs_may_grow:
        return (f"epochs: {before!r} -> {after!r} after {begun} trained epochs: the schedule would differ "
                f"from a fresh run")
    return f"epochs: {before!r} -> {after!r}"


def differences(old: dict[str, Any], new: dict[str, Any], epochs_may_grow: bool = False,
                begun: int = 0) -> list[str]:
    """``name: old -> new`` for each differing component.

    ``epochs_may_grow`` accepts a larger ``epochs`` while the run has ``begun`` at most one epoch.
    """
    diffs = []
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        before, after = old_settings.get(key), new_settings.get(key)
        if before == after:
            continue
        if key != "epochs":
            diffs.append(f"{key}: {before!r} -> {after!r}")
        elif said := _epochs_difference(before, after, epochs_may_grow, begun):
            diffs.append(said)
    if old.get("regime") != new["regime"]:
        diffs.append("regime spec differs")
    if old.get("datalist_sha256") != new["datalist_sha256"]:
        diffs.append("datalist content differs")
    if old.get("mai_aug_version") != new["mai_aug_version"]:
        diffs.append(f"mai_aug version: {old.get('mai_aug_version')} -> {new['mai_aug_version']}")
    if old.get("code_sha256") != new["code_sha256"]:
        diffs.append("mai_aug code changed")
    extended = old.get("extended_from_epochs") or []
    if extended != (new.get("extended_from_epochs") or []):
        diffs.append(f"resumed with `epochs` changed from {extended} after training began: the schedule differs "
                     f"from a fresh run")
    return diffs
