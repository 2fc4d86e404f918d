"""``mai-aug robustness``: a trained run's test AUC under graded test-time shifts (see :mod:`mai_aug.transforms.shifts`).

The test images are read from the run's image store; each shift level then runs the regime's deterministic part in
the loader, and the shift on whole batches on the run's device before the network. The identity level of every shift is the same set of predictions, made exactly as
``mai-aug evaluate`` makes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.analyses.evaluate.run import SPLIT_KEYS
from mai_aug.analyses.robustness.section import shift_categories, shift_figure
from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity, output_current
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import atomic_write, save_figure_atomic, write_csv_atomic, write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.locks import holding_run_lock
from mai_aug.core.logs import RunLog
from mai_aug.core.preflight import require_writable_folder
from mai_aug.data.loader import IndexedDataset
from mai_aug.data.nih import read_nih
from mai_aug.data.split import site_shifted_patients
from mai_aug.stats.auc import auc_table
from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels
from mai_aug.transforms.shifts import build_batch_shift

logger = logging.getLogger("mai_aug")
SITE = "site"


def site_items(items: list[dict], site_dir: Path) -> list[dict]:
    """The run's test items with each image replaced by the same image of a ``--test-shift site`` phantom.

    Raises:
        MaiAugError: ``site_dir`` is no site-shifted phantom, or one of the images is missing there, belongs to a
            patient not imaged at the shifted site, or has other labels (another phantom seed or size).
    """
    shifted = site_shifted_patients(site_dir)
    if shifted is None:
        raise MaiAugError(f"`site_data` {site_dir}: not a phantom made with `test_shift` site (no such phantom.json)")
    table = read_nih(site_dir)
    rows = {name: k for k, name in enumerate(table.frame["Image Index"])}
    out = []
    for it in items:
        name = Path(it["image"]).name
        k = rows.get(name)
        if k is None or int(it["patient"]) not in shifted:
            why = "is not in it" if k is None else f"belongs to patient {it['patient']}, not imaged at the shifted site"
            raise MaiAugError(f"`site_data` {site_dir}: test image {name} {why}; make it with the run's phantom "
                              f"`seed`, `n` and `size`, and split that phantom by its official lists (train "
                              f"`split` official; compare: a preset with data: {{split: official}}) so the test "
                              f"patients match")
        if [int(v) for v in table.labels[k]] != [int(v) for v in it["label"]]:
            raise MaiAugError(f"`site_data` {site_dir}: test image {name} has other labels there (another phantom)")
        out.append({**it, "image": str(table.frame["image"].iloc[k])})
    return out


def sweep_predictions(run: TrainedRun, items: list[dict], levels: dict[str, list[float]],
                      site: list[dict] | None = None, workers: int = 0) -> dict[tuple[str, float], np.ndarray]:
    """Probabilities (n, findings) per (shift, level); identity levels share one prediction (``evaluate``'s).

    The images are read from the run's image store (``--cache store``; decoded each level with ``--cache none``)
    through the regime's deterministic part; each level's shift then runs on whole batches on the run's device
    (:func:`~mai_aug.transforms.shifts.build_batch_shift`), before the network.
    """
    test = IndexedDataset(run.dataset(items))
    reference = run.predict_dataset(test, workers=workers)
    out, total = {}, sum(map(len, levels.values()))
    for name, values in levels.items():
        for level in values:
            shift = build_batch_shift(name, level)
            logger.info(f"{name} {level:g} ({len(out) + 1}/{total})")
            out[(name, level)] = reference if shift is None else run.predict_dataset(test, workers=workers,
                                                                                     shift=shift)
    if site is not None:
        out[(SITE, 0.0)] = reference
        out[(SITE, 1.0)] = run.predict(site, workers=workers)
    return out


def sweep_table(predictions: dict[tuple[str, float], np.ndarray], labels: np.ndarray, patients: np.ndarray,
                names: list[str], n_boot: int, seed: int) -> pd.DataFrame:
    """``auc_table`` (per finding and macro, patient-bootstrap interval) of each (shift, level), stacked."""
    tables = []
    for (name, level), probs in predictions.items():
        table = auc_table(labels, probs, patients, names, n_boot=n_boot, seed=seed)
        table.insert(0, "level", level)
        table.insert(0, "shift", name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def sweep_arrays(predictions: dict[tuple[str, float], np.ndarray], items: list[dict],
                 names: list[str]) -> dict[str, np.ndarray]:
    """``predictions.npz``'s arrays: the test images, patients and labels once, then one (n, findings) array per
    (shift, level), named ``level_<k>`` in the order of ``shifts`` / ``levels`` (``compare`` reads a level at a time)."""
    keys = list(predictions)
    arrays = {"images": np.asarray([str(it["image"]) for it in items]),
              # as the datalist has them (integers stay integers: the bootstrap orders patients as compare does)
              "patients": np.asarray([it["patient"] for it in items]),
              "labels": np.asarray([it["label"] for it in items], dtype=np.float64), "findings": np.asarray(names),
              "shifts": np.asarray([k[0] for k in keys]), "levels": np.asarray([k[1] for k in keys], np.float64)}
    arrays.update({f"level_{k}": np.asarray(predictions[key], np.float64) for k, key in enumerate(keys)})
    return arrays


def read_sweep(path: str | Path) -> pd.DataFrame:
    """A ``predictions.npz`` as one long table: a row per (shift, level, test image) with its patient, probabilities
    and labels (``true_<finding>``), for reading a sweep outside mai_aug."""
    with np.load(path, allow_pickle=False) as arrays:
        names = arrays["findings"].tolist()
        frames = []
        for k, (shift, level) in enumerate(zip(arrays["shifts"].tolist(), arrays["levels"].tolist())):
            frame = pd.DataFrame({"shift": shift, "level": level, "image": arrays["images"],
                                  "patient": arrays["patients"]})
            frame[names] = arrays[f"level_{k}"]
            frame[[f"true_{n}" for n in names]] = arrays["labels"]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def swept_with(run_dir: Path, checkpoint: Path, levels: dict[str, list[float]], n_boot: int,
               site_data: str | Path | None) -> bool:
    """Whether ``RUN/robustness/`` holds the test sweep of these levels from ``checkpoint`` as it is now (meta.json)."""
    return output_current(RunLayout(run_dir).robustness_dir / "meta.json", checkpoint, split="test", levels=levels,
                          bootstrap=n_boot, site_data=str(site_data) if site_data is not None else None) is not None


@holding_run_lock
def robustness_run(run_dir: str | Path, shifts: Sequence[str] = tuple(SHIFT_TYPES), levels: Sequence[str] = (),
                   split: str = "test", checkpoint: str = "best", device: str = "auto", n_boot: int = DEFAULT_BOOTSTRAP,
                   workers: int = 0, site_data: str | Path | None = None, trust: bool | None = None) -> pd.DataFrame:
    """Write ``RUN/robustness/``: ``table.csv``, ``<shift>.png``, ``predictions.npz``, ``meta.json``; return the table.

    ``levels``: ``SHIFT=V1,V2,...`` entries replacing a shift's default levels. ``site_data``: a phantom made with
    ``--test-shift site`` whose images replace the test images as one more shift (``site``, levels 0 and 1).
    The bootstrap is seeded with the run's seed, as ``evaluate`` seeds it: the identity rows equal
    ``eval/<split>_auc.csv``.
    """
    chosen = parse_levels(levels, list(shifts))
    run = TrainedRun(run_dir, checkpoint, device, trust)
    if split not in SPLIT_KEYS:
        raise MaiAugError(f"`split` {split!r}: expected test or validation")
    items = run.datalist[SPLIT_KEYS[split]]
    if not items:
        raise MaiAugError(f"{run.run_dir}: the {split} split is empty")
    site = site_items(items, Path(site_data)) if site_data is not None else None
    out_dir = RunLayout(run.run_dir).robustness_dir
    require_writable_folder(out_dir, "`run`")
    out_dir.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (out_dir / "meta.json").unlink()  # until the new outputs are complete, none of them vouches for anything
    with RunLog(out_dir / "robustness.log"):  # on the terminal too: a full test split takes a while per level
        logger.info(f"robustness of {run.checkpoint} on {len(items)} {split} images: {chosen}")
        predictions = sweep_predictions(run, items, chosen, site, workers)
    labels = np.asarray([it["label"] for it in items], dtype=np.float64)  # NaN: unknown, left out per finding
    patients = np.asarray([it["patient"] for it in items])
    table = sweep_table(predictions, labels, patients, run.names, n_boot, run.config.seed)
    write_csv_atomic(table, out_dir / "table.csv", index=False, float_format="%.10g")
    arrays = sweep_arrays(predictions, items, run.names)
    atomic_write(RunLayout(run.run_dir).robustness_predictions, lambda f: np.savez_compressed(f, **arrays))
    for name in dict.fromkeys(table["shift"]):
        unit = SHIFT_TYPES[name].unit if name in SHIFT_TYPES else "0: the run's test images, 1: the site phantom's"
        fig = shift_figure({run.config.regime: table[table["shift"] == name]}, name, unit, shift_categories(name))
        save_figure_atomic(fig, out_dir / f"{name}.png", dpi=110)
        plt.close(fig)
    meta = {"split": split, **checkpoint_identity(run.checkpoint), "levels": chosen, "bootstrap": n_boot,
            "site_data": str(site_data) if site_data is not None else None}
    write_text_atomic(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")  # last: it vouches for the files
    return table

