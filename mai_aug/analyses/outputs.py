"""The study's runs read together: one table per run, checked to cover the same rows as the first run's.

Paired statistics need every regime and seed scored on the same items (test images, shifted images, boxes), so
each reader of per-run outputs (test predictions, shift sweeps, the pointing game) goes through :func:`read_paired`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.core.layout import RunLayout, StudyLayout


def read_paired(out: Path, regimes: Sequence[str], seeds: Sequence[int], path_of: Callable[[RunLayout], Path],
                keys_of: Callable[[pd.DataFrame], pd.DataFrame], mismatch: Callable[[Path, Path], str],
                columns: Sequence[str] = ()) -> tuple[dict[str, list[pd.DataFrame]], pd.DataFrame]:
    """Every run's table (``path_of`` its layout) per regime, in seed order, and the first run's keys.

    Args:
        out: the study folder.
        regimes: the regimes, each with a run of every seed of ``seeds``.
        path_of: which file of a run's layout.
        keys_of: the columns (and order) that must equal the first run's.
        mismatch: the message for a run (first argument) whose keys differ from the first run's (second).
        columns: columns every table must have.

    Raises:
        MaiAugError: one line naming the run whose file is missing, unreadable, lacks a column or differs.
    """
    tables: dict[str, list[pd.DataFrame]] = {}
    first = reference = None
    for regime in regimes:
        for seed in seeds:
            run = StudyLayout(out).run_dir(regime, seed)
            path = path_of(RunLayout(run))
            try:
                frame = pd.read_csv(path)
            except (OSError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                raise MaiAugError(f"{run}: cannot read {path.relative_to(run)} ({first_line(e)})") from None
            missing = [c for c in columns if c not in frame]
            if missing:
                raise MaiAugError(f"{run}: {path.relative_to(run)} lacks column {missing[0]!r}")
            keys = keys_of(frame)
            if reference is None:
                first, reference = run, keys
            elif not keys.equals(reference):
                raise MaiAugError(mismatch(run, first))
            tables.setdefault(regime, []).append(frame)
    return tables, reference


def load_predictions(out: Path, regimes: list[str], seeds: Sequence[int], names: list[str],
                     pick: Callable[[RunLayout, str], Path] = RunLayout.predictions
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    """Labels, patients and per-regime, per-seed predictions of every run's test predictions (``pick``: which file of
    that layout, e.g. ``RunLayout.tta_predictions``).

    Raises MaiAugError naming the run folder when a file is missing or unreadable, or when a run's predictions do not
    cover the same images in the same order as the first run's (paired statistics need one test set).
    """
    truth = [f"true_{n}" for n in names]
    tables, reference = read_paired(
        out, regimes, seeds, lambda run: pick(run, "test"), lambda frame: frame[["image", "patient", *truth]],
        lambda run, first: (f"{run}: its test predictions do not cover the same images in the same order as {first}; "
                            f"re-run its evaluation (`mai-aug evaluate --run {run}`)"),
        columns=["image", "patient", *names, *truth])
    predictions = {regime: [frame[names].to_numpy(dtype=np.float64, copy=True) for frame in frames]
                   for regime, frames in tables.items()}
    labels = reference[[f"true_{n}" for n in names]].to_numpy(dtype=np.float64)  # NaN: unknown (left out per finding)
    return labels, reference["patient"].to_numpy(), predictions
