"""``mai-aug evaluate --external``: a trained run scored on another dataset's images, over the findings both share.

The images go through the run's own deterministic part and network (read from the image store of the run's cache
root, so every run of a study decodes them once). Outputs under ``RUN/external/<name>/`` as ``evaluate`` writes
them: ``auc.csv`` (AUC with patient-bootstrap intervals over the external patients), ``roc.png``,
``predictions.csv`` and ``meta.json`` (last: the checkpoint, the data's identity and the matching it vouches for).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.analyses.external.data import ExternalSet, ExternalSpec, check_not_training_data, read_external
from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity, output_current
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import say
from mai_aug.core.files import save_figure_atomic, write_csv_atomic, write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.locks import holding_run_lock
from mai_aug.core.preflight import require_free_space, require_writable_folder
from mai_aug.data.images import check_image_headers
from mai_aug.reports.roc import roc_figure
from mai_aug.stats.scores import interval_tables, resolve_metrics

logger = logging.getLogger("mai_aug")

AUC_FILE, ROC_FILE, PREDICTIONS_FILE, META_FILE = "auc.csv", "roc.png", "predictions.csv", "meta.json"
#: Free space wanted before inference: the figure and tables, plus each image's predictions row.
EXTERNAL_BYTES, EXTERNAL_BYTES_PER_IMAGE = 1 << 20, 1 << 10


def wanted_meta(external: ExternalSet, n_boot: int) -> dict:
    """The settings an external output must have been written with to be current (besides the checkpoint)."""
    return {"external": str(Path(external.spec.data).resolve()), "dataset": external.dataset, "bootstrap": n_boot,
            "split": external.spec.split, "uncertain": external.spec.uncertain, "data": external.digest(),
            "source": {k: str(v) for k, v in sorted(external.spec.source.items())},
            "matching": external.matching.digest()}


@holding_run_lock
def evaluate_external(run_dir: str | Path, spec: ExternalSpec, checkpoint: str = "best", device: str = "auto",
                      n_boot: int = DEFAULT_BOOTSTRAP, workers: int = 0, trust: bool | None = None,
                      reuse: bool = True, external: ExternalSet | None = None) -> pd.DataFrame:
    """Score a run on ``spec``'s external dataset; return the AUC table (``attrs``: matching, folder, reused).

    Every check (the external table, the matching, images shared with the run's training, image headers, a
    writable run folder with room) comes before inference. With ``reuse``, a current output is read, not redone.
    ``external``: the set already read for these findings (a study reads it once for all its runs).
    """
    run = TrainedRun(run_dir, checkpoint, device, trust)
    folder = run.layout.external_dir(spec.folder_name)
    if external is None or list(external.matching.run_names) != run.names:
        external = read_external(spec, run.names)
    shared_ids = check_not_training_data(external, run.datalist, run.run_dir)
    wanted = wanted_meta(external, n_boot)
    if reuse and output_current(folder / META_FILE, run.checkpoint, **wanted) is not None:
        return _with_attrs(pd.read_csv(folder / AUC_FILE), external, folder, reused=True)
    check_image_headers(external.images)
    require_writable_folder(run.run_dir, "`run`")
    require_free_space(run.run_dir, EXTERNAL_BYTES + EXTERNAL_BYTES_PER_IMAGE * len(external.images), "`run`")
    if shared_ids:  # said, not silent: the same dataset passed again, or another one numbering patients alike
        say(f"warning: {shared_ids} external patients have the id of a training or validation patient of "
            f"{run.run_dir}; if `external` is the run's own dataset, these scores are not external")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # until the new outputs are complete, nothing vouches for them
    logger.info(f"scoring {run.checkpoint} on {len(external.images)} external images of {spec.data}")
    scores = external.matching.scores(run.predict([{"image": image} for image in external.images], workers=workers))
    table = interval_tables(resolve_metrics(None), external.labels, scores, external.patients,
                            external.matching.names, n_boot=n_boot, seed=run.config.seed)["auc"]
    write_csv_atomic(table, folder / AUC_FILE, index=False, float_format="%.10g")
    _write_outputs(run, external, scores, folder, {**wanted, "shared_patient_ids": shared_ids})
    return _with_attrs(table, external, folder, reused=False)


def _write_outputs(run: TrainedRun, external: ExternalSet, scores: np.ndarray, folder: Path, meta: dict) -> None:
    """``roc.png``, ``predictions.csv``, then ``meta.json`` (last: it vouches for the rest)."""
    names = external.matching.names
    fig = roc_figure(external.labels, scores, names, patients=external.patients,
                     title=f"{run.config.regime}: external {Path(external.spec.data).name} ({run.checkpoint.name})")
    save_figure_atomic(fig, folder / ROC_FILE, dpi=120)
    plt.close(fig)
    frame = pd.DataFrame({"image": external.images, "patient": external.patients})
    for j, name in enumerate(names):
        frame[name] = scores[:, j]
        frame[f"true_{name}"] = external.labels[:, j]
    write_csv_atomic(frame, folder / PREDICTIONS_FILE, index=False, float_format="%.12g")
    record = {**checkpoint_identity(run.checkpoint), **meta, "images": len(external.images),
              "patients": int(len(np.unique(external.patients.astype(str)))), "findings": external.matching.record()}
    write_text_atomic(folder / META_FILE, json.dumps(record, indent=1) + "\n")


def _with_attrs(table: pd.DataFrame, external: ExternalSet, folder: Path, reused: bool) -> pd.DataFrame:
    """``table`` with what the command line prints: the matching, the folder, whether reused, the image count."""
    table.attrs.update(matching=external.matching, folder=folder, reused=reused, images=len(external.images))
    return table


def external_current(run_dir: Path, spec: ExternalSpec, external: ExternalSet, checkpoint: Path, n_boot: int) -> bool:
    """Whether ``RUN/external/<name>/`` was written from ``checkpoint`` as it is now, for this external set."""
    meta = RunLayout(run_dir).external_file(spec.folder_name, META_FILE)
    return output_current(meta, checkpoint, **wanted_meta(external, n_boot)) is not None
