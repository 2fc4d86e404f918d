"""Figures of a robustness sweep: macro AUC against shift level, one curve (with its interval) per run or regime."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def shift_figure(curves: dict[str, pd.DataFrame], shift: str, unit: str) -> plt.Figure:
    """Macro AUC against level for one shift type: a curve per label with its 95% interval as a band.

    Args:
        curves: label (a regime) -> that run's rows of ``robustness/table.csv`` for this shift.
        shift: the shift type (the title).
        unit: what the level means (the x label).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("tab10")
    for k, (label, rows) in enumerate(curves.items()):
        macro = rows[rows["finding"] == "macro"].sort_values("level")
        x = macro["level"].to_numpy(float)
        ax.plot(x, macro["auc"], "o-", color=cmap(k % 10), lw=1.5, ms=4, label=label)
        if macro["ci_low"].notna().any():
            ax.fill_between(x, macro["ci_low"].to_numpy(float), macro["ci_high"].to_numpy(float), color=cmap(k % 10),
                            alpha=0.15, lw=0)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{shift} level ({unit})")
    ax.set_ylabel("test macro ROC AUC (95% CI)")
    ax.set_title(f"Robustness to {shift}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_ylim(max(0.0, np.nanmin([ax.get_ylim()[0], 0.45])), min(1.0, ax.get_ylim()[1] + 0.02))
    fig.tight_layout()
    return fig
