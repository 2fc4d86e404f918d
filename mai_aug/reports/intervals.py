"""Curves of several regimes with 95% intervals that stay apart: dodged error bars and the legend beside the axes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MARKERS = "osD^vP*X"
DODGE = 0.08  # sideways step between regimes, as a fraction of the smallest gap between levels


def dodge_shifts(n: int, x: np.ndarray, log: bool = False) -> np.ndarray:
    """The sideways shift of each of ``n`` series (in log10 units where ``log``), centred on 0."""
    levels = np.unique(np.log10(x) if log else x)
    gap = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
    return (np.arange(n) - (n - 1) / 2) * DODGE * gap


def interval_plot(ax: plt.Axes, series: Mapping[str, Sequence[np.ndarray]], connect: bool = True,
                  log: bool = False) -> None:
    """``series``: label -> (x, value, low, high). One colour and marker per label, intervals as dodged error
    bars (no bands that would merge into one colour), points joined by a line only where ``connect``; the legend
    goes to the right of the axes, off the curves."""
    cmap = plt.get_cmap("tab10")
    every = np.concatenate([np.asarray(s[0], float) for s in series.values()]) if series else np.ones(1)
    shifts = dodge_shifts(len(series), every, log)
    for k, (label, (x, value, low, high)) in enumerate(series.items()):
        x, value = np.asarray(x, float), np.asarray(value, float)
        pos = x * 10 ** shifts[k] if log else x + shifts[k]
        err = np.vstack([value - np.asarray(low, float), np.asarray(high, float) - value])
        ax.errorbar(pos, value, yerr=np.nan_to_num(err), fmt=MARKERS[k % len(MARKERS)] + ("-" if connect else ""),
                    color=cmap(k % 10), ms=4, lw=1.3, capsize=2.5, elinewidth=1, label=label)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
