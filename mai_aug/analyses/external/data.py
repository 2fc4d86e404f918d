"""An external test set: another dataset's images and labels, read by its adapter and matched to a run's findings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mai_aug.core.choices import EXTERNAL_SPLITS
from mai_aug.core.errors import MaiAugError, say
from mai_aug.core.names import is_safe_name
from mai_aug.data.datasets import DataSource, detect, read_dataset
from mai_aug.data.datasets.table import TEST, DatasetTable
from mai_aug.data.label_map import Matching, match_findings
from mai_aug.data.split import nih_official
from mai_aug.data.store import identity


@dataclass(frozen=True)
class ExternalSpec:
    """What ``evaluate --external`` scores a run on (every field but ``name`` decides whether an output is current).

    Attributes:
        data: the external dataset's folder.
        dataset: its adapter (``auto``, ``nih``, ``chexpert``, ``csv``).
        split: ``all`` its images, or ``official`` its own test set (CheXpert's valid.csv, NIH's test_list.txt).
        label_map: a user's YAML map of its findings to the run's (None: the built-in NIH <-> CheXpert map).
        lesion: with the built-in map, score Lung Lesion by the highest of Mass and Nodule.
        uncertain: CheXpert's uncertain labels (ones, zeros, ignore; None: the adapter's default, ones).
        name: the output folder's name under ``RUN/external/`` (None: the data folder's name).
        source: more data options of its adapter (``csv``, ``image_column``, ``label_columns``, ...).
        shown: how reports name ``data`` (a phantom generated into the cache: its folder's name, not the path).
    """

    data: Path
    dataset: str = "auto"
    split: str = "all"
    label_map: Path | None = None
    lesion: bool = False
    uncertain: str | None = None
    name: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    shown: str | None = None

    @property
    def folder_name(self) -> str:
        """The output folder's name: ``name``, else the data folder's (refused when it is no safe name)."""
        name = self.name or Path(self.data).resolve().name
        if self.name is None and not is_safe_name(name):
            raise MaiAugError(f"`external` {self.data}: its folder name {name!r} cannot name an output folder; "
                              "pass `external_name` NAME")
        return name


@dataclass(frozen=True)
class ExternalSet:
    """The external images, their patients and their labels over the matched findings."""

    spec: ExternalSpec
    dataset: str
    images: list[str]
    patients: np.ndarray
    labels: np.ndarray  # (n, matches), NaN where unknown
    matching: Matching

    def digest(self) -> str:
        """The content identity of the set: every image's path, size and mtime (as the image store keys them), its
        patient and its labels. An external output is current only for the same digest."""
        h = hashlib.sha256()
        for image, patient in zip(self.images, self.patients):
            h.update(f"{image}\0{identity(image)}\0{patient}\n".encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()[:16]


def read_external(spec: ExternalSpec, run_names: list[str]) -> ExternalSet:
    """Read ``spec.data`` with its adapter, keep ``spec.split``'s rows and match its findings to ``run_names``."""
    data = Path(spec.data)
    if not data.is_dir():
        raise MaiAugError(f"`external` {data}: not a folder")
    if spec.split not in EXTERNAL_SPLITS:
        raise MaiAugError(f"`external_split` {spec.split!r}: expected one of {', '.join(EXTERNAL_SPLITS)}")
    source = DataSource(data=data, dataset=spec.dataset, uncertain=spec.uncertain, **spec.source)
    table = read_dataset(source, report=lambda line: say(f"`external`: {line}"))
    rows = _rows(table, data, spec.split)
    if not len(rows):
        raise MaiAugError(f"`external` {data}: no images to score (`external_split` {spec.split})")
    matching = match_findings(run_names, table.label_names, spec.label_map, spec.lesion)
    dataset = spec.dataset if spec.dataset != "auto" else detect(source)
    return ExternalSet(spec, dataset, [table.images[i] for i in rows], np.asarray(table.patients)[rows],
                       matching.external_labels(table.labels[rows]), matching)


def _rows(table: DatasetTable, data: Path, split: str) -> np.ndarray:
    """The table's rows of ``split``: all of them, or the dataset's own test set."""
    if split == "all":
        return np.arange(len(table))
    if table.official is not None:
        return np.flatnonzero(table.official == TEST)
    if (data / "test_list.txt").is_file():
        return np.flatnonzero(nih_official(table, data) == TEST)
    raise MaiAugError(f"`external_split` official: {data} has no official test set (no CheXpert valid.csv, no NIH "
                      "test_list.txt); use `external_split` all")


def check_not_training_data(external: ExternalSet, datalist: dict, run_dir: Path) -> int:
    """Refuse external images that are the run's own training or validation images; return how many external
    patients carry the id of a training or validation patient (flagged: the same dataset, or a coincidence of ids)."""
    seen = {it["image"]: it["patient"] for key in ("training", "validation") for it in datalist[key]}
    shared = [(image, patient) for image, patient in zip(external.images, external.patients) if image in seen]
    if shared:
        patients = len({p for _, p in shared})
        raise MaiAugError(f"`external` {external.spec.data}: {len(shared)} of its images ({patients} patients) are "
                          f"training or validation images of {run_dir}, e.g. {shared[0][0]}: an external test set "
                          "must not share patients with training (score another dataset, or its held-out patients)")
    trained = {str(p) for p in seen.values()}
    return len({str(p) for p in external.patients} & trained)
