"""ROC curves of all findings in one figure, AUCs in the legend."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


def roc_figure(labels: np.ndarray, scores: np.ndarray, names: Sequence[str], title: str = "ROC") -> plt.Figure:
    """One curve per finding that has both classes; findings without positives are listed as n/a."""
    fig, ax = plt.subplots(figsize=(7, 6.5))
    cmap = plt.get_cmap("tab20")
    for j, name in enumerate(names):
        y = labels[:, j]
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, scores[:, j])
            ax.plot(fpr, tpr, color=cmap(j % 20), lw=1.4,
                    label=f"{name}: {roc_auc_score(y, scores[:, j]):.3f} (n+={int(y.sum())})")
        else:
            ax.plot([], [], color=cmap(j % 20), label=f"{name}: n/a (no positives)" if y.sum() == 0 else f"{name}: n/a")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig
