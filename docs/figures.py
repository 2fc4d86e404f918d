"""Make README's phantom figure: a grid of phantom images with their findings.

    python docs/figures.py --data DIR --out docs/phantom_grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mai_aug.data.nih import read_nih  # noqa: E402
from mai_aug.reports.preview import caption  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs/phantom_grid.png"))
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--cols", type=int, default=5)
    args = p.parse_args()
    table = read_nih(args.data)
    picks, seen = [], set()
    for i, lab in enumerate(table.labels):  # one image per finding first, then normals
        new = set(np.flatnonzero(lab)) - seen
        if new and len(picks) < args.rows * args.cols - 2:
            picks.append(i)
            seen |= new
    picks += [i for i, lab in enumerate(table.labels) if lab.sum() == 0][: args.rows * args.cols - len(picks)]
    fig, axes = plt.subplots(args.rows, args.cols, figsize=(2.6 * args.cols, 2.9 * args.rows))
    for ax, i in zip(axes.flat, picks):
        ax.imshow(np.asarray(Image.open(table.frame["image"].iat[i])), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{table.frame['Image Index'].iat[i]} ({table.frame['View Position'].iat[i]})\n{caption(table.labels[i])}",
                     fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
