"""Read NIH's ``BBox_List_2017.csv`` (and the phantom's copy of it): finding boxes in the original image's pixels.

The header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``: the bracketed name holds commas, so the four numbers
are columns 2-5 of each row. NIH's own file names Infiltration ``Infiltrate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mai_aug.core.errors import MaiAugError

BBOX_FILE = "BBox_List_2017.csv"
COLUMNS = ("image", "finding", "x", "y", "w", "h")
ALIASES = {"Infiltrate": "Infiltration"}


def read_boxes(path: str | Path) -> pd.DataFrame:
    """One row per box: image (file name), finding (NIH's spelling), x, y, w, h (floats, w and h positive).

    Raises:
        MaiAugError: the file is missing, has fewer than six columns, or a row with a non-numeric or non-positive size.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, header=0, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise MaiAugError(f"{path}: no such box file (NIH's {BBOX_FILE}; pass `boxes` FILE)") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise MaiAugError(f"{path}: cannot read as CSV ({e})") from None
    if raw.shape[1] < len(COLUMNS):
        raise MaiAugError(f"{path}: expected the columns Image Index, Finding Label and the four Bbox [x,y,w,h] "
                          f"numbers, found {raw.shape[1]} column(s): {', '.join(map(str, raw.columns))}")
    frame = raw.iloc[:, :len(COLUMNS)].copy()
    frame.columns = list(COLUMNS)
    frame["finding"] = frame["finding"].str.strip().replace(ALIASES)
    for column in COLUMNS[2:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values) | ((values <= 0) if column in ("w", "h") else False)
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            raise MaiAugError(f"{path}: row {k + 2}, column {column}: {frame[column].iloc[k]!r} is not a "
                              f"{'positive ' if column in ('w', 'h') else ''}number")
        frame[column] = values.astype(float)
    return frame


def find_box_file(image_paths: Sequence[str], data: str | Path | None) -> Path | None:
    """``BBox_List_2017.csv`` of a run's data: in ``data`` (the run's ``--data``) or beside the images' folder."""
    candidates = [Path(data)] if data else []
    for image in image_paths[:1]:
        parent = Path(image).parent
        candidates += [parent.parent, parent]
    for folder in candidates:
        if (folder / BBOX_FILE).is_file():
            return folder / BBOX_FILE
    return None
