"""Random row reads of an image store from the page cache: positioned reads (the store's RowFile) and a memory map.

    python benchmarks/store_reads.py [--rows 3000] [--size 320] [--passes 3] [--folder /tmp]

Writes a store file of ``rows`` random ``size`` px rows with the store's own writer, then reads every row in a
random order ``passes`` times with ``RowFile.read`` and twice through ``numpy.load(mmap_mode="r")``. The file is
small enough to stay in the page cache, so these are the reads' own costs, not the disk's (full_scale.py's read
figure comes right after an 11 GB build, partly from the disk).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mai_aug.data.store import RowFile, preallocate


def write_rows(folder: Path, rows: int, size: int) -> tuple[Path, tuple[int, ...], int]:
    """A store array of ``rows`` random rows; its path, row shape and first row's offset."""
    path, shape = folder / "images.npy", (1, size, size)
    offset = preallocate(path, (rows, *shape), folder)
    writer = RowFile(path, shape, offset, write=True)
    rng = np.random.default_rng(0)
    for row in range(rows):
        writer.put(row, rng.integers(0, 256, shape, dtype=np.uint8))
    writer.sync()
    writer.close()
    return path, shape, offset


def rate(read: Callable[[int], np.ndarray], order: np.ndarray) -> float:
    """Rows/s of ``read`` over ``order``."""
    start = time.perf_counter()
    for row in order:
        read(int(row))
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the temporary store file goes (default: the system's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path, shape, offset = write_rows(Path(folder), args.rows, args.size)
        order = np.random.default_rng(1).permutation(args.rows)
        rows = RowFile(path, shape, offset)
        positioned = [rate(rows.read, order) for _ in range(args.passes)]
        mapped_array = np.load(path, mmap_mode="r")
        mapped = [rate(lambda row: np.array(mapped_array[row]), order) for _ in range(2)]
        rows.close()
    print(f"{args.rows} rows of {args.size} px from the page cache, random order")
    print(f"positioned reads (RowFile): {', '.join(f'{r:,.0f}' for r in positioned)} images/s per pass")
    print(f"memory map: {', '.join(f'{r:,.0f}' for r in mapped)} images/s per pass")


if __name__ == "__main__":
    main()
