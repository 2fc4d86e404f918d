"""``mai-aug calibrate``: fit a run's calibration on its validation split; read it back for predict, evaluate, export.

``RUN/calibration.json`` holds the method, one map ``sigmoid(slope * logit + intercept)`` per finding
(:mod:`mai_aug.stats.calibration`), the checkpoint it was fitted for (file name, size, sha256) and the validation
ECE without and with it. A calibration is applied only to the checkpoint it was fitted for: for any other, or with
none, outputs are the network's plain sigmoid outputs and every command says so in one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity, evaluated_with
from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.data.images import check_image_headers
from mai_aug.stats.calibration import METHODS, FindingMap, apply, ece_by_finding, fit

SPLIT = "validation"
FORMULA = "p = sigmoid(slope * logit + intercept)"
METHOD_WORDS = {"platt": "Platt scaling", "temperature": "a temperature"}


@dataclass(frozen=True)
class Calibration:
    """A run's calibration as read for one checkpoint: its maps (None: not applied) and the line that says so."""

    maps: list[FindingMap] | None
    note: str
    record: dict[str, Any] | None = None

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` calibrated, or as they are where no calibration applies."""
        return probabilities if self.maps is None else apply(probabilities, self.maps)


def validation_predictions(run: TrainedRun, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the run's validation split: ``eval/validation_predictions.csv`` where it is
    current for the checkpoint (``mai-aug evaluate --split validation``), else predicted now."""
    items = run.datalist[SPLIT]
    if not items:
        raise MaiAugError(f"`run` {run.run_dir}: the validation split is empty; nothing to fit a calibration on")
    labels = np.asarray([it["label"] for it in items], dtype=np.float64)
    path = run.layout.predictions(SPLIT)
    if evaluated_with(run.run_dir, SPLIT, run.checkpoint):
        frame = pd.read_csv(path)
        if len(frame) == len(items) and all(n in frame for n in run.names):
            return labels, frame[run.names].to_numpy(dtype=np.float64)
    check_image_headers([it["image"] for it in items])
    return labels, run.predict(items, workers=workers)


def calibrate_run(run_dir: str | Path, method: str = "platt", checkpoint: str = "best", device: str = "auto",
                  trust: bool | None = None, workers: int = 0) -> dict[str, Any]:
    """Fit one map per finding on the validation split and write ``RUN/calibration.json`` (atomically); return it."""
    if method not in METHODS:
        raise MaiAugError(f"`method` {method!r}: expected one of {', '.join(METHODS)}")
    run = TrainedRun(run_dir, checkpoint, device, trust)
    labels, probs = validation_predictions(run, workers)
    maps = fit(probs, labels, method)
    record = {
        "method": method, "split": SPLIT, "images": len(labels), "formula": FORMULA,
        "checkpoint": checkpoint_identity(run.checkpoint), "findings": list(run.names),
        "maps": {name: m.to_dict() for name, m in zip(run.names, maps)},
        "ece_validation": {"uncalibrated": _finite(ece_by_finding(labels, probs, run.names)),
                           "calibrated": _finite(ece_by_finding(labels, apply(probs, maps), run.names))},
    }
    write_text_atomic(run.layout.calibration, json.dumps(record, indent=1) + "\n")
    return record


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """NaN as None: JSON has no NaN."""
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def uncalibrated_note(why: str = "") -> str:
    """The line said where outputs are not calibrated (naming no path: the bundle's model card carries it too)."""
    return (f"uncalibrated: these are the network's sigmoid outputs, not calibrated probabilities{why}; "
            "`mai-aug calibrate --run RUN` fits a calibration on the validation split")


def load_calibration(run_dir: str | Path, checkpoint: Path, names: Sequence[str]) -> Calibration:
    """The run's calibration for ``checkpoint``: applied when ``calibration.json`` was fitted for it as it is now,
    else not (a calibration of another checkpoint is ignored, and the note says so).

    Raises:
        MaiAugError: ``calibration.json`` is unreadable or not a calibration of these findings.
    """
    run_dir = Path(run_dir)
    path = RunLayout(run_dir).calibration
    if not path.is_file():
        return Calibration(None, uncalibrated_note())
    record = _read_record(path, names)
    fitted_for = record["checkpoint"]
    if fitted_for != checkpoint_identity(checkpoint):
        why = (f" ({path} was fitted for {fitted_for.get('checkpoint')} sha256 {str(fitted_for.get('sha256'))[:12]}, "
               f"not {Path(checkpoint).name} as it is now: ignored)")
        return Calibration(None, uncalibrated_note(why), record)
    maps = [FindingMap(**record["maps"][name]) for name in names]
    note = (f"calibrated: {METHOD_WORDS[record['method']]} per finding, fitted on the {record['split']} split "
            f"of this checkpoint ({path})")
    return Calibration(maps, note, record)


def _read_record(path: Path, names: Sequence[str]) -> dict[str, Any]:
    """``calibration.json`` checked as data: its method, checkpoint, findings and finite numbers."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise MaiAugError(f"{path}: not readable as JSON ({e}); run mai-aug calibrate again") from None
    if not isinstance(record, dict) or record.get("method") not in METHODS:
        raise MaiAugError(f"{path}: not a calibration (method must be one of {', '.join(METHODS)})")
    if not isinstance(record.get("checkpoint"), dict):
        raise MaiAugError(f"{path}: checkpoint: expected the checkpoint's name, size and sha256")
    maps = record.get("maps")
    if record.get("findings") != list(names) or not isinstance(maps, dict) or set(maps) != set(names):
        raise MaiAugError(f"{path}: its findings are not the run's ({', '.join(names)}); run mai-aug calibrate again")
    for name in names:
        entry = maps[name]
        ok = (isinstance(entry, dict) and set(entry) <= {"slope", "intercept", "fitted", "reason"}
              and all(_number(entry.get(k)) for k in ("slope", "intercept")) and entry["slope"] >= 0)
        if not ok:
            raise MaiAugError(f"{path}: maps: {name}: expected a finite slope (0 or more) and intercept")
    return record


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ece_table(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], calibration: Calibration) -> pd.DataFrame:
    """``eval/<split>_calibration.csv``: each finding's (and the macro) ECE without and with the calibration."""
    before = ece_by_finding(labels, probs, names)
    after = ece_by_finding(labels, calibration(probs), names)
    return pd.DataFrame({"finding": list(before), "ece_uncalibrated": list(before.values()),
                         "ece_calibrated": [after[k] for k in before]})
