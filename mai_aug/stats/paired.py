"""Statistics of a regime comparison: per-finding scores and paired differences with honest intervals.

Every regime is scored on the same test patients. Each bootstrap resample draws test patients (the same for every
regime and seed: paired) and, with k >= 2 seeds, k seed indices with replacement (the same for every regime: seed j
of every regime shares its initial weights, so the pairing is by seed), so training-seed variance enters every
interval and star. Differences against the baseline get max-statistic simultaneous intervals over the whole family
(every other regime x every scored finding, plus each regime's macro difference): over all of them, the chance of
any false star is at most 5% when the deviations are normal. Measured in 1000 simulated null studies with seed
variance (tests/test_stats.py): 4.7%, 3.8% and 4.2% with 2, 3 and 5 seeds; with one seed and no seed variance 6.6%,
where the patient bootstrap of 80 patients is slightly too narrow. Holm on bootstrap p-values cannot work here: with
1000 resamples the smallest p-value is 1/1001, above 0.05/28 for 3 regimes and 14 findings, so nothing could ever
be starred.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mai_aug.stats.auc import (
    bootstrap_sd,
    patient_counts,
    positive_patients,
    scored_findings,
    scored_masks,
    sd_interval,
)
from mai_aug.stats.scores import bootstrap_metric, get_metric, per_finding

#: c -> kappa(c) -> c is iterated from c = 1.96 until c moves by less than this (at most 20 rounds; with 2 seeds it
#: settles within 11 rounds, 4 on average, in 40 simulated studies of tests/test_stats.py; 3 and 5 seeds within 4).
FIXED_POINT_TOL = 1e-3


@dataclass
class StudyScores:
    """Point and bootstrap AUCs of every regime, with what the statistics need to know about the test set.

    ``point[r]`` is (seeds, findings): each seed's AUC on the whole test set. ``boot[r]`` is (seeds, resamples,
    findings): each seed's AUC on each patient resample (NaN for unscored findings). ``seed_draws`` is
    (resamples, seeds): the seed indices each resample draws. ``scored`` marks findings with enough positive patients.
    """

    point: dict[str, np.ndarray]
    boot: dict[str, np.ndarray]
    seed_draws: np.ndarray
    scored: np.ndarray
    positive_patients: np.ndarray
    bounds: tuple[float, float] = (0.0, 1.0)  # the metric's range (intervals are clipped to it)

    @property
    def seeds(self) -> int:
        return self.seed_draws.shape[1]


def baseline_regime(regimes: Sequence[str]) -> str:
    """The regime every other is compared with: ``none`` when compared, else the first."""
    regimes = list(regimes)
    return "none" if "none" in regimes else regimes[0]


def score_regimes(labels: np.ndarray, patients: np.ndarray, predictions: dict[str, list[np.ndarray]],
                  n_boot: int = 1000, seed: int = 0, metric: str = "auc") -> StudyScores:
    """Point and bootstrap AUCs (or another registered ``metric``) of each regime and seed on one shared set of
    patient and seed resamples: the resamples depend on the labels, patients and ``seed`` only, so every metric of
    one study is computed on the same ones.

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
    seed_draws = np.random.default_rng(seed + 1).integers(0, k, size=(n_boot, k))
    point, boot = {}, {}
    for regime, runs in predictions.items():
        point[regime] = np.stack([per_finding(chosen, labels, p) for p in runs])
        boot[regime] = np.full((k, n_boot, labels.shape[1]), np.nan)
        for s, p in enumerate(runs):
            if scored.any():
                boot[regime][s][:, scored] = bootstrap_metric(chosen, labels[:, scored], p[:, scored], counts, inverse)
    return StudyScores(point, boot, seed_draws, scored, positive_patients(labels, patients), chosen.bounds)


def seed_scale(k: int, c: float) -> float:
    """kappa: the factor on the seed part of a deviation for an interval of ``c`` standard errors; 0 with one seed.

    Resampling k seeds shrinks their variance by (k-1)/k, and a variance estimated from few seeds is itself
    uncertain: sqrt(k/(k-1)) * t_{k-1}(q) / z(q), at the level q = Phi(c) that c stands for, widens the seed part
    as Student's t says (for a marginal 95 % interval c = 1.96; a simultaneous c is larger, where t's heavy tail
    matters more).
    """
    if k < 2:
        return 0.0
    q = stats.norm.cdf(c)
    return float(np.sqrt(k / (k - 1)) * stats.t.ppf(q, k - 1) / c)


def scored_macro(aucs: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """``aucs`` (..., findings) with the mean over scored findings prepended (NaN where none is scored)."""
    macro = aucs[..., scored].mean(-1, keepdims=True) if scored.any() else np.full(aucs.shape[:-1] + (1,), np.nan)
    return np.concatenate([macro, aucs], axis=-1)


def regime_deviations(scores: StudyScores, regime: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point AUC (1 + findings: macro first, the mean over scored findings) and each resample's deviation from it,
    split into a patient part (every seed, patients resampled) and a seed part (drawn seeds, whole test set)."""
    point = scored_macro(scores.point[regime], scores.scored)
    value = point.mean(0)
    patient_part = scored_macro(scores.boot[regime], scores.scored).mean(0) - value
    seed_part = point[scores.seed_draws].mean(1) - value
    return value, patient_part, seed_part


def standard_errors(patient_part: np.ndarray, seed_part: np.ndarray, k: int, c: float) -> np.ndarray:
    """Per column: sqrt(SD(patient part)^2 + (kappa SD(seed part))^2), kappa from ``seed_scale(k, c)``."""
    return np.hypot(bootstrap_sd(patient_part), seed_scale(k, c) * bootstrap_sd(seed_part))


def max_normal_quantile(cov: np.ndarray, level: float = 0.95, draws: int = 20_000) -> float:
    """The ``level`` quantile of max |Z_i| for Z normal with the correlation of ``cov`` (Monte Carlo, fixed seed).

    Hand-written: scipy's multivariate normal CDF takes rectangles, not the quantile of a maximum, and this one
    tolerates singular correlations (the macro difference is the mean of the findings').
    """
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    vals, vecs = np.linalg.eigh(corr)
    z = np.random.default_rng(0).standard_normal((draws, len(corr))) @ (vecs * np.sqrt(np.clip(vals, 0, None))).T
    return float(np.quantile(np.abs(z).max(1), level))


def deviation_covariance(patient_part: np.ndarray, seed_part: np.ndarray, kappa: float) -> np.ndarray:
    """Covariance between tests of the combined deviation ``patient part + kappa * seed part`` (the parts are drawn
    independently, so their covariances add): with 2+ seeds the widened seed part dominates the standard errors,
    and c must follow its correlations, not the patient part's alone."""
    cov = np.atleast_2d(np.cov(patient_part, rowvar=False))
    return cov + kappa**2 * np.atleast_2d(np.cov(seed_part, rowvar=False))


def simultaneous_intervals(diff: np.ndarray, patient_part: np.ndarray, seed_part: np.ndarray, k: int,
                           level: float = 0.95, draws: int = 20_000) -> tuple[np.ndarray, np.ndarray, float]:
    """Max-statistic intervals ``diff +/- c * se`` that hold together for every column (test) of the deviations.

    c is the ``level`` quantile of max |Z_i| for Z normal with the correlation between tests of the combined
    deviation (``deviation_covariance``: single-step max-T, as in multcomp's simultaneous intervals); kappa depends
    on c and c on kappa, so the two are iterated to a fixed point. With the patient part's correlation alone, c
    ignored the seed part that dominates the standard errors with 2+ seeds. Not the quantile of the resamples' own max |dev| / se: their
    seed part takes only a few values and its correlations come from k seeds, which made it anti-conservative
    (measured: 8-15 % familywise false stars instead of 5 % with 2-3 seeds). Tests with se = 0 (identical
    predictions) get the point interval.
    """
    live = standard_errors(patient_part, seed_part, k, 1.96) > 0
    c = np.nan
    if live.any():
        c, previous = 1.96, np.inf
        for _ in range(20):
            if abs(c - previous) < FIXED_POINT_TOL:
                break
            cov = deviation_covariance(patient_part[:, live], seed_part[:, live], seed_scale(k, c))
            c, previous = max_normal_quantile(cov, level, draws), c
    half = np.where(live, np.nan_to_num(c) * standard_errors(patient_part, seed_part, k, c if live.any() else 1.96), 0.0)
    return diff - half, diff + half, c


def summary_table(scores: StudyScores, names: Sequence[str], baseline: str | None = "none",
                  level: float = 0.95, value_name: str = "auc") -> pd.DataFrame:
    """One row per regime and finding (``macro`` first): AUC with marginal CI and, against ``baseline``, the paired
    difference with its simultaneous CI (``ci_excludes_0``: the star). Unscored findings get no interval.

    ``value_name``: the value column (a metric's key, for scores of another metric than AUC); the simultaneous
    correction covers this table's family (every other regime x scored finding and macro) of this one metric.
    """
    z = stats.norm.ppf(1 - (1 - level) / 2)
    ok = np.concatenate([[scores.scored.any()], scores.scored])  # macro first
    findings = ["macro", *names]
    rows, family = [], []
    base = regime_deviations(scores, baseline) if baseline in scores.point else None
    for regime in scores.point:
        value, patient_part, seed_part = regime_deviations(scores, regime)
        low, high = sd_interval(value, standard_errors(patient_part, seed_part, scores.seeds, z), level, scores.bounds)
        per_seed = scored_macro(scores.point[regime], scores.scored)
        for j, finding in enumerate(findings):
            row = {"regime": regime, "finding": finding, value_name: value[j],
                   "ci_low": low[j] if ok[j] else np.nan, "ci_high": high[j] if ok[j] else np.nan,
                   "positive_patients": scores.positive_patients[j - 1] if j else np.nan,
                   "scored": bool(ok[j]), "seeds": scores.seeds,
                   f"{value_name}_sd_over_seeds": np.std(per_seed[:, j], ddof=1) if scores.seeds > 1 else np.nan}
            if base is not None and regime != baseline:
                row[f"diff_vs_{baseline}"] = value[j] - base[0][j]
                if ok[j]:
                    family.append((len(rows), patient_part[:, j] - base[1][:, j], seed_part[:, j] - base[2][:, j]))
            rows.append(row)
    table = pd.DataFrame(rows)
    macro = table["finding"] == "macro"
    table.loc[macro, "findings_scored"] = int(scores.scored.sum())
    if value_name == "auc":  # chance is 0.5 for AUC only
        table.loc[macro, "findings_above_0.5"] = [
            int((table[(table["regime"] == r) & ~macro & table["scored"]]["ci_low"] > 0.5).sum()) for r in scores.point]
    if family:
        idx, patient_parts, seed_parts = zip(*family)
        diff = table.loc[list(idx), f"diff_vs_{baseline}"].to_numpy(float)
        low, high, c = simultaneous_intervals(diff, np.stack(patient_parts, axis=1), np.stack(seed_parts, axis=1),
                                              scores.seeds, level)
        width = scores.bounds[1] - scores.bounds[0]  # a difference of two values in the metric's range
        table.loc[list(idx), ["diff_ci_low", "diff_ci_high"]] = np.column_stack([low, high]).clip(-width, width)
        se_positive = high > low  # no star without an interval (se = 0: one resample, identical predictions)
        table.loc[list(idx), "ci_excludes_0"] = ((low > 0) | (high < 0)) & se_positive
        table["simultaneous_c"], table["family_size"] = c, len(family)
    for column in ("positive_patients", "findings_scored", "findings_above_0.5")[:3 if value_name == "auc" else 2]:
        table[column] = table[column].astype("Int64")  # counts stay integers next to the macro row's blanks
    if base is not None and "ci_excludes_0" in table:
        table["ci_excludes_0"] = table["ci_excludes_0"].fillna(False).astype(bool)
    return table
