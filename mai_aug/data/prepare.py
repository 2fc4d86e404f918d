"""Turn command-line data options (``--data`` or ``--datalist``) into a checked, reported datalist."""

from __future__ import annotations

import argparse
from pathlib import Path

from mai_aug.data.nih import read_nih
from mai_aug.data.split import load_datalist, make_datalist, split_table, write_datalist


def datalist_from_args(args: argparse.Namespace, out: Path | None = None, verbose: bool = True) -> dict:
    """Read and split the data named by ``args`` (or load ``args.datalist``); print a per-split table."""
    if getattr(args, "datalist", None) is not None:
        datalist = load_datalist(args.datalist)
    else:
        table = read_nih(args.data, csv=args.csv, images=args.images, views=tuple(args.views),
                         require_all_images=args.require_all_images)
        if table.missing and verbose:
            print(f"dropped {len(table.missing)} of {len(table.missing) + len(table.frame)} CSV rows whose image "
                  f"file is missing (e.g. {table.missing[0]}); --require-all-images makes this an error")
        datalist = make_datalist(table, split=args.split, val_frac=args.val_frac, test_frac=args.test_frac,
                                 seed=args.seed, data_dir=args.data)
    if verbose:
        print(split_table(datalist).to_string())
    if out is not None:
        write_datalist(datalist, out)
        if verbose:
            print(f"wrote {out}")
    return datalist
