"""Turn data options (``--data`` and ``--dataset``, or ``--datalist``) into a checked, reported datalist."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mai_aug.core.errors import note
from mai_aug.core.preflight import require_writable_file
from mai_aug.data.datasets import DataSource, read_dataset
from mai_aug.data.images import check_images_if_asked
from mai_aug.data.nih import VIEWS
from mai_aug.data.split import load_datalist, make_datalist, resolve_split, split_table, write_datalist


def split_data(
    data: str | Path,
    csv: str | Path | None = None,
    images: str | Path | None = None,
    views: Sequence[str] = VIEWS,
    require_all_images: bool = False,
    split: str = "patient",
    val_frac: float = 0.1,
    test_frac: float = 0.2,
    seed: int = 0,
    report: Callable[[str], Any] | None = note,
    source: DataSource | None = None,
) -> dict:
    """Read the dataset under ``data`` and split it by patient; ``report`` hears about dropped rows.

    ``source`` (``--dataset`` and its options) replaces ``data``, ``csv``, ``images``, ``views`` and
    ``require_all_images`` when given; without it the dataset is detected (``--dataset auto``).
    """
    if source is None:
        source = DataSource(data=data, csv=csv, images=images, views=tuple(views),
                            require_all_images=require_all_images)
    table = read_dataset(source, report)
    if table.missing and report is not None:
        report(f"dropped {len(table.missing)} of {len(table.missing) + len(table)} CSV rows whose image "
               f"file is missing (e.g. {table.missing[0]}); `require_all_images` makes this an error")
    split = resolve_split(split, Path(source.data), report)
    return make_datalist(table, split=split, val_frac=val_frac, test_frac=test_frac, seed=seed,
                         data_dir=Path(source.data))


@dataclass(frozen=True)
class SplitRequest:
    """Where a datalist comes from: ``datalist`` (a file, already split), else ``source`` split by patient.

    Attributes:
        source: the dataset and how it is read (``data``, ``dataset`` and its options).
        datalist: a datalist JSON to load instead, or None.
        split: ``patient`` or ``official``; val_frac, test_frac: the patient split's shares; seed: its seed.
    """

    source: DataSource
    datalist: str | Path | None
    split: str
    val_frac: float
    test_frac: float
    seed: int

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SplitRequest:
        """From settings by name; the split is seeded by ``split_seed`` where given (``train``: ``seed`` seeds
        training only), else by ``seed`` (``split``, where the seed is the split's)."""
        seed = settings["split_seed"] if "split_seed" in settings else settings["seed"]
        return cls(DataSource.from_settings(settings), settings.get("datalist"), settings["split"],
                   settings["val_frac"], settings["test_frac"], seed)


def datalist_for(request: SplitRequest, report: Callable[[str], Any] | None = note) -> dict:
    """``request.datalist`` if set, else :func:`split_data` of ``request.source``."""
    if request.datalist is not None:
        return load_datalist(request.datalist)
    return split_data(request.source.data, split=request.split, val_frac=request.val_frac,
                      test_frac=request.test_frac, seed=request.seed, report=report, source=request.source)


def every_image(datalist: dict) -> list[str]:
    """The image paths of every split of ``datalist``, each once, in split order."""
    return list(dict.fromkeys(it["image"] for key in ("training", "validation", "test") for it in datalist.get(key, [])))


def write_split(request: SplitRequest, out: Path | None = None, verify: bool = False, skip: bool = False) -> dict:
    """``mai-aug split``: the datalist, its per-split table printed, written to ``out`` (its images checked as
    ``verify_images``/``skip_bad_images`` ask)."""
    if out is not None:  # a folder, FIFO or device as `out`, or an unwritable one: refused before the data is read
        require_writable_file(out, "`out`")
    datalist = datalist_for(request)
    if out is not None:
        datalist = check_images_if_asked(datalist, verify, skip, note,
                                         Path(out).with_name(f"{Path(out).stem}_bad_images.csv"))
    print(split_table(datalist).to_string())
    if out is not None:
        write_datalist(datalist, out)
        print(f"wrote {out}")
    return datalist
