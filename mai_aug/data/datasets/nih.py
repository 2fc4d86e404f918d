"""The NIH ChestX-ray14 adapter: :func:`mai_aug.data.nih.read_nih`, unchanged, as a :class:`DatasetTable`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mai_aug.data.datasets.table import DatasetTable, DataSource, register
from mai_aug.data.nih import FINDINGS, NIHTable, read_nih


def from_nih(table: NIHTable) -> DatasetTable:
    """An :class:`NIHTable` as the common table; its official split is the lists in the data folder (see split.py)."""
    frame = table.frame
    return DatasetTable(
        images=frame["image"].tolist(), names=frame["Image Index"].tolist(),
        patients=frame["Patient ID"].to_numpy(dtype=np.int64, copy=True),
        labels=table.labels.astype(np.float32), label_names=list(FINDINGS),
        views=frame["View Position"].tolist(), official=None, source=table.csv_path, missing=list(table.missing),
    )


@register("nih")
def read_nih_dataset(source: DataSource, report: Callable[[str], Any] | None = None) -> DatasetTable:
    """``Data_Entry_2017*.csv`` and ``images*/`` under ``--data``, as :func:`read_nih` reads them."""
    table = read_nih(Path(source.data), csv=source.csv, images=source.images, views=tuple(source.views),
                     require_all_images=source.require_all_images)
    return from_nih(table)
