"""Read the NIH ChestX-ray14 release exactly: ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``) and images."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mai_aug.core.choices import VIEWS as VIEWS
from mai_aug.core.errors import MaiAugError
from mai_aug.data.headers import require_header

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
CSV_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
HEADER: tuple[str, ...] = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width,Height]",
    "OriginalImagePixelSpacing[x,y]",
)
# The bracketed names hold commas, so each data row has 11 fields for the 9 header names.
COLUMNS: tuple[str, ...] = (
    *HEADER[:7],
    "OriginalImage Width",
    "OriginalImage Height",
    "OriginalImagePixelSpacing x",
    "OriginalImagePixelSpacing y",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass
class NIHTable:
    """The parsed release: one row per available image.

    Attributes:
        frame: ``Image Index``, ``Patient ID`` (int), ``View Position``, ``Follow-up #``, ``image`` (absolute path).
        labels: (rows, 14) uint8 matrix in :data:`FINDINGS` order.
        missing: image names listed in the CSV whose file was not found (dropped from ``frame``).
        csv_path: the CSV that was read.
    """

    frame: pd.DataFrame
    labels: np.ndarray
    missing: list[str]
    csv_path: Path


def find_csv(data_dir: Path) -> Path:
    """Return the metadata CSV inside ``data_dir``, preferring the 2020 revision."""
    for name in CSV_NAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise MaiAugError(f"{data_dir}: no {' or '.join(CSV_NAMES)} found (pass `csv` FILE)")


def _split_header(line: str) -> list[str]:
    """Split a header on commas that are outside brackets; drop the 2017 release's trailing empty name."""
    names = [n.strip() for n in re.split(r",(?![^\[]*\])", line.strip().lstrip("\ufeff"))]
    while names and names[-1] == "":
        names.pop()
    return names


def read_csv(csv_path: Path) -> pd.DataFrame:
    """Read and validate the NIH metadata CSV (both the 2017 and the v2020 variants).

    Raises:
        MaiAugError: naming the file and the column, row or value that is wrong.
    """
    if not csv_path.is_file():
        raise MaiAugError(f"{csv_path}: CSV file not found")
    with open(csv_path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    if not header.strip():
        raise MaiAugError(f"{csv_path}: CSV file is empty")
    names = _split_header(header)
    require_header(csv_path, names, HEADER, "NIH's Data_Entry")
    try:
        frame = pd.read_csv(csv_path, skiprows=1, header=None, dtype=str, keep_default_na=False,
                            encoding="utf-8-sig", index_col=False)
    except pd.errors.EmptyDataError:
        raise MaiAugError(f"{csv_path}: CSV has a header but no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise MaiAugError(f"{csv_path}: cannot parse CSV: {e}") from None
    # The 2017 release ends every row with a comma: a 12th, empty field.
    if frame.shape[1] == len(COLUMNS) + 1 and (frame[frame.columns[-1]] == "").all():
        frame = frame.iloc[:, : len(COLUMNS)]
    if frame.shape[1] != len(COLUMNS):
        raise MaiAugError(f"{csv_path}: rows have {frame.shape[1]} fields; expected {len(COLUMNS)} "
                          "(the bracketed columns hold two values each)")
    frame.columns = list(COLUMNS)
    if frame.empty:
        raise MaiAugError(f"{csv_path}: CSV has a header but no rows")
    frame["Image Index"] = frame["Image Index"].str.strip()
    _validate_rows(frame, csv_path)
    return frame


def _first_bad(frame: pd.DataFrame, mask: pd.Series, column: str, csv_path: Path, what: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask.to_numpy())[0])
        raise MaiAugError(
            f"{csv_path}: row {i + 2} (image {frame['Image Index'].iat[i]!r}): {what} in column {column!r}: {frame[column].iat[i]!r}"
        )


def _validate_rows(frame: pd.DataFrame, csv_path: Path) -> None:
    _first_bad(frame, frame["Image Index"] == "", "Image Index", csv_path, "empty image name")
    pid = frame["Patient ID"].str.strip()
    _first_bad(frame, ~pid.str.fullmatch(r"\d+"), "Patient ID", csv_path, "non-integer patient id")
    too_large = pid.map(lambda text: int(text) > INT64_MAX)
    _first_bad(frame, too_large, "Patient ID", csv_path, f"patient id too large (above {INT64_MAX})")
    frame["Patient ID"] = pid.astype(np.int64)
    view = frame["View Position"].str.strip()
    _first_bad(frame, ~view.isin(VIEWS), "View Position", csv_path, f"unknown view (expected {'/'.join(VIEWS)})")
    frame["View Position"] = view
    dup = frame["Image Index"].duplicated()
    _first_bad(frame, dup, "Image Index", csv_path, "duplicate image name")


def binarize_labels(frame: pd.DataFrame, csv_path: Path | str = "CSV") -> np.ndarray:
    """Turn ``Finding Labels`` (``A|B``, ``No Finding``) into a (rows, 14) 0/1 matrix in :data:`FINDINGS` order."""
    dummies = frame["Finding Labels"].str.replace(" ", "", regex=False).str.get_dummies(sep="|")
    allowed = set(FINDINGS) | {NO_FINDING.replace(" ", "")}
    unknown = [c for c in dummies.columns if c not in allowed]
    if unknown:
        row = int(np.flatnonzero(dummies[unknown[0]].to_numpy())[0])
        raise MaiAugError(
            f"{csv_path}: row {row + 2} (image {frame['Image Index'].iat[row]!r}): unknown finding {unknown[0]!r} "
            f"in column 'Finding Labels' (known: {', '.join(FINDINGS)}, {NO_FINDING})"
        )
    empty = frame["Finding Labels"].str.strip() == ""
    _first_bad(frame, empty, "Finding Labels", Path(csv_path), "empty labels (use 'No Finding')")
    no_finding = NO_FINDING.replace(" ", "")
    if no_finding in dummies.columns:  # "No Finding|Effusion": is the image normal or not? refuse to guess
        found = dummies[[c for c in dummies.columns if c != no_finding]].sum(axis=1) > 0
        _first_bad(frame, (dummies[no_finding] > 0) & found, "Finding Labels", Path(csv_path),
                   f"{NO_FINDING!r} together with a finding")
    labels = np.zeros((len(frame), len(FINDINGS)), dtype=np.uint8)
    for j, name in enumerate(FINDINGS):
        if name in dummies.columns:
            labels[:, j] = dummies[name].to_numpy(dtype=np.uint8, copy=True)
    return labels


def index_images(images_dir: Path) -> dict[str, str]:
    """Map file name to absolute path for every image under ``images_dir``.

    Accepts the flat ``images/`` folder and NIH's archives as unpacked (``images_001/images/*.png``, ...).
    """
    found: dict[str, str] = {}
    stack, seen = [images_dir.resolve()], set()
    while stack:
        folder = stack.pop()
        info = folder.stat()
        identity = (info.st_dev, info.st_ino)
        if identity in seen:  # a symlink back up the tree (images/loop -> images): each folder is read once
            continue
        seen.add(identity)
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if _is_dir(entry):
                        stack.append(Path(entry.path))
                    elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                        found.setdefault(entry.name, entry.path)
        except OSError as e:
            raise MaiAugError(f"{folder}: cannot list the image folder ({e.strerror or e})") from None
    return found


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, through symlinks (NIH archives may be linked in); a broken or looping link is not one."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def image_roots(data_dir: Path, images: Path | None) -> list[Path]:
    """The folders to search for images: ``--images`` or ``DIR/images`` and ``DIR/images_*``."""
    if images is not None:
        if not images.is_dir():
            raise MaiAugError(f"`images` {images}: not a folder")
        return [images]
    roots = sorted(p for p in data_dir.glob("images*") if p.is_dir())
    if not roots:
        raise MaiAugError(f"{data_dir}: no images/ folder (or images_001/ ...) found (pass `images` DIR)")
    return roots


def read_nih(
    data_dir: str | Path,
    csv: str | Path | None = None,
    images: str | Path | None = None,
    views: tuple[str, ...] | list[str] = VIEWS,
    require_all_images: bool = False,
) -> NIHTable:
    """Read the NIH layout under ``data_dir``: labels, patients, views and the image files that exist.

    Args:
        data_dir: the release folder.
        csv: the metadata CSV; by default ``DIR/Data_Entry_2017_v2020.csv`` or ``DIR/Data_Entry_2017.csv``.
        images: the image folder; by default ``DIR/images`` and any ``DIR/images_*`` archives.
        views: keep only these view positions.
        require_all_images: raise instead of dropping rows whose image file is missing.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MaiAugError(f"`data` {data_dir}: not a folder")
    bad_views = [v for v in views if v not in VIEWS]
    if bad_views:
        raise MaiAugError(f"`views`: unknown view {bad_views[0]!r} (expected {' or '.join(VIEWS)})")
    csv_path = Path(csv) if csv is not None else find_csv(data_dir)
    frame = read_csv(csv_path)
    labels = binarize_labels(frame, csv_path)
    index: dict[str, str] = {}
    for root in image_roots(data_dir, Path(images) if images is not None else None):
        for name, path in index_images(root).items():
            index.setdefault(name, path)
    paths = frame["Image Index"].map(index)
    present = paths.notna().to_numpy()
    missing = frame["Image Index"][~present].tolist()
    if missing and require_all_images:
        raise MaiAugError(
            f"{len(missing)} of {len(frame)} images listed in {csv_path} are missing, e.g. {', '.join(missing[:5])}"
        )
    keep = present & frame["View Position"].isin(list(views)).to_numpy()
    out = frame.loc[keep, ["Image Index", "Patient ID", "View Position", "Follow-up #"]].reset_index(drop=True)
    out["image"] = paths[keep].to_numpy()
    return NIHTable(frame=out, labels=labels[keep].copy(), missing=missing, csv_path=csv_path)


def read_name_list(path: Path) -> set[str]:
    """Read one of NIH's ``train_val_list.txt`` / ``test_list.txt``: one image name a line."""
    if not path.is_file():
        raise MaiAugError(f"{path}: official split list not found (needed by `split` official)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}
