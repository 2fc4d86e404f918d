"""Time `mai-aug split` on a full-size NIH CSV (112,120 rows, ~30,805 patients), generated with empty image files.

    python benchmarks/split_speed.py [--rows 112120] [--dir /tmp/nih-full]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mai_aug.data.nih import FINDINGS, HEADER, read_nih
from mai_aug.data.split import make_datalist, split_table, write_datalist

NIH_PREVALENCE = [0.103, 0.025, 0.042, 0.021, 0.119, 0.022, 0.015, 0.002, 0.177, 0.052, 0.056, 0.030, 0.013, 0.047]


def write_full_csv(root: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    counts = rng.geometric(1 / 3.64, size=rows)  # NIH has ~3.6 images per patient
    patients = np.repeat(np.arange(1, rows + 1), counts)[:rows]
    follow = np.concatenate([np.arange(c) for c in counts])[:rows]
    labels = rng.random((rows, 14)) < np.array(NIH_PREVALENCE)
    lines = [",".join(HEADER)]
    for pid, f, lab in zip(patients, follow, labels):
        name = f"{pid:08d}_{f:03d}.png"
        text = "|".join(n for n, x in zip(FINDINGS, lab) if x) or "No Finding"
        lines.append(f"{name},{text},{f},{pid},{int(rng.integers(1, 95))},M,{'PA' if rng.random() < 0.6 else 'AP'},2500,2048,0.143,0.143")
        (root / "images" / name).touch()
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=112_120)
    p.add_argument("--dir", type=Path)
    args = p.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="nih-full-"))
    if not (root / "Data_Entry_2017_v2020.csv").is_file():
        t = time.perf_counter()
        write_full_csv(root, args.rows)
        print(f"generated {args.rows} rows and empty images in {time.perf_counter() - t:.1f}s under {root}")
    t = time.perf_counter()
    table = read_nih(root)
    t_read = time.perf_counter() - t
    datalist = make_datalist(table, split="patient", seed=0)
    t_split = time.perf_counter() - t - t_read
    write_datalist(datalist, root / "datalist.json")
    total = time.perf_counter() - t
    print(split_table(datalist).loc[["images", "patients", "Hernia"]].to_string())
    print(f"read {t_read:.2f}s + split {t_split:.2f}s + write {total - t_read - t_split:.2f}s = {total:.2f}s "
          f"for {len(table.frame)} images")


if __name__ == "__main__":
    main()
