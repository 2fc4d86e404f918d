"""Figure and tables of a learning curve: macro AUC against training size, one curve (with its interval) per regime."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mai_aug.reports.compare import interval_text  # noqa: E402
from mai_aug.reports.intervals import interval_plot  # noqa: E402


def curve_figure(curve: pd.DataFrame) -> plt.Figure:
    """Test macro AUC against the number of training patients (log axis), per regime its points with 95% intervals
    as dodged error bars.

    Args:
        curve: ``learning_curve.csv``'s rows (fraction, n_train_patients, regime, auc, ci_low, ci_high, ...).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4))
    series = {regime: [rows.sort_values("n_train_patients")[c].to_numpy(float)
                       for c in ("n_train_patients", "auc", "ci_low", "ci_high")]
              for regime, rows in curve.groupby("regime", sort=False)}
    interval_plot(ax, series, log=True)
    sizes = curve.drop_duplicates("fraction").sort_values("n_train_patients")
    ax.set_xscale("log")
    ax.set_xticks(sizes["n_train_patients"].to_numpy(float))
    ax.set_xticklabels([f"{n}\n({f:g})" for n, f in zip(sizes["n_train_patients"], sizes["fraction"])], fontsize=8)
    ax.minorticks_off()
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training patients (fraction of the training split)")
    ax.set_ylabel("test macro ROC AUC (95% CI)")
    ax.set_title("Learning curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(max(0.0, np.nanmin([ax.get_ylim()[0], 0.45])), min(1.0, ax.get_ylim()[1] + 0.02))
    fig.tight_layout()
    return fig


def fraction_table(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One training size's report table: a row per regime, its macro AUC [marginal CI] and, for the other regimes,
    the paired difference against ``baseline`` [simultaneous CI] with ``*`` where it excludes 0."""
    key = f"diff_vs_{baseline}"
    table = []
    for d in rows.to_dict("records"):
        diff = ""
        if d["regime"] != baseline and key in d and np.isfinite(d[key]):
            diff = interval_text(d[key], d["diff_ci_low"], d["diff_ci_high"], star=bool(d.get("ci_excludes_0")))
        table.append({"regime": d["regime"], "macro AUC": interval_text(d["auc"], d["ci_low"], d["ci_high"], signed=False),
                      f"difference vs {baseline}": diff})
    return pd.DataFrame(table)
