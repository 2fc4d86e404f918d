"""Run identity: a fingerprint of everything that changes a run's results, stored in the run folder.

``fingerprint.json`` holds the sha256 and its components (the result-changing settings, the resolved regime spec,
the datalist's content hash and mai_aug's version), so that a mismatch can be listed setting by setting.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import mai_aug
from mai_aug.engine.config import TrainConfig
from mai_aug.errors import MaiAugError

FINGERPRINT_FILE = "fingerprint.json"

# TrainConfig fields that do not change what a run computes: where and how fast it runs, what it logs and saves.
# The data-source fields are left out too: the datalist's content stands for them (paths, CSV, views, split, image
# checks), and the resolved regime spec stands for the regime files. Any other field is part of the identity.
NOT_RESULTS = frozenset({
    "out", "workers", "device", "progress", "cache", "cache_dir", "tensorboard_dir", "resume", "hparams",
    "checkpoint_every", "data", "datalist", "csv", "images", "views", "split", "val_frac", "test_frac",
    "require_all_images", "split_seed", "verify_images", "skip_bad_images", "regimes_file",
})


def canonical_sha256(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys, no whitespace): equal content, equal hash."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def components(config: TrainConfig, regime_spec: dict, datalist: dict) -> dict[str, Any]:
    """What a run's results depend on, as plain data."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_RESULTS}
    # A JSON round trip makes the in-memory values compare equal to those read back from fingerprint.json.
    return json.loads(json.dumps({
        "settings": settings, "regime": regime_spec, "datalist_sha256": canonical_sha256(datalist),
        "mai_aug_version": mai_aug.__version__,
    }, default=str))


def fingerprint(parts: dict[str, Any]) -> str:
    """The sha256 naming ``parts`` (from :func:`components`)."""
    return canonical_sha256(parts)


def write_fingerprint(parts: dict[str, Any], run_dir: Path) -> Path:
    """Write ``run_dir/fingerprint.json`` atomically (temporary file, then ``os.replace``)."""
    path = Path(run_dir) / FINGERPRINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"sha256": fingerprint(parts), "components": parts}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The components stored in ``run_dir``, or None where the folder has no fingerprint."""
    path = Path(run_dir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        return stored["components"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise MaiAugError(f"{path}: not a mai-aug fingerprint (delete the run folder or pass --retrain)") from None


def run_status(run_dir: Path, expected: dict[str, Any]) -> tuple[str, list[str]]:
    """How an existing run folder relates to the run ``expected`` describes.

    Returns:
        ``("new", [])`` where nothing was started, ``("finished", [])`` or ``("interrupted", [])`` where the folder
        may be reused (an interrupted run may grow ``epochs``), else ``("mismatch", what differs)``.
    """
    run_dir = Path(run_dir)
    stored = read_fingerprint(run_dir)
    if stored is None:
        if (run_dir / "config.yaml").is_file():
            return "mismatch", [f"no {FINGERPRINT_FILE} (made by an older mai_aug)"]
        return "new", []
    finished = (run_dir / "DONE").is_file()
    diffs = differences(stored, expected, epochs_may_grow=not finished)
    if diffs:
        return "mismatch", diffs
    return ("finished" if finished else "interrupted"), []


def differences(old: dict[str, Any], new: dict[str, Any], epochs_may_grow: bool = False) -> list[str]:
    """``name: old -> new`` for each differing component; ``epochs_may_grow`` accepts a larger ``epochs``."""
    diffs = []
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        before, after = old_settings.get(key), new_settings.get(key)
        if before == after:
            continue
        if key == "epochs" and epochs_may_grow and isinstance(before, int) and isinstance(after, int) and after > before:
            continue
        diffs.append(f"{key}: {before!r} -> {after!r}")
    if old.get("regime") != new["regime"]:
        diffs.append("regime spec differs")
    if old.get("datalist_sha256") != new["datalist_sha256"]:
        diffs.append("datalist content differs")
    if old.get("mai_aug_version") != new["mai_aug_version"]:
        diffs.append(f"mai_aug version: {old.get('mai_aug_version')} -> {new['mai_aug_version']}")
    return diffs
