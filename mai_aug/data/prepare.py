"""Turn data options (``--data`` and ``--dataset``, or ``--datalist``) into a checked, reported datalist."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def datalist_from_options(options: Any, report: Callable[[str], Any] | None = note) -> dict:
    """``options.datalist`` if set, else :func:`split_data` of ``options.data`` (parsed arguments or a TrainConfig).

    The split is seeded by ``options.split_seed`` where it exists (``train``: ``--seed`` seeds training only),
    else by ``options.seed`` (``split``, where the seed is the split's).
    """
    if getattr(options, "datalist", None) is not None:
        return load_datalist(options.datalist)
    seed = getattr(options, "split_seed", options.seed)
    return split_data(options.data, split=options.split, val_frac=options.val_frac, test_frac=options.test_frac,
                      seed=seed, report=report, source=DataSource.from_options(options))


def every_image(datalist: dict) -> list[str]:
    """The image paths of every split of ``datalist``, each once, in split order."""
    return list(dict.fromkeys(it["image"] for key in ("training", "validation", "test") for it in datalist.get(key, [])))


def datalist_from_args(options: Any, out: Path | None = None) -> dict:
    """``mai-aug split``: the datalist, its per-split table printed, written to ``out``."""
    if out is not None:  # a folder, FIFO or device as --out, or an unwritable one: refused before the data is read
        require_writable_file(out, "`out`")
    datalist = datalist_from_options(options)
    if out is not None:
        datalist = check_images_if_asked(datalist, options, print, Path(out).with_name(f"{Path(out).stem}_bad_images.csv"))
    print(split_table(datalist).to_string())
    if out is not None:
        write_datalist(datalist, out)
        print(f"wrote {out}")
    return datalist
