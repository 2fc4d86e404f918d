"""Per-finding ROC AUC that stays defined without positives, and patient-level bootstrap AUCs at full-dataset scale."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse, stats

from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.stats.seeds import logit_interval, normal_quantile

#: A finding is *scored* (gets intervals and may get a star) with at least this many distinct test patients with a
#: positive image, and as many with a negative image: with fewer, patient resampling cannot show the uncertainty.
MIN_POSITIVE_PATIENTS = 5
#: Fewest bootstrap resamples a command accepts: with fewer the SD of the resamples (every interval's width) is too
#: noisy, and with one it is 0, which would star every non-zero difference.
MIN_BOOTSTRAP = 200
#: Bootstrap resamples processed at once: bounds memory at full-dataset scale (about 50 MB per array at 25k images).
CHUNK = 256


def per_finding_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each column; NaN where a finding has only one class (no positives, or no negatives).

    Equal to ``sklearn.metrics.roc_auc_score`` (tested), by the rank-sum (Mann-Whitney U) formula over all findings
    at once: sklearn's input validation costs about 6 ms a call, which dominated the statistics of a comparison.
    A NaN label is unknown: that image is left out of that finding's AUC only.
    """
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    unknown = np.isnan(labels)
    if not unknown.any():
        return _rank_auc(labels > 0, scores)
    return np.array([_rank_auc(labels[~unknown[:, j], j:j + 1] > 0, scores[~unknown[:, j], j:j + 1])[0]
                     for j in range(labels.shape[1])])


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per column AUC of boolean ``labels`` by the rank-sum formula; NaN without both classes."""
    n_pos = labels.sum(0)
    n_neg = len(labels) - n_pos
    if len(labels) == 0:
        return np.full(labels.shape[1], np.nan)
    rank_sum = (stats.rankdata(scores, axis=0) * labels).sum(0)  # ties get their mean rank: they count one half
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), np.nan)


def macro_auc(aucs: np.ndarray, names: Sequence[str] | None = None, warn: bool = True) -> float:
    """Mean over findings with a defined AUC; names the skipped findings in a warning."""
    aucs = np.asarray(aucs, dtype=float)
    undefined = np.isnan(aucs)
    if warn and undefined.any() and names is not None:
        warnings.warn(f"AUC undefined (only one class present), left out of the macro mean: "
                      f"{', '.join(n for n, u in zip(names, undefined) if u)}", stacklevel=2)
    return float(np.nanmean(aucs)) if (~undefined).any() else float("nan")


def positive_patients(labels: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """(findings,) number of distinct patients with at least one positive image."""
    return np.array([len(np.unique(patients[labels[:, j] > 0])) for j in range(labels.shape[1])], dtype=int)


def scored_findings(labels: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """(findings,) True where a finding has ``MIN_POSITIVE_PATIENTS`` positive and as many negative patients."""
    negative = positive_patients(1 - np.asarray(labels), patients)
    return (positive_patients(labels, patients) >= MIN_POSITIVE_PATIENTS) & (negative >= MIN_POSITIVE_PATIENTS)


def tie_group_counts(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int
                     ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Sorts the scores once and groups ties: sparse per-unit counts of positives and negatives by score segment.

    ``groups`` maps each sample to its resampling unit (a patient, or itself). Returns ``pos`` (K, units): positive
    samples of each unit at each of the K distinct scores that have a positive, ascending; and ``neg`` (2K+1, units):
    negative samples of each unit in segment 2k (scores between positive scores k-1 and k) and 2k+1 (tied with
    positive score k). A resample's per-unit counts times these matrices give everything the Mann-Whitney count needs.
    """
    _, tie = np.unique(scores, return_inverse=True)
    y = np.asarray(labels) > 0
    pos_ties = np.unique(tie[y])
    below = np.searchsorted(pos_ties, tie)  # positive scores strictly below each sample
    at_pos = below < len(pos_ties)
    at_pos[at_pos] = pos_ties[below[at_pos]] == tie[at_pos]
    segment = 2 * below + at_pos
    pos = sparse.csr_matrix((np.ones(y.sum()), (below[y], groups[y])), shape=(len(pos_ties), n_groups))
    neg = sparse.csr_matrix((np.ones((~y).sum()), (segment[~y], groups[~y])), shape=(2 * len(pos_ties) + 1, n_groups))
    return pos, neg


def mann_whitney(w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
    """(b,) AUC from the (K, b) and (2K+1, b) weights laid out as by ``tie_group_counts``; ties count 1/2."""
    cum = np.cumsum(w_neg, axis=0)
    num = (w_pos * (cum[0:-1:2] + 0.5 * w_neg[1::2])).sum(0)
    den = w_pos.sum(0) * cum[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def grouped_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b,) AUC of one finding when group ``g`` of resample ``b`` weighs ``counts[b, g]``.

    Written here (not sklearn) because a bootstrap needs thousands of AUCs: the scores are sorted once, ties grouped
    once, negatives between two positive scores are summed into one segment, and each chunk of resamples is two
    sparse products and one cumulative sum over positive scores (a Mann-Whitney count): time grows with
    images x resamples and memory with positive scores x chunk, never with images x distinct scores.
    """
    pos, neg = tie_group_counts(scores, labels, groups, counts.shape[1])
    out = np.empty(len(counts))
    for start in range(0, len(counts), CHUNK):
        block = np.ascontiguousarray(counts[start:start + CHUNK].T)  # (groups, b): products come out C-ordered
        out[start:start + CHUNK] = mann_whitney(pos @ block, neg @ block)
    return out


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(b,) ROC AUC under each row of (b, n) per-sample ``weights``; NaN without positive or negative weight.

    Equal to ``sklearn.metrics.roc_auc_score(labels, scores, sample_weight=w)`` for each row ``w``.
    """
    return grouped_auc(np.asarray(scores), np.asarray(labels), np.arange(len(scores)), np.asarray(weights, float))


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(b, findings) AUC of every finding when sample ``i`` weighs ``counts[b, groups[i]]`` in resample ``b``.

    A NaN label is unknown: that sample is left out of that finding's AUCs.
    """
    if labels.shape[1] == 0:  # no scored finding (a small split): nothing to resample
        return np.empty((len(counts), 0))
    known = ~np.isnan(np.asarray(labels, dtype=np.float64))
    return np.stack([grouped_auc(scores[known[:, j], j], labels[known[:, j], j], groups[known[:, j]], counts)
                     for j in range(labels.shape[1])], axis=1)


def _draw_counts(rng: np.random.Generator, n_rows: int, n_units: int) -> np.ndarray:
    draws = rng.integers(0, n_units, size=(n_rows, n_units))
    flat = (draws + n_units * np.arange(n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n_units).reshape(n_rows, n_units).astype(np.float64)


def patient_counts(patients: np.ndarray, n_boot: int, seed: int = 0, keep: Sequence[np.ndarray] = ()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, patients) draw counts of resampled patients, and each image's patient index.

    Every row of ``keep`` is a (patients,) mask: a resample that draws nobody from one of these masks (e.g. no
    positive patient of a scored finding) is drawn again, so those findings stay defined in every resample.
    """
    uniq, inverse = np.unique(np.asarray(patients), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = _draw_counts(rng, n_boot, len(uniq))
    masks = np.asarray(keep, dtype=float).reshape(-1, len(uniq))
    bad = np.flatnonzero(((counts @ masks.T) == 0).any(1)) if len(masks) else np.array([], int)
    while len(bad):
        counts[bad] = _draw_counts(rng, len(bad), len(uniq))
        bad = bad[((counts[bad] @ masks.T) == 0).any(1)]
    return counts, inverse


def patient_bootstrap_weights(patients: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_images) weights: how often each image's patient was drawn when resampling patients."""
    counts, inverse = patient_counts(patients, n_boot, seed)
    return counts[:, inverse]


def scored_masks(labels: np.ndarray, inverse: np.ndarray, scored: np.ndarray) -> list[np.ndarray]:
    """Per scored finding, the masks of its positive and of its negative patients (for ``patient_counts(keep=)``)."""
    n = inverse.max() + 1 if len(inverse) else 0
    masks = []
    for j in np.flatnonzero(scored):
        for cls in (1, 0):
            mask = np.zeros(n, bool)
            mask[inverse[labels[:, j] == cls]] = True
            masks.append(mask)
    return masks


def bootstrap_sd(deviations: np.ndarray) -> np.ndarray:
    """Per column: the SD (ddof 1) of bootstrap resamples or deviations; 0 with fewer than two resamples."""
    deviations = np.asarray(deviations, dtype=float)
    return deviations.std(0, ddof=1) if len(deviations) > 1 else np.zeros(deviations.shape[1:])


def sd_interval(point: np.ndarray, se: np.ndarray, level: float = 0.95,
                bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The interval ``point +/- z * se`` on the logit scale of ``bounds`` (the metric's range: [0, 1] for AUC and
    the built-in metrics), z the normal quantile of the two-sided ``level``.

    The one construction of a single run's intervals (``evaluate``'s tables, the pointing game); ``compare``'s use
    the same scale with its two-level critical values. Logit, not symmetric and clipped: near 1 a symmetric interval
    under-covers (with 5 positive patients at AUC 0.95, 72% instead of 95%).
    """
    return logit_interval(point, se, normal_quantile(level), bounds)


def auc_table(
    labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, names: Sequence[str],
    n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95,
) -> pd.DataFrame:
    """Per finding: AUC, bootstrap CI over patients, positives, negatives, positive patients; plus a ``macro`` row.

    The CI is ``sd_interval``: AUC +/- z x the SD of the patient resamples on the logit scale.

    Only scored findings (``MIN_POSITIVE_PATIENTS``) get an interval, and the macro mean is over that fixed set, in
    the point estimate and in every resample.
    """
    return score_table(labels, scores, patients, names, per_finding_auc, bootstrap_aucs, "auc", n_boot, seed, level)


def score_table(
    labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, names: Sequence[str],
    point_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    boot_fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    column: str = "auc", n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """``auc_table`` for any per-finding score: ``point_fn(labels, scores)`` -> (findings,) and
    ``boot_fn(labels, scores, counts, inverse)`` -> (resamples, findings); the value column is ``column``.

    The resamples depend on ``patients``, ``labels`` and ``seed`` only, so every metric of one evaluation is
    computed on the same resampled patients.
    """
    labels, patients = np.asarray(labels), np.asarray(patients)
    scored = scored_findings(labels, patients)
    _, inverse = np.unique(patients, return_inverse=True)
    counts, inverse = patient_counts(patients, n_boot, seed, keep=scored_masks(labels, inverse, scored))
    values = np.asarray(point_fn(labels, scores), dtype=float)
    boot = np.full((n_boot, len(names)), np.nan)
    if scored.any():
        boot[:, scored] = boot_fn(labels[:, scored], scores[:, scored], counts, inverse)
    boot = np.column_stack([boot[:, scored].mean(1) if scored.any() else boot[:, 0], boot])
    point = np.concatenate([[values[scored].mean() if scored.any() else np.nan], values])
    low, high = sd_interval(point, bootstrap_sd(boot), level, bounds)
    known = ~np.isnan(labels.astype(np.float64))  # unknown labels count as neither positive nor negative
    n_pos = np.concatenate([[np.nansum(labels)], np.nansum(labels, 0)])
    table = pd.DataFrame({
        "finding": ["macro", *names], column: point, "ci_low": low, "ci_high": high,
        "positives": n_pos.astype(int), "negatives": (np.concatenate([[known.sum()], known.sum(0)]) - n_pos).astype(int),
        "positive_patients": [len(np.unique(patients[(labels > 0).any(1)])), *positive_patients(labels, patients)],
        "scored": [bool(scored.any()), *scored],
    })
    return pd.concat([table.iloc[1:], table.iloc[:1]], ignore_index=True)  # macro last, as before
