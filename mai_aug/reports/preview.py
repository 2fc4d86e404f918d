"""``mai-aug preview``: what a regime does to real inputs, as PNGs and a captioned grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mai_aug.core.errors import MaiAugError  # noqa: E402
from mai_aug.core.preflight import require_writable_folder
from mai_aug.data.datasets import DataSource, read_dataset  # noqa: E402
from mai_aug.data.images import check_image_headers, image_problem
from mai_aug.data.nih import FINDINGS  # noqa: E402
from mai_aug.reports.images import to_uint8  # noqa: E402
from mai_aug.transforms.regimes import Regime  # noqa: E402


def caption(label: np.ndarray | list[float], names: Sequence[str] = FINDINGS) -> str:
    """The positive labels' names (``names``: the dataset's, in label order); unknown ones marked ``?``."""
    label = np.asarray(label, dtype=np.float64)
    shown = [names[j] for j in np.flatnonzero(label == 1)] + [f"{names[j]}?" for j in np.flatnonzero(np.isnan(label))]
    return ", ".join(shown) if shown else "No Finding"


def write_preview(
    data_dir: Path, regime: Regime, out: Path, n: int = 8, samples: int = 4, seed: int = 0,
    csv: Path | None = None, images: Path | None = None, source: DataSource | None = None,
) -> list[Path]:
    """Write ``samples`` augmented versions of ``n`` images and ``grid.png``; return the sample paths.

    ``source`` (``--dataset`` and its options) replaces ``data_dir``, ``csv`` and ``images`` when given.
    """
    table = read_dataset(source or DataSource(data=data_dir, csv=csv, images=images))
    if len(table) == 0:
        raise MaiAugError(f"`data` {data_dir}: no images to preview")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(table), size=min(n, len(table)), replace=False))
    samples_of = _augmented(table, picks, regime, samples, seed)  # every image decoded before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {out}: cannot create ({e.strerror})") from None
    require_writable_folder(out, "`out`")
    written = []
    for stem, _, row in samples_of:
        for k, pixels in enumerate(row[1:]):
            path = out / f"{stem}_{k}.png"
            Image.fromarray(pixels, mode="L").save(path)
            written.append(path)
    _grid(samples_of, regime.name, out / "grid.png")
    return written


def _augmented(table, picks: np.ndarray, regime: Regime, samples: int,
               seed: int) -> list[tuple[str, str, list[np.ndarray]]]:
    """Per picked image: its stem, caption, and the deterministic image followed by ``samples`` augmented ones."""
    check_image_headers([table.images[i] for i in picks])
    deterministic, augment = regime.full_transform(train=False), regime.full_transform(train=True)
    augment.set_random_state(seed)
    rows = []
    for i in picks:
        item = {"image": table.images[i], "label": table.labels[i].tolist()}
        problem = image_problem(item["image"])  # one named error, not MONAI's nested transform traceback
        if problem is not None:
            raise MaiAugError(f"{item['image']}: {problem}")
        row = [to_uint8(deterministic(dict(item))["image"])]
        row += [to_uint8(augment(dict(item))["image"]) for _ in range(samples)]
        rows.append((Path(item["image"]).stem, caption(table.labels[i], table.label_names), row))
    return rows


def _grid(rows: list[tuple[str, str, list[np.ndarray]]], regime: str, path: Path) -> None:
    cols = len(rows[0][2])
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for r, (stem, text, images) in enumerate(rows):
        for c, pixels in enumerate(images):
            ax = axes[r, c]
            ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # origin upper: as stored
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{stem}\n{text}" if c == 0 else f"{regime} #{c - 1}", fontsize=7)
    fig.suptitle(f"regime {regime!r}: original (deterministic part) and augmented samples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
