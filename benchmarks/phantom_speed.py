"""Phantom generation speed on one core (workers=1) and on all cores.

    python benchmarks/phantom_speed.py [--n 600] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mai_aug.data.phantom import PhantomSpec, default_workers, write_phantom


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    for workers in sorted({1, default_workers()}):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_phantom(PhantomSpec(out=Path(tmp), n=args.n, size=args.size), workers=workers)
            dt = time.perf_counter() - t
        print(f"{args.n} images at {args.size} px with {workers} worker(s): {args.n / dt:.0f} images/s")


if __name__ == "__main__":
    main()
