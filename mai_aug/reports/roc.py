"""ROC curves of all findings in one figure, AUCs in the legend."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mai_aug.stats.auc import per_finding_auc  # noqa: E402


def roc_figure(labels: np.ndarray, scores: np.ndarray | Sequence[np.ndarray], names: Sequence[str],
               title: str = "ROC") -> plt.Figure:
    """One curve per finding that has both classes; findings without positives are listed as n/a.

    ``scores`` is one (images, findings) array, or one per seed: then every seed's curve is drawn and the legend
    gives the mean of the seeds' AUCs, the value of the comparison's tables.
    """
    runs = [np.asarray(scores)] if np.ndim(scores) == 2 else [np.asarray(s) for s in scores]
    aucs = np.mean([per_finding_auc(labels, s) for s in runs], axis=0)
    fig, ax = plt.subplots(figsize=(7, 6.5))
    cmap = plt.get_cmap("tab20")
    labels = np.asarray(labels, dtype=np.float64)
    for j, name in enumerate(names):
        known = ~np.isnan(labels[:, j])  # an unknown label leaves its image out of this finding's curve
        y = labels[known, j]
        if 0 < y.sum() < len(y):
            for k, s in enumerate(runs):
                fpr, tpr, _ = roc_curve(y, s[known, j])
                label = f"{name}: {aucs[j]:.3f} (n+={int(y.sum())})" if k == 0 else None
                ax.plot(fpr, tpr, color=cmap(j % 20), lw=1.4 if len(runs) == 1 else 0.9, alpha=1 if len(runs) == 1 else 0.7,
                        label=label)
        else:
            ax.plot([], [], color=cmap(j % 20), label=f"{name}: n/a (no positives)" if y.sum() == 0 else f"{name}: n/a")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7, title=f"AUC, mean of {len(runs)} seeds" if len(runs) > 1 else None)
    fig.tight_layout()
    return fig
