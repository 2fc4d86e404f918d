"""``mai-aug evaluate``: a trained run's checkpoint applied to a split (AUC with intervals, ROC, predictions)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.analyses.calibration.run import Calibration, ece_table, load_calibration
from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity
from mai_aug.analyses.tta.run import tta_predictions, tta_table
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError, say
from mai_aug.core.files import save_figure_atomic, write_csv_atomic, write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.locks import holding_run_lock
from mai_aug.core.logs import RunLog
from mai_aug.core.preflight import require_free_space, require_writable_folder
from mai_aug.data.images import check_image_headers
from mai_aug.reports.roc import roc_figure
from mai_aug.stats.scores import interval_tables, resolve_metrics

logger = logging.getLogger("mai_aug")


# free space evaluate wants before inference: the ROC figure and tables, plus each image's predictions row
EVAL_BYTES, EVAL_BYTES_PER_IMAGE = 1 << 20, 1 << 10


SPLIT_KEYS = {"test": "test", "validation": "validation", "training": "training"}


@holding_run_lock
def evaluate_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str = "auto",
                 n_boot: int = DEFAULT_BOOTSTRAP, workers: int = 0, trust: bool | None = None,
                 metrics: Sequence[str] | None = None, tta: int = 0) -> pd.DataFrame:
    """Write ``RUN/eval/<split>_auc.csv``, ``_roc.png``, ``_predictions.csv``, ``_meta.json``; return the AUC table.

    ``_meta.json`` (written last, atomically) names the checkpoint used by file name, size and sha256.

    ``attrs["calibration"]``: the line saying whether the run is calibrated; ``attrs["calibration_ece"]``: where
    ``calibration.json`` fits this checkpoint, ``<split>_calibration.csv`` (ECE without and with it), else None.

    ``tta``: also average the predictions over this many draws of the regime's random part and write
    ``<split>_tta.csv`` (AUC with and without, and the paired difference) and ``<split>_tta_predictions.csv``.

    ``trust``: allow code in the run's stored regime spec (``--trust-config``); None: the command line's setting.
    ``metrics``: more metrics (``--metrics``; None: the run's own), one ``<split>_<key>.csv`` each, with intervals
    from the same patient resamples as the AUC table's; the returned table's ``attrs["metric_tables"]`` lists them.
    """
    chosen = resolve_metrics(metrics) if metrics is not None else None  # a bad name stops before inference
    run = TrainedRun(run_dir, checkpoint, device, trust)
    chosen = resolve_metrics(run.config.metrics) if chosen is None else chosen
    calibration = load_calibration(run.run_dir, run.checkpoint, run.names)  # a broken file stops before inference
    if split not in SPLIT_KEYS:
        raise MaiAugError(f"`split` {split!r}: expected test or validation")
    items = run.datalist[SPLIT_KEYS[split]]
    if not items:
        raise MaiAugError(f"{run.run_dir}: the {split} split is empty")
    check_image_headers([it["image"] for it in items])
    layout = run.layout
    require_writable_folder(layout.eval_dir, "`run`")  # before inference, not after it
    require_free_space(layout.eval_dir, EVAL_BYTES + EVAL_BYTES_PER_IMAGE * len(items) * (2 if tta else 1), "`run`")
    layout.eval_dir.mkdir(exist_ok=True)
    _remove_earlier_outputs(layout, split, chosen)
    with RunLog(layout.eval_log, echo=False):
        logger.info(f"evaluating {run.checkpoint} on {len(items)} {split} images")
        probs = run.predict(items, workers=workers)
        averaged = tta_predictions(run, items, tta, workers, plain=probs) if tta else None
    labels = np.asarray([it["label"] for it in items], dtype=np.float64)  # NaN: unknown, left out per finding
    if not np.isnan(labels).any():
        labels = labels.astype(np.int64)  # 0/1 columns in _predictions.csv, as before
    patients = np.asarray([it["patient"] for it in items])
    if averaged is not None:
        write_csv_atomic(tta_table(labels, patients, probs, averaged, run.names, tta, n_boot), layout.tta(split),
                         index=False, float_format="%.10g")
        write_csv_atomic(_prediction_frame(items, patients, labels, averaged, run.names),
                         layout.tta_predictions(split), index=False, float_format="%.12g")
    tables = interval_tables(chosen, labels, probs, patients, run.names, n_boot=n_boot, seed=run.config.seed)
    table = tables.pop("auc")
    write_csv_atomic(table, layout.auc(split), index=False, float_format="%.10g")
    for metric in chosen[1:]:
        write_csv_atomic(tables[metric.name], layout.metric(split, metric.key), index=False, float_format="%.10g")
    table.attrs["metric_tables"] = tables
    note, ece = _calibration_outputs(run, split, labels, probs, calibration)
    table.attrs.update(calibration=note, calibration_ece=ece)
    _write_outputs(run, split, items, labels, probs, patients, tta)
    return table


def _remove_earlier_outputs(layout: RunLayout, split: str, chosen: Sequence) -> None:
    """Remove the meta file first (until the new outputs are complete, none of them vouches for a checkpoint), then
    every other output of this split (metric, TTA and calibration tables of an earlier evaluation must not outlive
    it), saying which earlier ``--metrics`` tables this evaluation does not rewrite."""
    dropped = _dropped_metric_tables(layout, split, chosen)
    for stale in [layout.meta(split), *sorted(layout.eval_dir.glob(f"{split}_*"))]:
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    if dropped:  # said, not silent
        say(f"warning: removed {', '.join(p.name for p in dropped)} of the earlier evaluation (stale for the new "
            f"predictions); pass `metrics` {' '.join(m.name for m in chosen)} {' '.join(_names(dropped, split))} "
            f"to write them again")


def _calibration_outputs(run: TrainedRun, split: str, labels: np.ndarray, probs: np.ndarray,
                         calibration: Calibration) -> tuple[str, pd.DataFrame | None]:
    """The line that says whether the run is calibrated for this checkpoint; where it is, ``<split>_calibration.csv``
    (each finding's ECE without and with the calibration) is written and returned too."""
    if calibration.maps is None:
        return calibration.note, None
    frame = ece_table(labels, probs, run.names, calibration)
    write_csv_atomic(frame, run.layout.calibration_ece(split), index=False, float_format="%.10g")
    return calibration.note, frame


def _dropped_metric_tables(layout: RunLayout, split: str, chosen: Sequence) -> list[Path]:
    """The metric tables (``<split>_<key>.csv``) of an earlier evaluation that ``chosen`` does not write again."""
    own = {layout.auc(split), layout.predictions(split), layout.tta(split), layout.tta_predictions(split),
           layout.calibration_ece(split), *(layout.metric(split, m.key) for m in chosen)}
    return [p for p in sorted(layout.eval_dir.glob(f"{split}_*.csv")) if p not in own]


def _names(tables: Sequence[Path], split: str) -> list[str]:
    """The ``--metrics`` names of metric tables (``test_sens_at_spec0.95.csv`` -> ``sens@spec0.95``)."""
    return [p.stem.removeprefix(f"{split}_").replace("_at_", "@") for p in tables]


def _write_outputs(run: TrainedRun, split: str, items: Sequence[dict], labels: np.ndarray, probs: np.ndarray,
                   patients: np.ndarray, tta: int = 0) -> None:
    """``<split>_roc.png``, ``<split>_predictions.csv``, then ``<split>_meta.json`` (last: it vouches for the rest)."""
    fig = roc_figure(labels, probs, run.names, title=f"{run.config.regime}: {split} ROC ({run.checkpoint.name})",
                     patients=patients)
    save_figure_atomic(fig, run.layout.roc(split), dpi=120)
    plt.close(fig)
    write_csv_atomic(_prediction_frame(items, patients, labels, probs, run.names), run.layout.predictions(split),
                     index=False, float_format="%.12g")
    meta = json.dumps({"split": split, **checkpoint_identity(run.checkpoint), **({"tta": tta} if tta else {})},
                      indent=1) + "\n"
    write_text_atomic(run.layout.meta(split), meta)  # last: it vouches for the files above


def _prediction_frame(items: Sequence[dict], patients: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                      names: Sequence[str]) -> pd.DataFrame:
    """``<split>_predictions.csv``: image, patient, then each finding's probability and truth."""
    predictions = pd.DataFrame({"image": [it["image"] for it in items], "patient": patients})
    for j, name in enumerate(names):
        predictions[name] = probs[:, j]
        predictions[f"true_{name}"] = labels[:, j]
    return predictions
