"""The pointing game: does the peak of a finding's saliency map fall inside (or near) one of its boxes?

Coordinates are continuous pixel-edge coordinates of the network input: pixel ``(col, row)`` covers
``[col, col + 1) x [row, row + 1)``, so a peak at pixel ``(col, row)`` sits at ``(col + 0.5, row + 0.5)`` and a box
``[x, y, w, h]`` covers ``[x, x + w] x [y, y + h]``. Resizing with edge-aligned sampling (area averaging, or bicubic
and bilinear with ``align_corners=False``, as :class:`mai_aug.transforms.resize.SmoothResized` does) maps edge
coordinates by the size ratio alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.stats.auc import MIN_POSITIVE_PATIENTS, bootstrap_sd, patient_counts, sd_interval
from mai_aug.stats.paired import StudyScores

#: Default tolerance as a fraction of the network input's side: 8 px at 320 px (a quarter of DenseNet121's last
#: feature cell, 32 px there); a peak this close to a box counts as a hit.
TOLERANCE_FRACTION = 0.025


def default_tolerance(image_size: int) -> float:
    """The default tolerance in network-input pixels for an ``image_size`` input."""
    return TOLERANCE_FRACTION * image_size


def map_box(box: Sequence[float], source: tuple[int, int], target: tuple[int, int]) -> tuple[float, ...]:
    """``[x, y, w, h]`` in a (width, height) ``source`` image, in the (width, height) ``target`` it is resized to."""
    sx, sy = target[0] / source[0], target[1] / source[1]
    x, y, w, h = (float(v) for v in box)
    return x * sx, y * sy, w * sx, h * sy


def box_distance(peak: tuple[int, int], box: Sequence[float]) -> float:
    """Distance from pixel ``peak`` = (col, row)'s centre to the box ``[x, y, w, h]`` (0 inside or on its edge)."""
    px, py = peak[0] + 0.5, peak[1] + 0.5
    x, y, w, h = box
    dx = max(x - px, 0.0, px - (x + w))
    dy = max(y - py, 0.0, py - (y + h))
    return float(np.hypot(dx, dy))


def peak_of(saliency: np.ndarray) -> tuple[int, int]:
    """(col, row) of the largest value of a 2-D map (the first in row-major order among equal ones)."""
    row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return int(col), int(row)


def has_peak(saliency: np.ndarray) -> bool:
    """Whether a map has a peak: a constant map (all zero after Grad-CAM's ReLU, or a 1x1 feature map) has none."""
    return bool(np.max(saliency) > np.min(saliency))


def pointing_hit(saliency: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float) -> tuple[bool, int, int, float]:
    """(hit, peak col, peak row, distance to the nearest box): a hit when that distance is at most ``tolerance``
    and the map has a peak (a constant map's "peak" is its first pixel: a miss wherever the box is)."""
    col, row = peak_of(saliency)
    distance = min(box_distance((col, row), b) for b in boxes)
    return distance <= tolerance and has_peak(saliency), col, row, distance


def chance_of_hit(boxes: Sequence[Sequence[float]], side: int, tolerance: float) -> float:
    """The hit rate of a peak drawn uniformly over a ``side`` x ``side`` input: the fraction of pixel centres within
    ``tolerance`` of one of the boxes (what a map that knows nothing scores)."""
    centres = np.arange(side) + 0.5
    px, py = np.meshgrid(centres, centres)
    near = np.zeros((side, side), bool)
    for x, y, w, h in boxes:
        dx = np.maximum.reduce([x - px, np.zeros_like(px), px - (x + w)])
        dy = np.maximum.reduce([y - py, np.zeros_like(py), py - (y + h)])
        near |= np.hypot(dx, dy) <= tolerance
    return float(near.mean())


def hit_matrix(frame: pd.DataFrame, images: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(images, findings) 1.0 hit, 0.0 miss, NaN where the image has no box of that finding (``pointing.csv`` rows)."""
    out = np.full((len(images), len(names)), np.nan)
    row = {name: i for i, name in enumerate(images)}
    col = {name: j for j, name in enumerate(names)}
    for image, finding, hit in zip(frame["image"], frame["finding"], frame["hit"]):
        out[row[image], col[finding]] = float(hit)
    return out


def bootstrap_rates(hits: np.ndarray, counts: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """(resamples, findings) hit rate when image ``i`` weighs ``counts[b, inverse[i]]`` (NaN: no boxed image drawn)."""
    weights = counts[:, inverse]
    boxed = ~np.isnan(hits)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.nan_to_num(hits)) / (weights @ boxed.astype(float))


def boxed_patients(hits: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """(findings,) number of distinct patients with a boxed image of each finding."""
    return np.array([len(np.unique(patients[~np.isnan(hits[:, j])])) for j in range(hits.shape[1])], dtype=int)


def keep_masks(hits: np.ndarray, inverse: np.ndarray, scored: np.ndarray) -> list[np.ndarray]:
    """Per scored finding, the mask of patients with a boxed image (for ``patient_counts(keep=)``)."""
    n = int(inverse.max()) + 1 if len(inverse) else 0
    masks = []
    for j in np.flatnonzero(scored):
        mask = np.zeros(n, bool)
        mask[inverse[~np.isnan(hits[:, j])]] = True
        masks.append(mask)
    return masks


def hit_rate_table(hits: np.ndarray, patients: np.ndarray, names: Sequence[str], n_boot: int = DEFAULT_BOOTSTRAP,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per finding with a box: hit rate, patient-bootstrap interval, boxed images and patients.

    Patients are resampled (all of a patient's images together) and each resample's rate is the hits over the boxed
    images drawn; the interval is ``sd_interval`` (rate +/- z x the resamples' SD, clipped to [0, 1]), the
    construction of every interval in mai_aug. Findings with fewer than ``MIN_POSITIVE_PATIENTS`` boxed patients get
    no interval (``scored`` False): resampling so few patients cannot show the uncertainty.
    """
    patients = np.asarray(patients)
    n_patients = boxed_patients(hits, patients)
    scored = n_patients >= MIN_POSITIVE_PATIENTS
    _, inverse = np.unique(patients, return_inverse=True)
    counts, inverse = patient_counts(patients, n_boot, seed, keep=keep_masks(hits, inverse, scored))
    boxed = ~np.isnan(hits)
    with np.errstate(invalid="ignore"):
        point = np.nansum(hits, 0) / boxed.sum(0)
    boot = bootstrap_rates(hits[:, scored], counts, inverse)
    low, high = np.full(len(names), np.nan), np.full(len(names), np.nan)
    if scored.any():
        low[scored], high[scored] = sd_interval(point[scored], bootstrap_sd(boot), level)
    table = pd.DataFrame({"finding": list(names), "hit_rate": point, "ci_low": low, "ci_high": high,
                          "hits": np.nansum(hits, 0).astype(int), "n_images": boxed.sum(0),
                          "n_patients": n_patients, "scored": scored})
    return table[table["n_images"] > 0].reset_index(drop=True)


def study_scores(hits: dict[str, list[np.ndarray]], patients: np.ndarray, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
                 ) -> StudyScores:
    """Hit rates of every regime and seed on one shared set of patient resamples, as
    :func:`mai_aug.stats.paired.score_regimes` scores AUCs: ``paired.summary_table`` then gives marginal intervals
    and simultaneous paired differences of hit rates.

    ``hits[regime]``: per seed, the (images, findings) matrix of :func:`hit_matrix` over the same images. A finding
    is scored with ``MIN_POSITIVE_PATIENTS`` boxed patients; resamples keep at least one boxed patient of each.
    """
    first = next(iter(hits.values()))[0]
    k = {len(runs) for runs in hits.values()}
    if len(k) != 1:
        raise ValueError(f"every regime needs the same number of seeds, got {sorted(k)}")
    k_seeds = k.pop()
    patients = np.asarray(patients)
    n_patients = boxed_patients(first, patients)
    scored = n_patients >= MIN_POSITIVE_PATIENTS
    _, inverse = np.unique(patients, return_inverse=True)
    counts, inverse = patient_counts(patients, n_boot, seed, keep=keep_masks(first, inverse, scored))
    point, boot = {}, {}
    for regime, runs in hits.items():
        with np.errstate(invalid="ignore"):
            point[regime] = np.stack([np.nansum(h, 0) / (~np.isnan(h)).sum(0) for h in runs])
        boot[regime] = np.full((k_seeds, n_boot, first.shape[1]), np.nan)
        for s, h in enumerate(runs):
            boot[regime][s][:, scored] = bootstrap_rates(h[:, scored], counts, inverse)
    return StudyScores(point, boot, scored, n_patients)
