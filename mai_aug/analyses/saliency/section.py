"""Saliency outputs: the grid of Grad-CAM maps over images with their boxes, and ``RUN/saliency/``'s files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mai_aug.core.files import write_text_atomic  # noqa: E402
from mai_aug.core.layout import RunLayout  # noqa: E402
from mai_aug.reports.compare import (
    interval_text,  # noqa: E402
    markdown_table,  # noqa: E402
)
from mai_aug.stats.pointing import hit_matrix, hit_rate_table  # noqa: E402

GRID_COLUMNS = 4
MAP_FLOOR = 0.2  # map values below this fraction of its peak are left transparent


def grid_figure(panels: list[dict], title: str) -> plt.Figure:
    """One row per finding, up to ``GRID_COLUMNS`` images: image, map (transparent where low), boxes, peak, and a
    colour bar of the map's scale (each map divided by its own peak).

    Drawn in array coordinates (row 0 at the top, column 0 at the left), as the image is stored: the image's right
    is the patient's left in a frontal view.
    """
    findings = list(dict.fromkeys(p["finding"] for p in panels))
    rows = max(len(findings), 1)
    fig, axes = plt.subplots(rows, GRID_COLUMNS, figsize=(2.2 * GRID_COLUMNS, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, finding in enumerate(findings):
        for c, panel in enumerate([p for p in panels if p["finding"] == finding][:GRID_COLUMNS]):
            ax = axes[r, c]
            ax.imshow(panel["image"], cmap="gray")
            peak = float(panel["map"].max())
            scaled = panel["map"] / peak if peak > 0 else panel["map"]
            ax.imshow(np.ma.masked_less(scaled, MAP_FLOOR), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for x, y, w, h in panel["boxes"]:  # edge coordinates; imshow's pixel i spans [i - 0.5, i + 0.5]
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="lime", linewidth=1.2))
            ax.plot(*panel["peak"], marker="x", color="white" if panel["hit"] else "red", markersize=8, mew=2)
            ax.set_title(f"{finding}: {'hit' if panel['hit'] else 'miss'}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 1 - 0.35 / fig.get_figheight()))  # room for the title and the colour bar
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), cax=fig.add_axes((0.915, 0.15, 0.018, 0.7)),
                       alpha=0.45)  # as the maps are drawn over the images
    bar.set_label(f"Grad-CAM / the map's peak (not drawn below {MAP_FLOOR:g})", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


def summary_lines(table: pd.DataFrame, meta: dict) -> list[str]:
    """``summary.md``: the hit rates, what a hit is, and where Cardiomegaly's maps sit."""
    shown = table.assign(hit_rate=[interval_text(v, lo, hi, signed=False) for v, lo, hi in
                                   zip(table["hit_rate"], table["ci_low"], table["ci_high"])])
    lines = ["# Pointing game", "",
             f"Grad-CAM at `{meta['target_layer']}` (feature map {meta['feature_map'][0]}x{meta['feature_map'][1]} for "
             f"a {meta['image_size']} px input). A hit: {meta['hit']}; tolerance {meta['tolerance_px']:g} px "
             f"({meta['tolerance']}). Intervals: 95%, patient bootstrap ({meta['bootstrap']} resamples), for findings "
             f"with 5 or more boxed patients.", "",
             markdown_table(shown[["finding", "hit_rate", "chance", "hits", "n_images", "n_patients"]]), "",
             "`chance`: the hit rate of a peak drawn uniformly over the input (the boxes' share of it, with the "
             "tolerance), what a map that knows nothing scores.", ""]
    orient = meta.get("orientation")
    lines.append(orient["sentence"] if orient else "Orientation: no Cardiomegaly box among these images.")
    return lines + [""]


def write_outputs(run, out_dir: Path, pointing: pd.DataFrame, panels: list[dict], meta: dict) -> pd.DataFrame:
    """pointing.csv, hit_rate.csv, grid.png, summary.md, the grid in TensorBoard, then meta.json; returns the table."""
    pointing.to_csv(out_dir / "pointing.csv", index=False, float_format="%.4f")
    images = list(dict.fromkeys(pointing["image"]))
    patients = pointing.drop_duplicates("image").set_index("image").loc[images, "patient"].to_numpy()
    names = [n for n in run.names if n in set(pointing["finding"])]
    table = hit_rate_table(hit_matrix(pointing, images, names), patients, names, meta["bootstrap"], run.config.seed)
    chance = pointing.groupby("finding")["chance"].mean()
    table.insert(4, "chance", chance.reindex(table["finding"]).to_numpy())  # a peak drawn uniformly at random
    table.insert(len(table.columns), "tolerance_px", meta["tolerance_px"])
    table.to_csv(out_dir / "hit_rate.csv", index=False, float_format="%.6f")
    fig = grid_figure(panels, f"{run.config.regime}: Grad-CAM ({meta['target_layer']}), boxes green, peak x "
                              f"(white hit, red miss)")
    fig.savefig(out_dir / "grid.png", dpi=100)
    plt.close(fig)
    write_tensorboard(run, out_dir / "grid.png")
    write_text_atomic(out_dir / "summary.md", "\n".join(summary_lines(table, meta)))
    write_text_atomic(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")  # last: it vouches for the files
    return table


def write_tensorboard(run, grid: Path) -> None:
    """The grid as image ``saliency/grid`` in the run's TensorBoard folder (``tensorboard_dir`` or RUN/tensorboard)."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(run.config.tensorboard_dir) if run.config.tensorboard_dir else RunLayout(run.run_dir).tensorboard
    with Image.open(grid) as image:
        pixels = np.asarray(image.convert("RGB"))
    writer = SummaryWriter(str(folder))
    try:
        writer.add_image("saliency/grid", pixels, dataformats="HWC")
    finally:
        writer.close()
