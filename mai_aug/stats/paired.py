"""Statistics of a regime comparison: per-finding scores and paired differences with honest intervals.

Every regime is scored on the same test patients; each bootstrap resample draws test patients (the same for every
regime and seed: paired), and seed j of every regime shares its initial weights (paired by seed). The uncertainty of
a seed-averaged score has a patient part (the bootstrap) and a seed part net of each run's own test-set noise
(:mod:`mai_aug.stats.seeds`), pooled over the scored findings of each comparison.

Two families of paired differences against the baseline, each corrected on its own:

- **primary**: each regime's macro AUC difference (one per regime), with a marginal 95% interval
  (``diff_ci_low``/``diff_ci_high``) and a star from the simultaneous interval over the regimes compared
  (``primary_ci_low``/``primary_ci_high``; with one other regime the two are the same);
- **secondary** (per finding): every other regime x every other scored finding, max-statistic simultaneous
  intervals.

Stars are given with 1 seed (the intervals then cover the test patients only, as the report says) and from 3 seeds
on, where Satterthwaite's critical values (:mod:`mai_aug.stats.seeds`) hold each family's rate with seed effects
independent or shared by the findings. With 2 seeds no star is given (:data:`NO_STARS_AT`): the seeds' spread has
about 1.6 degrees of freedom for the primary, and benchmarks/stats_calibration.py starred 9% of null studies with
seed effects shared by the findings; the intervals are still shown.

The primary is the macro difference unless a study names a finding (``primary:`` in a preset).

Across the two families (and the other analyses' families) the chance of some false star is higher than 5%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError
from mai_aug.stats.auc import patient_counts, positive_patients, scored_findings, scored_masks
from mai_aug.stats.scores import bootstrap_metric, get_metric, per_finding
from mai_aug.stats.seeds import Runs, Uncertainty, logit_interval, side_by_side, uncertainty

#: Seed counts at which no difference is starred (module docstring).
NO_STARS_AT = (2,)


@dataclass
class StudyScores:
    """Point and bootstrap AUCs of every regime, with what the statistics need to know about the test set.

    ``point[r]`` is (seeds, findings): each seed's AUC on the whole test set. ``boot[r]`` is (seeds, resamples,
    findings): each seed's AUC on each patient resample (NaN for unscored findings). ``scored`` marks findings with
    enough positive patients.
    """

    point: dict[str, np.ndarray]
    boot: dict[str, np.ndarray]
    scored: np.ndarray
    positive_patients: np.ndarray
    bounds: tuple[float, float] = (0.0, 1.0)  # the metric's range (intervals are clipped to it)

    @property
    def seeds(self) -> int:
        return next(iter(self.point.values())).shape[0]


def baseline_regime(regimes: Sequence[str]) -> str:
    """The regime every other is compared with: ``none`` when compared, else the first."""
    regimes = list(regimes)
    return "none" if "none" in regimes else regimes[0]


def score_regimes(labels: np.ndarray, patients: np.ndarray, predictions: dict[str, list[np.ndarray]],
                  n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, metric: str = "auc") -> StudyScores:
    """Point and bootstrap AUCs (or another registered ``metric``) of each regime and seed on one shared set of
    patient resamples: the resamples depend on the labels, patients and ``seed`` only, so every metric of one study
    is computed on the same ones.

    Resamples in which a scored finding has no positive or no negative patient are drawn again (rare with at least
    ``MIN_POSITIVE_PATIENTS``), so the macro mean is over one fixed set of findings in every resample.
    """
    chosen = get_metric(metric)
    labels, patients = np.asarray(labels), np.asarray(patients)
    seeds = {len(p) for p in predictions.values()}
    if len(seeds) != 1:
        raise ValueError(f"every regime needs the same number of seeds, got {sorted(seeds)}")
    k = seeds.pop()
    scored = scored_findings(labels, patients)
    _, inverse = np.unique(patients, return_inverse=True)
    counts, inverse = patient_counts(patients, n_boot, seed, keep=scored_masks(labels, inverse, scored))
    point, boot = {}, {}
    for regime, runs in predictions.items():
        point[regime] = np.stack([per_finding(chosen, labels, p) for p in runs])
        boot[regime] = np.full((k, n_boot, labels.shape[1]), np.nan)
        for s, p in enumerate(runs):
            if scored.any():
                boot[regime][s][:, scored] = bootstrap_metric(chosen, labels[:, scored], p[:, scored], counts, inverse)
    return StudyScores(point, boot, scored, positive_patients(labels, patients), chosen.bounds)


def scored_macro(values: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """``values`` (..., findings) with the mean over scored findings prepended (NaN where none is scored)."""
    macro = values[..., scored].mean(-1, keepdims=True) if scored.any() else np.full(values.shape[:-1] + (1,), np.nan)
    return np.concatenate([macro, values], axis=-1)


def regime_runs(scores: StudyScores, regime: str) -> Runs:
    """One regime's per-seed scores, macro first: (seeds, 1 + findings) points, (seeds, resamples, 1 + findings)."""
    return Runs(scored_macro(scores.point[regime], scores.scored), scored_macro(scores.boot[regime], scores.scored))


def summary_table(scores: StudyScores, names: Sequence[str], baseline: str | None = "none",
                  level: float = 0.95, value_name: str = "auc", primary: str = "macro") -> pd.DataFrame:
    """One row per regime and finding (``macro`` first): the score with a marginal interval and, against
    ``baseline``, the paired difference with its family's interval (module docstring); ``ci_excludes_0``: the star.

    Args:
        value_name: the value column (a metric's key, for scores of another metric than AUC); the correction covers
            this table's families of this one metric.
        primary: the finding (or ``macro``) whose differences form the primary family; the others are secondary.

    Unscored findings get no interval.
    """
    columns = np.concatenate([[0], 1 + np.flatnonzero(scores.scored)]) if scores.scored.any() else np.array([], int)
    runs = {r: regime_runs(scores, r) for r in scores.point}
    rows = [row for r in runs for row in _regime_rows(scores, r, runs[r], columns, names, level, value_name)]
    table = pd.DataFrame(rows)
    target = primary_column(primary, names, columns)
    if baseline in runs and len(runs) > 1 and len(columns):
        _add_differences(table, scores, runs, baseline, target, [int(c) for c in columns if c != target], level)
    for column in ("positive_patients", "findings_scored", "findings_above_0.5")[:3 if value_name == "auc" else 2]:
        if column in table:
            table[column] = table[column].astype("Int64")  # counts stay integers next to the macro row's blanks
    if "ci_excludes_0" in table:
        table["ci_excludes_0"] = table["ci_excludes_0"].fillna(False).astype(bool)
    return table


def primary_column(primary: str, names: Sequence[str], scored_columns: np.ndarray) -> int:
    """The column of the primary comparison (0: macro, 1 + j: finding j).

    Raises:
        MaiAugError: ``primary`` is no finding of the study, or too few test patients have it to score it.
    """
    if primary == "macro":
        return 0
    if primary not in names:
        raise MaiAugError(f"primary: {primary!r} is neither macro nor a finding of this study ({', '.join(names)})")
    column = 1 + list(names).index(primary)
    if column not in scored_columns:
        raise MaiAugError(f"primary: {primary!r} has too few positive test patients to be scored")
    return column


def _regime_rows(scores: StudyScores, regime: str, runs: Runs, columns: np.ndarray, names: Sequence[str],
                 level: float, value_name: str) -> list[dict]:
    """A regime's rows: value, marginal interval on the logit scale (macro: its own seed variance; findings: pooled)."""
    value = runs.value
    low, high = np.full(len(value), np.nan), np.full(len(value), np.nan)
    above = 0
    if len(columns):
        unc = uncertainty([runs.column(0), runs.column(columns[1:])] if len(columns) > 1 else [runs.column(0)])
        low[columns], high[columns] = logit_interval(value[columns], unc.se, np.nan_to_num(unc.marginal_c(level)), scores.bounds)
        if value_name == "auc" and len(columns) > 1:  # above chance: Bonferroni over the scored findings
            strict = unc.marginal_c(1 - (1 - level) / (len(columns) - 1))
            above = int((logit_interval(value[columns], unc.se, strict, scores.bounds)[0][1:] > 0.5).sum())
    rows = []
    for j, finding in enumerate(["macro", *names]):
        rows.append({"regime": regime, "finding": finding, value_name: value[j], "ci_low": low[j],
                     "ci_high": high[j], "positive_patients": scores.positive_patients[j - 1] if j else np.nan,
                     "scored": bool(j in columns), "seeds": scores.seeds,
                     f"{value_name}_sd_over_seeds": np.std(runs.point[:, j], ddof=1) if scores.seeds > 1 else np.nan})
    rows[0]["findings_scored"] = int(scores.scored.sum())
    if value_name == "auc":
        rows[0]["findings_above_0.5"] = above
    return rows


def _add_differences(table: pd.DataFrame, scores: StudyScores, runs: dict[str, Runs], baseline: str, primary: int,
                     secondary: list[int], level: float) -> None:
    """The paired differences against ``baseline``: the primary family (column ``primary`` of every other regime,
    with marginal and family intervals) and the secondary family (the ``secondary`` columns)."""
    others = [r for r in runs if r != baseline]
    diffs = {r: runs[r] - runs[baseline] for r in others}
    width = scores.bounds[1] - scores.bounds[0]  # a difference of two values in the metric's range
    rows_of = {r: table.index[table["regime"] == r] for r in others}
    table.loc[np.concatenate([rows_of[r] for r in others]), f"diff_vs_{baseline}"] = np.concatenate(
        [diffs[r].value for r in others])
    unc = uncertainty([side_by_side([diffs[r].column(primary) for r in others])])
    family = _family([rows_of[r][primary] for r in others], np.array([diffs[r].value[primary] for r in others]), unc,
                     level, "primary", width)
    values, marginal = family["diff"], np.nan_to_num(unc.marginal_c(level)) * unc.se  # se 0: a point
    family["diff_ci_low"], family["diff_ci_high"] = np.maximum(values - marginal, -width), np.minimum(values + marginal, width)
    family["primary_ci_low"], family["primary_ci_high"] = family.pop("low"), family.pop("high")
    frames = [family]
    if secondary:
        unc = uncertainty([diffs[r].column(secondary) for r in others])
        rows = np.concatenate([rows_of[r][secondary] for r in others])
        values = np.concatenate([diffs[r].value[secondary] for r in others])
        frame = _family(rows, values, unc, level, "secondary", width)
        frame["diff_ci_low"], frame["diff_ci_high"] = frame.pop("low"), frame.pop("high")
        frames.append(frame)
    for frame in frames:
        if scores.seeds in NO_STARS_AT:
            frame["ci_excludes_0"] = np.zeros(len(frame["diff"]), bool)
        frame.pop("diff")
        index = frame.pop("row")
        for column, values in frame.items():
            table.loc[index, column] = values


def _family(rows: Sequence[int], diff: np.ndarray, unc: Uncertainty, level: float, name: str,
            width: float) -> dict[str, object]:
    """One family's simultaneous intervals and stars as columns for ``rows`` of the table."""
    c = unc.max_c(level)
    half = np.nan_to_num(c) * unc.se
    live = unc.se > 0
    return {"row": np.asarray(rows), "diff": diff, "family": name, "family_size": len(diff), "simultaneous_c": c,
            "low": np.maximum(diff - half, -width), "high": np.minimum(diff + half, width),
            "ci_excludes_0": live & (np.abs(diff) > half)}
