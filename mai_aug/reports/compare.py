"""Statistics and figures of a regime comparison: per-finding AUC with patient-bootstrap CIs and paired differences.

Every regime is scored on the same test patients, and every bootstrap resample draws the same patients for all
regimes, so a difference's interval reflects the comparison itself rather than two independent noises.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mai_aug.reports.auc import bootstrap_aucs, patient_bootstrap_weights, per_finding_auc  # noqa: E402


@dataclass
class RegimeScores:
    """Per regime: point AUC per seed (seeds, findings) and bootstrap AUC averaged over seeds (boot, findings)."""

    per_seed: np.ndarray
    boot: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.per_seed, axis=0) if len(self.per_seed) else np.array([])


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=-1)


def score_regimes(labels: np.ndarray, patients: np.ndarray, predictions: dict[str, list[np.ndarray]],
                  n_boot: int = 1000, seed: int = 0) -> dict[str, RegimeScores]:
    """Point and bootstrap AUCs of each regime on one shared set of patient resamples."""
    weights = patient_bootstrap_weights(patients, n_boot, seed)
    scores = {}
    for regime, seeds in predictions.items():
        per_seed = np.stack([per_finding_auc(labels, p) for p in seeds])
        boot = np.mean([bootstrap_aucs(labels, p, weights) for p in seeds], axis=0)
        scores[regime] = RegimeScores(per_seed=per_seed, boot=boot)
    return scores


def summary_table(scores: dict[str, RegimeScores], names: Sequence[str], baseline: str | None = "none",
                  level: float = 0.95) -> pd.DataFrame:
    """One row per regime and finding (``macro`` first): AUC with CI and, against ``baseline``, the paired difference."""
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    base = scores.get(baseline) if baseline else None
    rows = []
    for regime, s in scores.items():
        auc = s.auc
        defined = np.isfinite(auc)
        columns = [("macro", _nanmean_rows(auc[defined]) if defined.any() else np.nan, _nanmean_rows(s.boot[:, defined]),
                    _nanmean_rows(s.per_seed[:, defined]))]
        columns += [(n, auc[j], s.boot[:, j], s.per_seed[:, j]) for j, n in enumerate(names)]
        for j, (finding, value, boot, seeds) in enumerate(columns):
            row = {"regime": regime, "finding": finding, "auc": value,
                   "ci_low": np.nanquantile(boot, lo_q) if np.isfinite(value) else np.nan,
                   "ci_high": np.nanquantile(boot, hi_q) if np.isfinite(value) else np.nan,
                   "auc_sd_over_seeds": np.nanstd(seeds, ddof=1) if len(seeds) > 1 else np.nan,
                   "seeds": len(seeds)}
            if finding == "macro":
                row["findings_above_0.5"] = int((auc[defined] > 0.5).sum())
            if base is not None and regime != baseline:
                if finding == "macro":
                    both = defined & np.isfinite(base.auc)
                    ref_value, ref_boot = _nanmean_rows(base.auc[both]), _nanmean_rows(base.boot[:, both])
                    value, boot = _nanmean_rows(auc[both]), _nanmean_rows(s.boot[:, both])
                else:
                    ref_value, ref_boot = base.auc[j - 1], base.boot[:, j - 1]
                diff_boot = boot - ref_boot
                diff = value - ref_value
                if np.isfinite(diff):
                    low, high = np.nanquantile(diff_boot, lo_q), np.nanquantile(diff_boot, hi_q)
                    row.update({f"diff_vs_{baseline}": diff, "diff_ci_low": low, "diff_ci_high": high,
                                "ci_excludes_0": bool(low > 0 or high < 0)})
            rows.append(row)
    return pd.DataFrame(rows)


def auc_by_regime_wide(summary: pd.DataFrame) -> pd.DataFrame:
    """Finding x regime: ``<regime>_auc``, ``<regime>_ci_low``, ``<regime>_ci_high``."""
    wide = summary.pivot(index="finding", columns="regime", values=["auc", "ci_low", "ci_high"])
    order = list(dict.fromkeys(summary["finding"]))
    regimes = list(dict.fromkeys(summary["regime"]))
    wide = wide.reindex(order)
    out = pd.DataFrame(index=wide.index)
    for r in regimes:
        for v in ("auc", "ci_low", "ci_high"):
            out[f"{r}_{v}"] = wide[(v, r)]
    return out.reset_index()


def auc_plot(summary: pd.DataFrame, path: Path, title: str = "Test AUC by regime (95% patient-bootstrap CI)") -> None:
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


def headline_table(summary: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Per regime: macro AUC [CI], findings above 0.5, and the macro difference against the baseline."""
    macro = summary[summary["finding"] == "macro"]
    rows = []
    for d in macro.to_dict("records"):
        row = {"regime": d["regime"], "macro AUC": f"{d['auc']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]",
               "findings AUC>0.5": f"{int(d['findings_above_0.5'])}/{(summary['regime'] == d['regime']).sum() - 1}"}
        if d["seeds"] > 1:
            row["sd over seeds"] = f"{d['auc_sd_over_seeds']:.3f}"
        diff = d.get(f"diff_vs_{baseline}")
        row[f"vs {baseline}"] = (f"{diff:+.3f} [{d['diff_ci_low']:+.3f}, {d['diff_ci_high']:+.3f}]"
                                 f"{' *' if d['ci_excludes_0'] else ''}") if isinstance(diff, float) and np.isfinite(diff) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(summary: pd.DataFrame, baseline: str = "none") -> pd.DataFrame:
    """Per finding: each regime's paired difference against the baseline, ``*`` where the CI excludes 0."""
    key = f"diff_vs_{baseline}"
    if key not in summary:
        return pd.DataFrame()
    sub = summary[(summary["finding"] != "macro") & summary[key].notna()]
    table = {}
    for d in sub.to_dict("records"):
        table.setdefault(d["finding"], {})[d["regime"]] = (
            f"{d[key]:+.3f} [{d['diff_ci_low']:+.3f}, {d['diff_ci_high']:+.3f}]{' *' if d['ci_excludes_0'] else ''}")
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("finding").reset_index()
