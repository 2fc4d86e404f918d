"""The dataset interface: every adapter reads its layout into one :class:`DatasetTable`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mai_aug.core.choices import VIEWS
from mai_aug.core.errors import MaiAugError

#: Views kept by default; the generic CSV has none (its images count as view ``""``).
DEFAULT_VIEWS = VIEWS
#: ``official`` split codes: 0 the training pool (validation is carved from it by patient), 2 the test set.
POOL, TEST = 0, 2


@dataclass
class DataSource:
    """Where the data is and how to read it (the data options of ``split``, ``train``, ``preview``).

    ``uncertain`` None means the CheXpert adapter's default; the ``*_column`` options are the generic CSV's.
    """

    data: str | Path
    dataset: str = "auto"
    csv: str | Path | None = None
    images: str | Path | None = None
    views: tuple[str, ...] = DEFAULT_VIEWS
    require_all_images: bool = False
    uncertain: str | None = None
    image_column: str | None = None
    labels_column: str | None = None
    label_sep: str = "|"
    label_columns: list[str] = field(default_factory=list)
    patient_column: str | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DataSource:
        """From settings by name (a command's parsed flags, a TrainConfig's fields); those absent keep their defaults."""
        values = {name: settings[name] for name in cls.__dataclass_fields__ if name in settings}
        values["views"] = tuple(values.get("views") or DEFAULT_VIEWS)
        values["label_columns"] = list(values.get("label_columns") or [])
        values["dataset"] = values.get("dataset") or "auto"
        values["label_sep"] = values.get("label_sep") or "|"
        return cls(**values)


@dataclass
class DatasetTable:
    """One row per available image, in any dataset's layout.

    Attributes:
        images: absolute image paths.
        names: each image's name in its table (NIH ``Image Index``, CheXpert ``Path``, the CSV's image column).
        patients: (n,) patient ids (int for NIH, str otherwise); images of one patient never straddle splits.
        labels: (n, k) float32 0/1, NaN where a label is unknown (CheXpert's uncertain labels under ``ignore``).
        label_names: the k label names, in column order.
        views: each image's view position (``""`` where the table has none).
        official: (n,) ``POOL``/``TEST`` of the dataset's own split, or None where it has none.
        source: the table file read.
        missing: names listed in the table whose image file was not found (dropped from the rows above).
    """

    images: list[str]
    names: list[str]
    patients: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    views: list[str]
    official: np.ndarray | None
    source: Path
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def item_label(self, i: int) -> list[int | float]:
        """Row ``i`` as a datalist label: 0/1 ints, NaN where unknown."""
        return [int(v) if np.isfinite(v) else float("nan") for v in self.labels[i]]


Reader = Callable[[DataSource, Callable[[str], Any] | None], DatasetTable]
DATASETS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
    """Register an adapter: ``read(source, report) -> DatasetTable`` under ``--dataset name``."""

    def add(reader: Reader) -> Reader:
        DATASETS[name] = reader
        return reader

    return add


def keep_present(paths: list[str | None], names: list[str], source: Path, require_all: bool) -> np.ndarray:
    """(n,) True where the image exists; with ``require_all`` one missing image is an error naming it."""
    present = np.array([p is not None and Path(p).is_file() for p in paths], dtype=bool)
    if require_all and not present.all():
        missing = [n for n, ok in zip(names, present) if not ok]
        raise MaiAugError(f"{len(missing)} of {len(names)} images listed in {source} are missing, e.g. "
                          f"{', '.join(missing[:5])}")
    return present


def first_line_of(path: Path) -> str:
    """A CSV file's header line (BOM stripped); '' for an empty file."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return f.readline().strip()
    except OSError as e:
        raise MaiAugError(f"{path}: cannot read ({e.strerror})") from None
