"""Reliability diagram: mean predicted probability against observed frequency per bin, with the bins' counts."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.metrics import calibration_binning  # noqa: E402

from mai_aug.stats.scores import ECE_BINS, get_metric  # noqa: E402

#: What the pooled ECE is, in the figure: not the tables' macro ECE.
POOLED_NOTE = ("pooled: all findings' pairs in one set of bins;\nnot the tables' macro ECE (the mean of\n"
               "the scored findings' own ECEs)")


def reliability_bins(labels: np.ndarray, scores: np.ndarray | Sequence[np.ndarray], bins: int = ECE_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bins,) mean predicted probability, observed frequency and count, pooled over findings (and seeds).

    MONAI's ``calibration_binning`` on the pooled (image, finding) pairs as one (1, 1, pairs) item: the bins of
    ``ece``. Pairs whose label is NaN (not annotated) are left out; empty bins are NaN with count 0.
    """
    runs = [np.asarray(scores)] if np.ndim(scores) == 2 else [np.asarray(s) for s in scores]
    y = np.tile(np.asarray(labels, dtype=np.float64).ravel(), len(runs))
    p = np.concatenate([r.ravel() for r in runs]).astype(np.float64)
    keep = ~np.isnan(y)
    mean_p, mean_y, counts = calibration_binning(torch.as_tensor(p[keep]).view(1, 1, -1),
                                                 torch.as_tensor(y[keep]).view(1, 1, -1), num_bins=bins)
    return mean_p.view(-1).numpy(), mean_y.view(-1).numpy(), counts.view(-1).numpy()


def reliability_figure(labels: np.ndarray, scores: np.ndarray | Sequence[np.ndarray], title: str = "Reliability"
                       ) -> plt.Figure:
    """Observed frequency against mean predicted probability per bin (pooled over findings and seeds) over the
    diagonal of perfect calibration, the pooled ECE in the legend, and below it the number of pairs in each bin.

    The pooled ECE is of every (image, finding) pair in one set of bins; the tables' ECE (``--metrics ece``) is each
    finding's own, and their macro the mean over the scored findings: the two differ, and the figure says so."""
    mean_p, mean_y, counts = reliability_bins(labels, scores)
    runs = [np.asarray(scores)] if np.ndim(scores) == 2 else list(scores)
    ece = get_metric("ece")
    pooled = ece.point(np.tile(np.asarray(labels, float).ravel(), len(runs)), np.concatenate([np.ravel(r) for r in runs]))
    fig, (ax, bar) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    filled = counts > 0
    ax.plot(mean_p[filled], mean_y[filled], "o-", ms=4, lw=1.2, label=f"pooled ECE {pooled:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency", title=title)
    ax.legend(loc="upper left", fontsize=8, title=POOLED_NOTE, title_fontsize=7, alignment="left")
    edges = np.linspace(0, 1, len(counts) + 1)
    bar.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="grey", edgecolor="white")
    bar.set_yscale("log" if counts.max() > 100 * max(counts[filled].min(), 1) else "linear")
    bar.set(xlabel="predicted probability (bin)", ylabel="pairs")
    fig.tight_layout()
    return fig
