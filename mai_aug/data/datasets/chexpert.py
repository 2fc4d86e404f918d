"""The CheXpert adapter: ``train.csv`` / ``valid.csv`` of CheXpert-v1.0 (or -small), frontal images by default.

Split: ``train.csv`` is the training pool and ``valid.csv`` (radiologist-labelled, patients disjoint from
train.csv) is the official *test* set: the public release has no other held-out set, so ``--split official``
carves validation by patient from train.csv and keeps valid.csv untouched for the final AUCs. ``--split patient``
pools both files and splits them by patient like NIH.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.core.choices import UNCERTAIN_POLICIES as UNCERTAIN_POLICIES
from mai_aug.core.errors import MaiAugError
from mai_aug.data.datasets.table import POOL, TEST, DatasetTable, DataSource, first_line_of, keep_present, register
from mai_aug.data.headers import require_header

OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
HEADER: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
TRAIN_CSV, VALID_CSV = "train.csv", "valid.csv"
# Default 'ones' (U-Ones of Irvin et al., 2019): the paper's best policy for Atelectasis and Edema and the usual
# baseline; it keeps every label defined, so every report (paired comparisons included) uses every image.
# 'ignore' (U-Ignore: masked loss and AUC) is the assumption-free choice, opt-in with --uncertain ignore.
DEFAULT_UNCERTAIN = "ones"
# Cell values: 1 positive, 0 negative, -1 uncertain; blank means not mentioned in the report, read as negative.
VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": 0.0}
PATIENT = re.compile(r"^patient\d+$")


def is_chexpert_csv(path: Path) -> bool:
    """Whether ``path`` is a file starting with CheXpert's exact header."""
    return path.is_file() and tuple(n.strip() for n in first_line_of(path).split(",")) == HEADER


def read_table(path: Path) -> pd.DataFrame:
    """One CheXpert CSV, header checked exactly, all cells as stripped strings."""
    if not path.is_file():
        raise MaiAugError(f"{path}: CheXpert CSV not found")
    names = [n.strip() for n in first_line_of(path).split(",")]
    require_header(path, names, HEADER, "CheXpert's")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise MaiAugError(f"{path}: cannot parse CSV: {e}") from None
    if frame.empty:
        raise MaiAugError(f"{path}: CSV has a header but no rows")
    return frame.apply(lambda col: col.str.strip())


def _bad(path: Path, frame: pd.DataFrame, row: int, column: str, what: str) -> MaiAugError:
    return MaiAugError(f"{path}: row {row + 2} (image {frame['Path'].iat[row]!r}): {what} in column {column!r}: "
                       f"{frame[column].iat[row]!r}")


def observation_matrix(frame: pd.DataFrame, path: Path, uncertain: str) -> np.ndarray:
    """(rows, 14) float32 labels; -1 becomes 1, 0 or NaN by the ``uncertain`` policy."""
    labels = np.zeros((len(frame), len(OBSERVATIONS)), dtype=np.float32)
    for j, name in enumerate(OBSERVATIONS):
        values = frame[name].map(VALUES)
        if values.isna().any():
            raise _bad(path, frame, int(np.flatnonzero(values.isna().to_numpy())[0]), name,
                       "bad value (expected 1.0, 0.0, -1.0 or blank)")
        labels[:, j] = values.to_numpy(dtype=np.float32)
    replacement = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
    labels[labels == -1] = replacement
    return labels


def patient_ids(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """The ``patientNNNNN`` folder of each ``Path`` (``.../train/patient00001/study1/view1_frontal.jpg``)."""
    ids = []
    for i, p in enumerate(frame["Path"]):
        parts = Path(p).parts
        found = [part for part in parts[:-1] if PATIENT.match(part)]
        if not found:
            raise _bad(path, frame, i, "Path", "no patientNNNNN folder")
        ids.append(found[-1])
    return np.asarray(ids, dtype=object)


def resolve(root: Path, rel: str) -> str:
    """An image path: ``Path`` under ``root``, less its first folder when that is ``root``'s own name."""
    parts = Path(rel).parts
    if parts and parts[0] == root.name:
        parts = parts[1:]
    return str((root / Path(*parts)).resolve()) if parts else str(root)


def _frontal(frame: pd.DataFrame, path: Path, views: tuple[str, ...]) -> np.ndarray:
    """(rows,) True for frontal images whose AP/PA is in ``views``; Frontal/Lateral must be one of the two."""
    kind = frame["Frontal/Lateral"]
    bad = ~kind.isin(["Frontal", "Lateral"])
    if bad.any():
        raise _bad(path, frame, int(np.flatnonzero(bad.to_numpy())[0]), "Frontal/Lateral",
                   "unknown value (expected Frontal or Lateral)")
    return ((kind == "Frontal") & frame["AP/PA"].isin(list(views))).to_numpy()


def _read_one(path: Path, root: Path, source: DataSource, uncertain: str) -> tuple[DatasetTable, int]:
    """One CSV as a table (frontal, in ``--views``, image present) and the number of rows it had."""
    frame = read_table(path)
    labels = observation_matrix(frame, path, uncertain)
    patients = patient_ids(frame, path)
    keep = _frontal(frame, path, tuple(source.views))
    images = [resolve(root, p) for p in frame["Path"]]
    present = keep_present([im if k else None for im, k in zip(images, keep)], frame["Path"].tolist(), path,
                           source.require_all_images) if keep.any() else keep
    missing = [n for n, k, ok in zip(frame["Path"], keep, present) if k and not ok]
    rows = np.flatnonzero(keep & present)
    table = DatasetTable(
        images=[images[i] for i in rows], names=frame["Path"].iloc[rows].tolist(), patients=patients[rows],
        labels=labels[rows], label_names=list(OBSERVATIONS), views=frame["AP/PA"].iloc[rows].tolist(),
        official=None, source=path, missing=missing,
    )
    return table, len(frame)


@register("chexpert")
def read_chexpert(source: DataSource, report: Callable[[str], Any] | None = None) -> DatasetTable:
    """``DIR/train.csv`` (or ``--csv``) and, when present, ``DIR/valid.csv`` as the official test set."""
    root = Path(source.data)
    if not root.is_dir():
        raise MaiAugError(f"`data` {root}: not a folder")
    uncertain = source.uncertain or DEFAULT_UNCERTAIN
    if uncertain not in UNCERTAIN_POLICIES:
        raise MaiAugError(f"`uncertain` {uncertain!r}: expected one of {', '.join(UNCERTAIN_POLICIES)}")
    image_root = Path(source.images) if source.images is not None else root
    train_csv = Path(source.csv) if source.csv is not None else root / TRAIN_CSV
    train, _ = _read_one(train_csv, image_root, source, uncertain)
    valid_csv = root / VALID_CSV if source.csv is None else None
    parts = [train]
    if valid_csv is not None and valid_csv.is_file():
        parts.append(_read_one(valid_csv, image_root, source, uncertain)[0])
    elif report is not None:
        report(f"{train_csv}: no {VALID_CSV} read beside it, so there is no official test set (`split` official)")
    if report is not None:
        report(f"CheXpert: frontal {'/'.join(source.views)} images only; uncertain labels (-1) -> {uncertain}")
    return _concat(parts)


def _concat(parts: list[DatasetTable]) -> DatasetTable:
    """train.csv's rows (the pool), then valid.csv's (the official test set, when read)."""
    official = (np.concatenate([np.full(len(parts[0]), POOL), np.full(len(parts[1]), TEST)])
                if len(parts) == 2 else None)
    return DatasetTable(
        images=[i for p in parts for i in p.images], names=[n for p in parts for n in p.names],
        patients=np.concatenate([p.patients for p in parts]), labels=np.concatenate([p.labels for p in parts]),
        label_names=list(OBSERVATIONS), views=[v for p in parts for v in p.views], official=official,
        source=parts[0].source, missing=[m for p in parts for m in p.missing],
    )
