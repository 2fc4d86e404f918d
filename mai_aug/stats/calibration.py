"""Per-finding recalibration of sigmoid outputs: Platt scaling or a temperature, fitted on held-out predictions.

Both maps act on the network's logit ``z`` of each finding: ``p = sigmoid(slope * z + intercept)``. Platt scaling
fits the slope and the intercept; a temperature ``T`` is the slope ``1 / T`` with the intercept 0. Each is fitted by
minimising the binary cross-entropy against Platt's (1999) smoothed targets, ``(N+ + 1) / (N+ + 2)`` for a positive
and ``1 / (N- + 2)`` for a negative: on a small validation split whose scores separate the classes the plain fit
runs off to an infinite slope, the smoothed one stays finite. The slope is kept at 0 or more, so a fitted map never
reverses the ranking (AUC is unchanged by calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from mai_aug.core.errors import MaiAugError
from mai_aug.stats.scores import get_metric

METHODS = ("platt", "temperature")
_P_FLOOR = np.finfo(np.float64).tiny  # logit(0) and logit(1) would be infinite


@dataclass(frozen=True)
class FindingMap:
    """One finding's map ``sigmoid(slope * logit + intercept)``; ``fitted`` False: the identity, with the reason."""

    slope: float = 1.0
    intercept: float = 0.0
    fitted: bool = False
    reason: str = ""

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "fitted": self.fitted,
                **({"reason": self.reason} if self.reason else {})}


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, finite at 0 and 1 (the probabilities clipped to the nearest floats inside)."""
    p = np.clip(np.asarray(p, dtype=np.float64), _P_FLOOR, np.nextafter(1.0, 0.0))
    return np.log(p) - np.log1p(-p)


def smoothed_targets(y: np.ndarray) -> np.ndarray:
    """Platt's targets for 0/1 labels: ``(N+ + 1) / (N+ + 2)`` for positives, ``1 / (N- + 2)`` for negatives."""
    y = np.asarray(y, dtype=np.float64)
    positives, negatives = float(y.sum()), float(len(y) - y.sum())
    return np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def fit_finding(z: np.ndarray, y: np.ndarray, method: str) -> FindingMap:
    """The map of one finding from logits ``z`` and labels ``y`` (NaN: not annotated, left out).

    A finding without a labelled positive and a labelled negative keeps the identity map (``fitted`` False).
    """
    if method not in METHODS:
        raise MaiAugError(f"`method` {method!r}: expected one of {', '.join(METHODS)}")
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(y)
    z, y = z[keep], y[keep]
    if not (y > 0.5).any() or not (y < 0.5).any():
        return FindingMap(reason="no labelled positive and negative to fit on")
    t = smoothed_targets(y)
    platt = method == "platt"

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = theta[0] * z + (theta[1] if platt else 0.0)
        residual = expit(s) - t
        value = float(np.mean(np.logaddexp(0.0, s) - t * s))
        grad = [float(np.mean(residual * z))] + ([float(np.mean(residual))] if platt else [])
        return value, np.asarray(grad)

    start = np.array([1.0, 0.0] if platt else [1.0])
    bounds = [(0.0, None), (None, None)] if platt else [(0.0, None)]
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    slope, intercept = float(result.x[0]), float(result.x[1]) if platt else 0.0
    return FindingMap(slope, intercept, fitted=True)


def fit(probabilities: np.ndarray, labels: np.ndarray, method: str) -> list[FindingMap]:
    """One map per column of (n, findings) sigmoid ``probabilities`` against 0/1 (or NaN) ``labels``."""
    z = logit(probabilities)
    labels = np.asarray(labels, dtype=np.float64)
    return [fit_finding(z[:, j], labels[:, j], method) for j in range(z.shape[1])]


def apply(probabilities: np.ndarray, maps: Sequence[FindingMap]) -> np.ndarray:
    """(n, findings) probabilities through each finding's map: ``sigmoid(slope * logit(p) + intercept)``."""
    z = logit(probabilities)
    if z.shape[1] != len(maps):
        raise MaiAugError(f"calibration has {len(maps)} findings, the predictions {z.shape[1]}")
    slope = np.array([m.slope for m in maps])
    intercept = np.array([m.intercept for m in maps])
    return expit(z * slope + intercept)


def ece_by_finding(labels: np.ndarray, probabilities: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The ``ece`` metric (MONAI's, 20 bins) of each finding, and their mean as ``macro`` (NaN where not scored)."""
    ece = get_metric("ece")
    labels, probabilities = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    values = {name: float(ece.point(labels[:, j], probabilities[:, j])) for j, name in enumerate(names)}
    finite = [v for v in values.values() if np.isfinite(v)]
    return {**values, "macro": float(np.mean(finite)) if finite else float("nan")}
