"""Tables and the AUC figure of a regime comparison, from the statistics of :mod:`mai_aug.stats.paired`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mai_aug.stats.auc import MIN_POSITIVE_PATIENTS  # noqa: E402


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


def interval_text(value: float, low: float, high: float, signed: bool = True, star: bool = False) -> str:
    """``+0.012 [-0.020, +0.044] *``; the value alone without an interval, ``undefined`` without a value."""
    if not np.isfinite(value):
        return "undefined"
    if not (np.isfinite(low) and np.isfinite(high)):
        return ("{:+.3f}" if signed else "{:.3f}").format(value)
    return _interval(value, low, high, star, signed)


def _too_few(row: dict) -> str:
    """Why a finding has no interval: fewer than MIN_POSITIVE_PATIENTS positive (or, rarely, negative) patients."""
    positives = int(row["positive_patients"])
    return (f"too few positive patients ({positives})" if positives < MIN_POSITIVE_PATIENTS
            else "too few negative patients")


def headline_table(summary: pd.DataFrame, baseline: str = "none", primary: str = "macro") -> pd.DataFrame:
    """Per regime: macro AUC [CI], findings above chance (Bonferroni interval above 0.5, of the scored ones), SD over
    seeds and the primary difference against the baseline [marginal CI], ``*`` from the primary family."""
    rows = []
    primary_rows = summary[summary["finding"] == primary].set_index("regime")
    for d in summary[summary["finding"] == "macro"].to_dict("records"):
        if primary != "macro":
            d = {**d, **{k: v for k, v in primary_rows.loc[d["regime"]].items()
                         if k.startswith("diff") or k == "ci_excludes_0"}}
        scored = bool(d["scored"])
        row = {"regime": d["regime"],
               "macro AUC": _interval(d["auc"], d["ci_low"], d["ci_high"], signed=False) if scored else "no scored finding",
               "findings above chance": f"{int(d['findings_above_0.5'])}/{int(d['findings_scored'])} scored"}
        if d["seeds"] > 1:
            row["sd over seeds"] = f"{d['auc_sd_over_seeds']:.3f}"
        low = d.get("diff_ci_low", np.nan)
        label = f"vs {baseline}" if primary == "macro" else f"{primary} vs {baseline}"
        row[label] = (_interval(d[f"diff_vs_{baseline}"], low, d["diff_ci_high"], bool(d["ci_excludes_0"]))
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
