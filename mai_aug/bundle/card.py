"""The model card of an exported bundle: test AUC with intervals, data, regime, training settings, calibration.

Written into ``configs/metadata.json`` (under ``mai_aug.model_card``) and ``docs/README.md``, from the run folder's
own files only: ``eval/test_auc.csv`` where ``eval/test_meta.json`` says it came from the exported checkpoint as it
is now, ``datalist.json``, ``config.yaml`` and ``calibration.json``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mai_aug.analyses.calibration.run import METHOD_WORDS, Calibration
from mai_aug.analyses.trained_run import TrainedRun, evaluated_with

SPLITS = ("training", "validation", "test")
# the training settings a reader needs to judge the model (the full set is the run's config.yaml)
TRAINING_KEYS = ("network", "pretrained", "image_size", "in_channels", "epochs", "steps_per_epoch", "batch_size", "lr",
                 "weight_decay", "weighted_loss", "early_stop", "seed", "split", "split_seed", "val_frac", "test_frac")


def model_card(run: TrainedRun, raw: dict[str, Any], calibration: Calibration) -> dict[str, Any]:
    """The card's facts as JSON-ready values."""
    return {"test_auc": test_auc(run), "data": data_facts(run, raw),
            "regime": {"name": run.regime.name, "description": run.regime.description},
            "training": {k: raw[k] for k in TRAINING_KEYS if k in raw} | {
                "amp": (raw.get("resolved") or {}).get("amp"), "device": (raw.get("resolved") or {}).get("device")},
            "calibration": calibration_facts(calibration)}


def test_auc(run: TrainedRun) -> dict[str, Any]:
    """Per-finding and macro test AUC with 95% patient-bootstrap intervals, where current for the checkpoint."""
    if not (evaluated_with(run.run_dir, "test", run.checkpoint) and run.layout.auc("test").is_file()):
        return {"state": "not evaluated",
                "note": f"no test evaluation of {run.checkpoint.name} as it is now: run `mai-aug evaluate --run "
                        f"RUN` before exporting to carry the test AUC here"}
    frame = pd.read_csv(run.layout.auc("test"))
    keep = [c for c in ("finding", "auc", "ci_low", "ci_high", "positives", "negatives", "positive_patients")
            if c in frame]
    rows = [{k: _plain(v) for k, v in row.items()} for row in frame[keep].to_dict("records")]
    return {"state": "evaluated", "split": "test", "checkpoint": run.checkpoint.name,
            "interval": "95% patient bootstrap (none where a finding has too few positive patients)", "findings": rows}


def data_facts(run: TrainedRun, raw: dict[str, Any]) -> dict[str, Any]:
    """Where the images came from and the split's images and patients."""
    sizes = {key: {"images": len(run.datalist[key]), "patients": len({str(it["patient"]) for it in run.datalist[key]})}
             for key in SPLITS}
    return {"source": str(raw.get("data") or raw.get("datalist") or "unknown"), "dataset": raw.get("dataset"),
            "views": raw.get("views"), "findings": list(run.names), "splits": sizes}


def calibration_facts(calibration: Calibration) -> dict[str, Any]:
    """Whether the bundle's outputs are calibrated, how, and the validation ECE without and with it."""
    record = calibration.record if calibration.maps is not None else None
    if record is None:
        return {"state": "uncalibrated", "note": calibration.note}
    return {"state": "calibrated", "method": record["method"], "split": record["split"], "formula": record["formula"],
            "maps": record["maps"], "ece_validation": record["ece_validation"], "note": calibration.note}


def _plain(value: Any) -> Any:
    """A CSV cell as JSON: NaN as None, numpy scalars as Python ones."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def card_markdown(card: dict[str, Any]) -> str:
    """The card as README sections."""
    return "\n".join(["## Model card", "", *_auc_lines(card["test_auc"]), "", *_data_lines(card), "",
                      *_calibration_lines(card["calibration"]), ""])


def _auc_lines(auc: dict[str, Any]) -> list[str]:
    if auc["state"] != "evaluated":
        return ["Test AUC: not evaluated. " + auc["note"] + "."]
    lines = [f"Test AUC of `{auc['checkpoint']}` per finding ({auc['interval']}):", "",
             "| finding | AUC | 95% interval | positives / negatives |", "|---|---|---|---|"]
    for row in auc["findings"]:
        interval = (f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row.get("ci_low") is not None
                    and row.get("ci_high") is not None else "-")
        value = f"{row['auc']:.3f}" if row.get("auc") is not None else "-"
        counts = f"{row.get('positives', '-')} / {row.get('negatives', '-')}"
        lines.append(f"| {row['finding']} | {value} | {interval} | {counts} |")
    return lines


def _data_lines(card: dict[str, Any]) -> list[str]:
    data, regime, training = card["data"], card["regime"], card["training"]
    splits = ", ".join(f"{k} {v['images']} images of {v['patients']} patients" for k, v in data["splits"].items())
    settings = ", ".join(f"{k} {v}" for k, v in training.items())
    return [f"Data: `{data['source']}` ({splits}).", "",
            f"Regime: `{regime['name']}` ({regime['description']}).", "", f"Training: {settings}."]


def _calibration_lines(calibration: dict[str, Any]) -> list[str]:
    if calibration["state"] != "calibrated":
        return [f"Calibration: none; {calibration['note']}. A class-balanced loss (the default) inflates the rare "
                "findings' outputs."]
    ece = calibration["ece_validation"]
    before, after = ece["uncalibrated"]["macro"], ece["calibrated"]["macro"]
    figures = (f"; macro ECE on the {calibration['split']} split (in-sample) {before:.3f} without, {after:.3f} with it"
               if before is not None and after is not None else "")
    return [f"Calibration: {METHOD_WORDS[calibration['method']]} per finding, fitted on the run's "
            f"{calibration['split']} split, applied in `configs/inference.yaml` "
            f"(`calibration_slope`, `calibration_intercept`: {calibration['formula']}){figures}."]
