"""Statistics and figures of a regime comparison: per-finding AUC and paired differences with honest intervals.

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
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from mai_aug.reports.auc import (  # noqa: E402
    MIN_POSITIVE_PATIENTS,
    bootstrap_sd,
    patient_counts,
    positive_patients,
    scored_findings,
    scored_masks,
    sd_interval,
)
from mai_aug.reports.scores import bootstrap_metric, get_metric, per_finding  # noqa: E402

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

    @property
    def seeds(self) -> int:
        return self.seed_draws.shape[1]


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
    return StudyScores(point, boot, seed_draws, scored, positive_patients(labels, patients))


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
        low, high = sd_interval(value, standard_errors(patient_part, seed_part, scores.seeds, z), level)
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
        table.loc[list(idx), ["diff_ci_low", "diff_ci_high"]] = np.column_stack([low, high]).clip(-1.0, 1.0)
        se_positive = high > low  # no star without an interval (se = 0: one resample, identical predictions)
        table.loc[list(idx), "ci_excludes_0"] = ((low > 0) | (high < 0)) & se_positive
        table["simultaneous_c"], table["family_size"] = c, len(family)
    for column in ("positive_patients", "findings_scored", "findings_above_0.5")[:3 if value_name == "auc" else 2]:
        table[column] = table[column].astype("Int64")  # counts stay integers next to the macro row's blanks
    if base is not None and "ci_excludes_0" in table:
        table["ci_excludes_0"] = table["ci_excludes_0"].fillna(False).astype(bool)
    return table


def auc_by_regime_wide(summary: pd.DataFrame) -> pd.DataFrame:
    """Finding x regime: ``positive_patients``, then ``<regime>_auc``, ``<regime>_ci_low``, ``<regime>_ci_high``."""
    wide = summary.pivot(index="finding", columns="regime", values=["auc", "ci_low", "ci_high"])
    order = list(dict.fromkeys(summary["finding"]))
    regimes = list(dict.fromkeys(summary["regime"]))
    wide = wide.reindex(order)
    out = pd.DataFrame(index=wide.index)
    out["positive_patients"] = summary.drop_duplicates("finding").set_index("finding")["positive_patients"].reindex(order)
    for r in regimes:
        for v in ("auc", "ci_low", "ci_high"):
            out[f"{r}_{v}"] = wide[(v, r)]
    return out.reset_index()


def auc_plot(summary: pd.DataFrame, path: Path, title: str = "Test AUC by regime (marginal 95% CI)") -> None:
    """Dot plot: findings down the side, one coloured dot with CI whiskers per regime."""
    findings = list(dict.fromkeys(summary["finding"]))
    regimes = list(dict.fromkeys(summary["regime"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(findings) + 1.5))
    cmap = plt.get_cmap("tab10")
    offsets = np.linspace(-0.25, 0.25, len(regimes)) if len(regimes) > 1 else [0.0]
    for k, regime in enumerate(regimes):
        sub = summary[summary["regime"] == regime].set_index("finding").reindex(findings)
        y = np.arange(len(findings)) + offsets[k]
        err = np.vstack([sub["auc"] - sub["ci_low"], sub["ci_high"] - sub["auc"]])
        ax.errorbar(sub["auc"], y, xerr=np.nan_to_num(err), fmt="o", ms=4, color=cmap(k), capsize=2, lw=1, label=regime)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(np.arange(len(findings)), findings)
    ax.invert_yaxis()
    ax.set_xlabel("ROC AUC")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A pipe table (pandas' own needs the optional tabulate package)."""
    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else floatfmt.format(v)
        return str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _interval(value: float, low: float, high: float, star: bool = False, signed: bool = True) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]{' *' if star else ''}"


def _too_few(row: dict) -> str:
    """Why a finding has no interval: fewer than MIN_POSITIVE_PATIENTS positive (or, rarely, negative) patients."""
    positives = int(row["positive_patients"])
    return (f"too few positive patients ({positives})" if positives < MIN_POSITIVE_PATIENTS
            else "too few negative patients")


def headline_table(summary: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Per regime: macro AUC [CI], findings above chance (interval above 0.5, of the scored ones), SD over seeds and
    the macro difference against the baseline [simultaneous CI]."""
    rows = []
    for d in summary[summary["finding"] == "macro"].to_dict("records"):
        scored = bool(d["scored"])
        row = {"regime": d["regime"],
               "macro AUC": _interval(d["auc"], d["ci_low"], d["ci_high"], signed=False) if scored else "no scored finding",
               "findings above chance": f"{int(d['findings_above_0.5'])}/{int(d['findings_scored'])} scored"}
        if d["seeds"] > 1:
            row["sd over seeds"] = f"{d['auc_sd_over_seeds']:.3f}"
        low = d.get("diff_ci_low", np.nan)
        row[f"vs {baseline}"] = (_interval(d[f"diff_vs_{baseline}"], low, d["diff_ci_high"], bool(d["ci_excludes_0"]))
                                 if isinstance(low, float) and np.isfinite(low) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def finding_table(summary: pd.DataFrame, value_name: str = "auc") -> pd.DataFrame:
    """Per finding: positive test patients and each regime's AUC (or ``value_name``) [marginal CI]; no interval when
    too few positives."""
    table: dict[str, dict[str, object]] = {}
    for d in summary[summary["finding"] != "macro"].to_dict("records"):
        cells = table.setdefault(d["finding"], {"positive patients": int(d["positive_patients"])})
        if not np.isfinite(d[value_name]):
            cells[d["regime"]] = "undefined"
        elif d["scored"]:
            cells[d["regime"]] = _interval(d[value_name], d["ci_low"], d["ci_high"], signed=False)
        else:
            cells[d["regime"]] = f"{d[value_name]:.3f}, {_too_few(d)}"
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("finding").reset_index()


def metric_headline(summary: pd.DataFrame, value_name: str, label: str, baseline: str = "none") -> pd.DataFrame:
    """Per regime: the macro ``label`` [marginal CI] and its paired difference against the baseline [simultaneous CI
    of this metric's family], ``*`` where that interval excludes 0."""
    rows = []
    for d in summary[summary["finding"] == "macro"].to_dict("records"):
        row = {"regime": d["regime"], f"macro {label}": (_interval(d[value_name], d["ci_low"], d["ci_high"], signed=False)
                                                         if d["scored"] else "no scored finding")}
        low = d.get("diff_ci_low", np.nan)
        row[f"vs {baseline}"] = (_interval(d[f"diff_vs_{baseline}"], low, d["diff_ci_high"], bool(d["ci_excludes_0"]))
                                 if isinstance(low, float) and np.isfinite(low) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(summary: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Per finding: positive test patients and each regime's paired difference against the baseline
    [simultaneous CI], ``*`` where it excludes 0; unscored findings get the difference without a claim."""
    key = f"diff_vs_{baseline}"
    if key not in summary:
        return pd.DataFrame()
    table: dict[str, dict[str, object]] = {}
    for d in summary[(summary["finding"] != "macro") & (summary["regime"] != baseline)].to_dict("records"):
        cells = table.setdefault(d["finding"], {"positive patients": int(d["positive_patients"])})
        if not np.isfinite(d[key]):
            cells[d["regime"]] = "undefined"
        elif d["scored"]:
            cells[d["regime"]] = _interval(d[key], d["diff_ci_low"], d["diff_ci_high"], bool(d["ci_excludes_0"]))
        else:
            cells[d["regime"]] = f"{d[key]:+.3f}, {_too_few(d)}"
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("finding").reset_index()
