"""Learning curves of ``mai-aug compare --train-fraction``: every regime trained on nested patient subsets of the
training split, scored on the shared test set, with paired differences against the baseline at each size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.analyses.curves.section import curve_figure, fraction_table
from mai_aug.analyses.outputs import load_predictions
from mai_aug.core.errors import MaiAugError
from mai_aug.data.subsets import findings_without_positives, fraction_label
from mai_aug.reports import compare as report
from mai_aug.stats import paired as stats

CURVE_COLUMNS = ["fraction", "n_train_patients", "n_train_images", "regime", "auc", "ci_low", "ci_high"]


@dataclass
class TrainingSize:
    """One point of the learning curve: its fraction, the study folder of its runs and their training settings."""

    fraction: float
    folder: Path  # holds <regime>/seed-<k> and datalist.json of this size
    datalist: dict
    train_opts: dict[str, Any]
    steps_per_epoch: int
    no_positives: list[str] = field(default_factory=list)  # findings the full training split has and this one lacks
    plan: dict | None = None  # plan_runs of ``folder``; None for the study's own runs (fraction 1)

    @property
    def n_patients(self) -> int:
        return len({it["patient"] for it in self.datalist["training"]})

    @property
    def n_images(self) -> int:
        return len(self.datalist["training"])

    def record(self) -> dict[str, Any]:
        """What compare_config.yaml says of this size."""
        return {"folder": str(self.folder), "n_train_patients": self.n_patients, "n_train_images": self.n_images,
                "steps_per_epoch": self.steps_per_epoch, "no_training_positives": self.no_positives}


def fraction_dir(out: Path, fraction: float) -> Path:
    """The study folder of a training fraction: ``out`` itself for 1 (the study's own runs), else
    ``out/fraction-<f>`` (the one place that names it)."""
    return Path(out) if fraction == 1.0 else Path(out) / f"fraction-{fraction_label(fraction)}"


def training_size(out: Path, fraction: float, subset: dict, full: dict, train_opts: dict, steps: int) -> TrainingSize:
    """The :class:`TrainingSize` of ``subset``: its runs train ``steps`` steps per epoch, as the full runs do."""
    opts = train_opts if fraction == 1.0 else {**train_opts, "steps_per_epoch": steps}
    return TrainingSize(fraction, fraction_dir(out, fraction), subset, opts, steps,
                        findings_without_positives(subset, full))


def curve_statistics(sizes: list[TrainingSize], regimes: list[str], seeds: Sequence[int], names: list[str], n_boot: int,
                     baseline: str) -> pd.DataFrame:
    """``learning_curve.csv``: per size and regime the test macro AUC [marginal CI] and its paired difference against
    ``baseline`` [marginal CI; starred over the regimes' macro comparisons at that size].

    Each size is scored as ``compare`` scores its runs (``score_regimes`` with seed 0 on the shared test set), so the
    rows of fraction 1 are summary.csv's macro rows.
    """
    frames, reference = [], None
    for size in sizes:
        labels, patients, predictions = load_predictions(size.folder, regimes, seeds, names)
        if reference is None:
            reference = (size.folder, labels, patients)
        elif not (np.array_equal(labels, reference[1], equal_nan=True) and np.array_equal(patients, reference[2])):
            raise MaiAugError(f"{size.folder}: its test predictions cover other images than {reference[0]}'s; "
                              f"a learning curve needs one test set (re-run its evaluation)")
        summary = stats.summary_table(stats.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0),
                                      names, baseline=baseline)
        macro = summary[summary["finding"] == "macro"]
        keep = [c for c in (f"diff_vs_{baseline}", "diff_ci_low", "diff_ci_high", "ci_excludes_0") if c in macro]
        frames.append(macro[["regime", "auc", "ci_low", "ci_high", *keep]].assign(
            fraction=size.fraction, n_train_patients=size.n_patients, n_train_images=size.n_images))
    curve = pd.concat(frames, ignore_index=True)
    return curve[[*CURVE_COLUMNS, *[c for c in curve if c not in CURVE_COLUMNS]]]


def write_curve_report(out: Path, curve: pd.DataFrame, sizes: list[TrainingSize], baseline: str, seeds: int,
                       n_boot: int) -> list[str]:
    """``learning_curve.csv`` and ``learning_curve.png`` in ``out``; returns report.md's "Learning curves" section."""
    curve.to_csv(out / "learning_curve.csv", index=False, float_format="%.6f")
    fig = curve_figure(curve)
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)
    steps = sorted({s.steps_per_epoch for s in sizes})
    lines = ["## Learning curves", "",
             "Every regime was also trained on nested patient subsets of the training split: the training patients "
             "are shuffled once by the split seed (the patient first positive for each finding moved to the front, "
             "rarest finding first), and fraction f keeps the images of the first ceil(f x patients), so each smaller "
             "subset lies inside each larger one. Validation and test are the full study's, unchanged. Every run "
             f"trains the same number of updates ({'/'.join(map(str, steps))} steps per epoch, the full runs' "
             "number, for every size): smaller subsets are seen more often, not trained for less. Fraction 1 is the "
             "study's own runs. Macro AUC [marginal 95% interval] per size; against "
             f"`{baseline}`, the paired macro difference [marginal 95% interval, {n_boot} resamples of the test "
             f"patients{' and seeds' if seeds > 1 else ''}], `*` where its interval corrected over the regimes' macro "
             f"comparisons **within that size** excludes 0 (not corrected across sizes).", "",
             "![Learning curves](learning_curve.png)", ""]
    for size in sizes:
        rows = curve[curve["fraction"] == size.fraction]
        where = "the study's runs" if size.fraction == 1.0 else f"`{size.folder.relative_to(out)}/`"
        lines += [f"### Fraction {fraction_label(size.fraction)}: {size.n_patients} patients, {size.n_images} "
                  f"images ({where})", "", report.markdown_table(fraction_table(rows, baseline)), ""]
        if size.no_positives:
            lines += [f"No training positives at this size for: {', '.join(size.no_positives)}.", ""]
    return lines
