"""Datasets as adapters: each reads its own layout into one :class:`DatasetTable` (``--dataset nih|chexpert|csv``).

Downstream code sees only the table, and the datalist made from it carries the label names (its ``labels`` key):
the network's outputs, loss weights, TensorBoard tags, metrics.csv columns, reports and previews follow from it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.data.datasets import chexpert, generic, nih  # noqa: F401  (each registers its adapter)
from mai_aug.data.datasets.table import DATASETS, DatasetTable, DataSource, Reader, register
from mai_aug.data.nih import CSV_NAMES

CSV_OPTIONS = ("image_column", "labels_column", "label_columns", "patient_column")


def detect(source: DataSource) -> str:
    """``--dataset auto``: nih when a Data_Entry_2017*.csv is there (or ``--csv`` has NIH's header), chexpert when
    train.csv (or ``--csv``) has CheXpert's header, csv when a generic-CSV option is given; else an error."""
    if any(getattr(source, name) for name in CSV_OPTIONS):
        return "csv"
    data = Path(source.data)
    if not data.is_dir():
        raise MaiAugError(f"`data` {data}: not a folder")
    if source.csv is not None:  # a CheXpert header decides; any other file is read as NIH's, which names its faults
        return "chexpert" if chexpert.is_chexpert_csv(Path(source.csv)) else "nih"
    if any((data / name).is_file() for name in CSV_NAMES):
        return "nih"
    if chexpert.is_chexpert_csv(data / chexpert.TRAIN_CSV):
        return "chexpert"
    raise MaiAugError(f"`data` {data}: cannot tell the dataset: no {' or '.join(CSV_NAMES)} found, no CheXpert "
                      f"{chexpert.TRAIN_CSV} (pass `csv` FILE or `dataset` nih|chexpert|csv)")


def read_dataset(source: DataSource, report: Callable[[str], Any] | None = None) -> DatasetTable:
    """The table of ``source.dataset`` (``auto``: :func:`detect`), after refusing options it would not use."""
    name = detect(source) if source.dataset == "auto" else source.dataset
    reader = DATASETS.get(name) or _custom_adapter(name)
    if name != "csv":
        given = [f"--{o.replace('_', '-')}" for o in CSV_OPTIONS if getattr(source, o)]
        if given:
            raise MaiAugError(f"{', '.join(given)}: generic-CSV option(s), but the dataset is {name}")
    if name != "chexpert" and source.uncertain is not None:
        raise MaiAugError(f"`uncertain` {source.uncertain}: applies to `dataset` chexpert only (the dataset is {name})")
    table = reader(source, report)
    if not isinstance(table, DatasetTable):
        raise MaiAugError(f"`dataset` {name}: the adapter returned a {type(table).__name__}, not a DatasetTable")
    return table


def _custom_adapter(name: str) -> Reader:
    """A user's adapter named by its dotted path (``dataset: {_target_: my_adapter.read_mine}``): code, so trusted only.

    It is called as the built-ins are, ``read(source, report) -> DatasetTable``.
    """
    if "." not in str(name):
        raise MaiAugError(f"`dataset` {name!r}: expected auto, one of {', '.join(DATASETS)}, or a trusted _target_ "
                          f"such as my_adapter.read_mine")
    from mai_aug.core.trust import trusted_callable  # MONAI transforms: only when a dataset names code

    return trusted_callable(name, "dataset")


__all__ = ["DATASETS", "DataSource", "DatasetTable", "detect", "read_dataset", "register"]
