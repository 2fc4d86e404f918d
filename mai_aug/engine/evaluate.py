"""``mai-aug evaluate`` and ``mai-aug predict``: a trained run's checkpoint applied to a split or to files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset

from mai_aug.data.images import check_image_headers
from mai_aug.data.loader import build_dataset
from mai_aug.data.split import load_datalist
from mai_aug.engine.config import TrainConfig, read_config
from mai_aug.engine.inference import predict_probabilities
from mai_aug.engine.layout import LAST_PREFIX, RunLayout
from mai_aug.engine.network import build_network
from mai_aug.engine.network_spec import stored_network
from mai_aug.engine.precision import inference_dtype, trained_dtype
from mai_aug.engine.preflight import require_free_space, require_writable_file, require_writable_folder
from mai_aug.engine.runtime import RunLog, load_checkpoint, load_model_state, resolve_device
from mai_aug.engine.tta import tta_predictions, tta_table
from mai_aug.errors import MaiAugError, first_line, wrapped_message
from mai_aug.reports.roc import roc_figure
from mai_aug.stats.scores import interval_tables, resolve_metrics
from mai_aug.transforms.regimes import Regime, stored_regime
from mai_aug.utils import save_figure_atomic, write_csv_atomic, write_text_atomic

logger = logging.getLogger("mai_aug")
# free space evaluate wants before inference: the ROC figure and tables, plus each image's predictions row
EVAL_BYTES, EVAL_BYTES_PER_IMAGE = 1 << 20, 1 << 10
SPLIT_KEYS = {"test": "test", "validation": "validation", "training": "training"}


class TrainedRun:
    """A run folder opened for inference: its config, split, regime and network with a checkpoint loaded."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto",
                 trust: bool | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.layout = RunLayout(self.run_dir)
        raw = read_config(self.run_dir)
        self.config = TrainConfig.from_dict(raw)
        self.names: list[str] = list(raw.get("resolved", {}).get("findings", []))
        self.datalist = load_datalist(self.layout.datalist)
        self.names = self.names or list(self.datalist["labels"])
        self.device = resolve_device(device)
        # the regime as trained, from the spec stored in the run folder: editing a regimes file changes nothing here
        self.regime: Regime = stored_regime(raw, f"--run {self.run_dir}", trust)
        # autocast as trained: float16 on CUDA, bfloat16 on CPU or CUDA for a CPU-trained run (engine.precision)
        self.amp_dtype = inference_dtype(trained_dtype(raw), self.device)
        self.amp = self.amp_dtype is not None
        self.checkpoint = self.resolve_checkpoint(checkpoint)
        # the network as trained, from the spec stored in the run folder (checked like a user's file unless trusted)
        spec = stored_network(raw, len(self.names), f"--run {self.run_dir}", trust)
        self.network, _ = build_network(len(self.names), self.config.in_channels, "none", spec,
                                        where=f"--run {self.run_dir}: network", trust=trust)
        load_model_state(self.network, load_checkpoint(self.checkpoint), self.checkpoint)
        self.network.to(self.device).eval()

    def resolve_checkpoint(self, which: str) -> Path:
        if which == "best":
            path = self.layout.best
        elif which == "last":
            path = self.layout.last or self.layout.checkpoints / f"{LAST_PREFIX}N.pt"
        else:
            path = Path(which)
        if path.is_dir():
            raise MaiAugError(f"--checkpoint {which}: {path} is a folder; give a checkpoint file (or best, last)")
        if path.exists() and not path.is_file():
            raise MaiAugError(f"--checkpoint {which}: {path} is not a regular file")
        if not path.is_file():
            raise MaiAugError(f"--checkpoint {which}: {path} not found (has the run finished an epoch?)")
        return path

    def predict(self, items: Sequence[dict], batch_size: int | None = None, workers: int = 0) -> np.ndarray:
        """Sigmoid probabilities (n, findings) for datalist-style items, with the regime's deterministic part."""
        items = [{"image": it["image"], "label": it.get("label", [0] * len(self.names))} for it in items]
        dataset = build_dataset(items, self.regime, train=False, cache="none")
        return self.predict_dataset(dataset, batch_size, workers)

    @torch.no_grad()
    def predict_dataset(self, dataset: Dataset, batch_size: int | None = None, workers: int = 0) -> np.ndarray:
        """Sigmoid probabilities (n, findings) for a dataset of network-ready items (``image`` as the network takes it)."""
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size * 2, num_workers=workers)
        return predict_probabilities(self.network, loader, self.device, self.amp, self.config.in_channels,
                                     len(self.names), amp_dtype=self.amp_dtype)


def evaluate_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str = "auto",
                 n_boot: int = 1000, workers: int = 0, trust: bool | None = None,
                 metrics: Sequence[str] | None = None, tta: int = 0) -> pd.DataFrame:
    """Write ``RUN/eval/<split>_auc.csv``, ``_roc.png``, ``_predictions.csv``, ``_meta.json``; return the AUC table.

    ``_meta.json`` (written last, atomically) names the checkpoint used by file name, size and sha256.

    ``tta``: also average the predictions over this many draws of the regime's random part and write
    ``<split>_tta.csv`` (AUC with and without, and the paired difference) and ``<split>_tta_predictions.csv``.

    ``trust``: allow code in the run's stored regime spec (``--trust-config``); None: the command line's setting.
    ``metrics``: more metrics (``--metrics``; None: the run's own), one ``<split>_<key>.csv`` each, with intervals
    from the same patient resamples as the AUC table's; the returned table's ``attrs["metric_tables"]`` lists them.
    """
    chosen = resolve_metrics(metrics) if metrics is not None else None  # a bad name stops before inference
    run = TrainedRun(run_dir, checkpoint, device, trust)
    chosen = resolve_metrics(run.config.metrics) if chosen is None else chosen
    if split not in SPLIT_KEYS:
        raise MaiAugError(f"--split {split!r}: expected test or validation")
    items = run.datalist[SPLIT_KEYS[split]]
    if not items:
        raise MaiAugError(f"{run.run_dir}: the {split} split is empty")
    check_image_headers([it["image"] for it in items])
    layout = run.layout
    require_writable_folder(layout.eval_dir, "--run")  # before inference, not after it
    require_free_space(layout.eval_dir, EVAL_BYTES + EVAL_BYTES_PER_IMAGE * len(items) * (2 if tta else 1), "--run")
    layout.eval_dir.mkdir(exist_ok=True)
    # the meta file first: until the new outputs are complete, none of them vouches for a checkpoint; then every
    # other output of this split (metric and TTA tables of an earlier evaluation must not outlive it)
    for stale in [layout.meta(split), *sorted(layout.eval_dir.glob(f"{split}_*"))]:
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
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
    _write_outputs(run, split, items, labels, probs, patients, tta)
    return table


def _write_outputs(run: TrainedRun, split: str, items: Sequence[dict], labels: np.ndarray, probs: np.ndarray,
                   patients: np.ndarray, tta: int = 0) -> None:
    """``<split>_roc.png``, ``<split>_predictions.csv``, then ``<split>_meta.json`` (last: it vouches for the rest)."""
    fig = roc_figure(labels, probs, run.names, title=f"{run.config.regime}: {split} ROC ({run.checkpoint.name})")
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


def checkpoint_identity(path: Path) -> dict[str, str | int]:
    """What names a checkpoint's content: its file name, size and sha256 (``eval/<split>_meta.json``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint": Path(path).name, "size": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def evaluated_with(run_dir: Path, split: str, checkpoint: Path, tta: int = 0) -> bool:
    """Whether ``RUN/eval/<split>_*`` were written from ``checkpoint`` as it is now (by its meta file), with
    ``tta`` draws of test-time augmentation where ``tta`` is not 0."""
    meta_path = RunLayout(run_dir).meta(split)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and checkpoint.is_file() and meta.get("split") == split
            and (not tta or meta.get("tta") == tta)
            and {k: meta.get(k) for k in ("checkpoint", "size", "sha256")} == checkpoint_identity(checkpoint))


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path | None = None,
                  checkpoint: str = "best", device: str = "auto", trust: bool | None = None) -> pd.DataFrame:
    """Per-finding probabilities for image files; written to ``out`` as CSV when given.

    Each file is checked by its content first (:func:`~mai_aug.data.images.check_image_headers`): a folder, a
    text file or a DICOM is named in one line before the network is loaded.
    """
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise MaiAugError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    check_image_headers([str(p) for p in images])
    if out is not None:
        require_writable_file(out, "--out")  # before inference, not after it
    run = TrainedRun(run_dir, checkpoint, device, trust)
    try:
        probs = run.predict([{"image": str(Path(p).resolve())} for p in images], batch_size=16)
    except RuntimeError as e:
        message = wrapped_message(e)  # the file and the cause, from mai_aug.data.images.NameBadImage
        raise MaiAugError(message or f"cannot read one of the images: {first_line(e)}") from None
    frame = pd.DataFrame(probs, columns=run.names)
    frame.insert(0, "image", [str(p) for p in images])
    if out is not None:
        write_text_atomic(Path(out), frame.to_csv(index=False, float_format="%.6f"))
    return frame

