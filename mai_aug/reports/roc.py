"""ROC curves, one panel per finding: the seeds' curves as one band, the AUC and the positives in the panel's title."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mai_aug.stats.auc import per_finding_auc  # noqa: E402

COLUMNS = 4
FPR_GRID = np.linspace(0.0, 1.0, 201)  # where the seeds' curves are compared for the band
PANEL_INCHES = (2.3, 2.45)  # each finding's slot, so that the figure grows with the number of findings
# The margins in inches, fixed rather than found by tight_layout: measuring every label cost 0.3-0.5 s per figure,
# as much as drawing it, and a training run, its evaluation and the study's report each draw one.
MARGIN_INCHES = {"left": 0.6, "right": 0.15, "bottom": 0.45, "top": 0.95}  # top: the figure's and a panel's title
GAP_INCHES = (0.4, 0.75)  # between panels: a panel's tick labels; its axis label and the next panel's title
TICKS = (0.0, 0.5, 1.0)


def positives_text(y: np.ndarray, patients: np.ndarray | None) -> str:
    """``12 pos. patients (30 images)``, the tables' unit first; images alone without patient ids."""
    images = int(y.sum())
    if patients is None:
        return f"{images} pos. images"
    return f"{len(set(patients[y == 1]))} pos. patients ({images} images)"


def seed_curves(y: np.ndarray, runs: Sequence[np.ndarray]) -> np.ndarray:
    """(seeds, len(FPR_GRID)) true positive rate of each seed's ROC curve on the common false positive rates."""
    curves = []
    for s in runs:
        fpr, tpr, _ = roc_curve(y, s)
        curves.append(np.interp(FPR_GRID, fpr, tpr))
    return np.asarray(curves)


def _panel(ax: plt.Axes, y: np.ndarray, runs: Sequence[np.ndarray], auc: float, name: str,
           patients: np.ndarray | None) -> None:
    """One finding: the mean curve of the seeds over the band of their range (one seed: its curve)."""
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls="--")
    if 0 < y.sum() < len(y):
        curves = seed_curves(y, runs)
        if len(runs) > 1:
            ax.fill_between(FPR_GRID, curves.min(0), curves.max(0), color="tab:blue", alpha=0.25, lw=0)
        ax.plot(FPR_GRID, curves.mean(0), color="tab:blue", lw=1.3)
        ax.set_title(f"{name}: AUC {auc:.3f}\n{positives_text(y, patients)}", fontsize=8)
    else:
        ax.set_title(f"{name}: n/a\n{'no positives' if y.sum() == 0 else 'no negatives'}", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal", xticks=TICKS, yticks=TICKS)
    ax.tick_params(labelsize=7)


def roc_figure(labels: np.ndarray, scores: np.ndarray | Sequence[np.ndarray], names: Sequence[str],
               title: str = "ROC", patients: np.ndarray | None = None) -> plt.Figure:
    """One panel per finding; findings without both classes say n/a.

    ``scores`` is one (images, findings) array, or one per seed: then the panel draws the seeds' mean curve over a
    band spanning their curves, and its AUC is the mean of the seeds' AUCs, the value of the comparison's tables.
    ``patients``: each image's patient, so that the positives are counted in patients (the tables' unit) and images.
    """
    runs = [np.asarray(scores)] if np.ndim(scores) == 2 else [np.asarray(s) for s in scores]
    aucs = np.mean([per_finding_auc(labels, s) for s in runs], axis=0)
    labels = np.asarray(labels, dtype=np.float64)
    patients = None if patients is None else np.asarray(patients).astype(str)
    rows = max(1, math.ceil(len(names) / COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(PANEL_INCHES[0] * COLUMNS, PANEL_INCHES[1] * rows + 0.7),
                             squeeze=False)
    _fixed_layout(fig, rows)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for j, (ax, name) in enumerate(zip(axes.flat, names)):
        known = ~np.isnan(labels[:, j])  # an unknown label leaves its image out of this finding's curve
        _panel(ax, labels[known, j], [s[known, j] for s in runs], aucs[j], name,
               None if patients is None else patients[known])
        if j % COLUMNS == 0:
            ax.set_ylabel("true positive rate", fontsize=7)
        if j + COLUMNS >= len(names):  # the lowest panel of its column
            ax.set_xlabel("false positive rate", fontsize=7)
    band = f"; {len(runs)} seeds: mean curve, band = their range, AUC = mean of the seeds'" if len(runs) > 1 else ""
    fig.suptitle(f"{title}{band}", fontsize=9, y=1 - 0.2 / fig.get_figheight())
    return fig


def _fixed_layout(fig: plt.Figure, rows: int) -> None:
    """Place the grid by ``MARGIN_INCHES`` and ``GAP_INCHES``, whatever the figure's size."""
    width, height = fig.get_size_inches()
    margins = MARGIN_INCHES
    axes_width = (width - margins["left"] - margins["right"] - (COLUMNS - 1) * GAP_INCHES[0]) / COLUMNS
    axes_height = (height - margins["bottom"] - margins["top"] - (rows - 1) * GAP_INCHES[1]) / rows
    fig.subplots_adjust(left=margins["left"] / width, right=1 - margins["right"] / width,
                        bottom=margins["bottom"] / height, top=1 - margins["top"] / height,
                        wspace=GAP_INCHES[0] / axes_width, hspace=GAP_INCHES[1] / axes_height)
