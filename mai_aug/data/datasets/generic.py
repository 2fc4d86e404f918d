"""The generic CSV adapter: an image-path column and labels as 0/1 columns or one separator-joined column.

``--dataset csv --csv FILE --image-column C`` with ``--label-columns A B ...`` (label names: those columns) or
``--labels-column L --label-sep '|'`` (label names: every distinct value in L, sorted; an empty cell or
``No Finding`` is an image without labels), and optionally ``--patient-column P``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.core.errors import MaiAugError
from mai_aug.data.datasets.table import DEFAULT_VIEWS, DatasetTable, DataSource, keep_present, register

NO_FINDING = "No Finding"
ONE_HOT = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0}
# Separators a user might have meant: a value still holding one after splitting was joined by another.
OTHER_SEPARATORS = ("|", ",", ";", "/")


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MaiAugError(f"`csv` {path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise MaiAugError(f"`csv` {path}: CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise MaiAugError(f"`csv` {path}: cannot parse CSV: {e}") from None
    if frame.empty:
        raise MaiAugError(f"`csv` {path}: CSV has a header but no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda col: col.str.strip())


def _need(frame: pd.DataFrame, path: Path, flag: str, column: str) -> None:
    if column not in frame.columns:
        raise MaiAugError(f"`csv` {path}: {flag} {column!r} is not a column (columns: {', '.join(frame.columns)})")


def _bad(path: Path, frame: pd.DataFrame, image_column: str, row: int, column: str, what: str) -> MaiAugError:
    return MaiAugError(f"`csv` {path}: row {row + 2} (image {frame[image_column].iat[row]!r}): {what} in column "
                       f"{column!r}: {frame[column].iat[row]!r}")


def one_hot_labels(frame: pd.DataFrame, path: Path, source: DataSource) -> tuple[np.ndarray, list[str]]:
    """(rows, k) labels from ``--label-columns`` holding 0 or 1."""
    labels = np.zeros((len(frame), len(source.label_columns)), dtype=np.float32)
    for j, name in enumerate(source.label_columns):
        _need(frame, path, "`label_columns`", name)
        values = frame[name].map(ONE_HOT)
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise _bad(path, frame, source.image_column, row, name, "bad value (expected 0 or 1)")
        labels[:, j] = values.to_numpy(dtype=np.float32)
    return labels, list(source.label_columns)


def joined_labels(frame: pd.DataFrame, path: Path, source: DataSource) -> tuple[np.ndarray, list[str]]:
    """(rows, k) labels from one ``--label-sep``-joined column; names are its distinct values, sorted."""
    column, sep = source.labels_column, source.label_sep
    _need(frame, path, "`labels_column`", column)
    tokens = [[t.strip() for t in v.split(sep)] if v and v != NO_FINDING else [] for v in frame[column]]
    others = [s for s in OTHER_SEPARATORS if s != sep]
    for i, row in enumerate(tokens):
        if any(t == "" for t in row):
            raise _bad(path, frame, source.image_column, i, column, f"empty label after splitting on {sep!r}")
        if any(o in t for t in row for o in others):
            raise _bad(path, frame, source.image_column, i, column,
                       f"a label still holds a separator after splitting on {sep!r} (pass the right `label_sep`)")
        if NO_FINDING in row:
            raise _bad(path, frame, source.image_column, i, column, f"{NO_FINDING!r} joined with other labels")
    names = sorted({t for row in tokens for t in row})
    if not names:
        raise MaiAugError(f"`csv` {path}: `labels_column` {column!r} holds no labels (every row is empty)")
    index = {n: j for j, n in enumerate(names)}
    labels = np.zeros((len(frame), len(names)), dtype=np.float32)
    for i, row in enumerate(tokens):
        labels[i, [index[t] for t in row]] = 1.0
    return labels, names


def _check_options(source: DataSource, path: Path) -> None:
    if not source.image_column:
        raise MaiAugError("`dataset` csv needs `image_column` C (and `label_columns` or `labels_column`)")
    if bool(source.label_columns) == bool(source.labels_column):
        raise MaiAugError("`dataset` csv needs exactly one of `label_columns` A B ... or `labels_column` C")
    if tuple(source.views) != DEFAULT_VIEWS:
        raise MaiAugError(f"`views` {' '.join(source.views)}: `dataset` csv has no view column to filter on")


@register("csv")
def read_generic(source: DataSource, report: Callable[[str], Any] | None = None) -> DatasetTable:
    """``--csv FILE``: images relative to ``--images`` or ``--data``; absolute paths kept."""
    if source.csv is None:
        raise MaiAugError("`dataset` csv needs `csv` FILE")
    path = Path(source.csv)
    _check_options(source, path)
    frame = _read(path)
    _need(frame, path, "`image_column`", source.image_column)
    empty = (frame[source.image_column] == "").to_numpy()
    if empty.any():
        raise _bad(path, frame, source.image_column, int(np.flatnonzero(empty)[0]), source.image_column, "empty path")
    dup = frame[source.image_column].duplicated().to_numpy()
    if dup.any():  # one image twice could sit in two splits
        raise _bad(path, frame, source.image_column, int(np.flatnonzero(dup)[0]), source.image_column,
                   "duplicate image path")
    labels, names = (one_hot_labels if source.label_columns else joined_labels)(frame, path, source)
    if source.patient_column:
        _need(frame, path, "`patient_column`", source.patient_column)
        blank = (frame[source.patient_column] == "").to_numpy()
        if blank.any():
            raise _bad(path, frame, source.image_column, int(np.flatnonzero(blank)[0]), source.patient_column,
                       "empty patient id")
        patients = frame[source.patient_column].to_numpy(dtype=object)
    else:
        patients = frame[source.image_column].to_numpy(dtype=object)
        if report is not None:
            report(f"`csv` {path}: no `patient_column`, so each image is its own patient: images of one patient "
                   "may land in two splits (leakage risk)")
    root = Path(source.images) if source.images is not None else Path(source.data)
    images = [str((root / p).resolve()) for p in frame[source.image_column]]
    present = keep_present(images, frame[source.image_column].tolist(), path, source.require_all_images)
    rows = np.flatnonzero(present)
    return DatasetTable(
        images=[images[i] for i in rows], names=frame[source.image_column].iloc[rows].tolist(),
        patients=patients[rows], labels=labels[rows], label_names=names, views=[""] * len(rows), official=None,
        source=path, missing=frame[source.image_column][~present].tolist(),
    )
