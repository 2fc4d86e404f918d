"""The metric registry: per-finding scores of (labels, probabilities) chosen with ``--metrics``.

Every metric has a point function ``point(y, p)`` (one finding, the library's own computation: sklearn or MONAI) and a
weighted function ``weighted(y, p, counts, groups=None)`` for the patient bootstrap: sample ``i`` counts
``counts[b, groups[i]]`` times in resample ``b`` (``groups`` None: each sample is its own unit, ``counts`` per-sample
weights), one score per resample. The weighted functions are written here because sklearn and MONAI take one weight
vector per call (or none): thousands of resamples per finding, regime and seed would be thousands of calls; here a
chunk of resamples is a few sparse products over the patients, like the AUC bootstrap of ``stats/auc.py``. Each is
tested equal to the library's result on the repeated samples (tests/test_metrics_config.py).

``auc`` is always on; its bootstrap keeps the tie-grouped fast path of ``stats/auc.py``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from monai.metrics import CalibrationErrorMetric
from scipy import sparse
from sklearn.metrics import average_precision_score, roc_curve

from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError
from mai_aug.stats.auc import CHUNK, bootstrap_aucs, grouped_auc, per_finding_auc, score_table, tie_group_counts

#: Equal-width probability bins of ``ece`` and of the reliability diagrams (MONAI's default).
ECE_BINS = 20
#: Specificity of ``sens@spec`` when the name gives none.
DEFAULT_SPECIFICITY = 0.9
#: Slack when comparing a false-positive rate with ``1 - specificity``: 1 - 0.9 is 0.09999999999999998 in floats.
_FPR_SLACK = 1e-9


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: as written on the command line (``sens@spec0.95``).
        key: the same, safe in file names, CSV columns and TensorBoard tags (``sens_at_spec0.95``).
        description: one line for tables and reports.
        higher_is_better: False for calibration error.
        point: (y, p) -> score of one finding.
        weighted: (y, p, counts (b, units), groups (n,) or None) -> (b,) scores, one per resample.
    """

    name: str
    key: str
    description: str
    higher_is_better: bool
    point: Callable[[np.ndarray, np.ndarray], float]
    weighted: Callable[..., np.ndarray]
    bounds: tuple[float, float] = (0.0, 1.0)  # the range intervals are clipped to; a custom metric's is unbounded


def labelled(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop the samples whose label is NaN (not annotated for this finding); labels become 0/1.

    Returns the labels, the scores and each kept sample's resampling unit (``groups``; None: each sample its own).
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    keep = ~np.isnan(y)
    return (y[keep] > 0).astype(np.float64), p[keep], groups[keep]


# --- auc -------------------------------------------------------------------------------------------------------

def _auc_point(y: np.ndarray, p: np.ndarray) -> float:
    y, p, _ = labelled(y, p)
    return float(per_finding_auc(y[:, None], p[:, None])[0])


def _auc_weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    y, p, groups = labelled(y, p, groups)
    return grouped_auc(p, y, groups, np.asarray(counts, dtype=np.float64))


# --- ap and sens@spec: weighted counts at or above each distinct positive score, highest first -------------------

def _at_or_above(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, b) weighted positives at each distinct positive score, and positives and negatives at or above it.

    The tie-grouped layout of ``stats.auc.tie_group_counts`` (scores sorted and tied once, two sparse products per
    chunk of resamples): only thresholds at a positive's score change recall or sensitivity, so K is the number of
    distinct positive scores, not of samples.
    """
    pos, neg = tie_group_counts(p, y, groups, counts.shape[1])
    block = np.ascontiguousarray(np.asarray(counts, dtype=np.float64).T)  # (units, b)
    at = pos @ block  # (K, b), ascending scores
    negatives = neg @ block  # (2K+1, b): segment 2k below positive score k, 2k+1 tied with it
    tp = np.cumsum(at[::-1], axis=0)[::-1]
    fp = np.cumsum(negatives[::-1], axis=0)[::-1][1::2]  # negatives in segments 2k+1 and above
    return at, tp, fp


def _ap_point(y: np.ndarray, p: np.ndarray) -> float:
    y, p, _ = labelled(y, p)
    return float(average_precision_score(y, p)) if y.any() else float("nan")


def _ap_weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """sklearn's average precision, sum over thresholds of (R_k - R_(k-1)) P_k, per resample."""
    y, p, groups = labelled(y, p, groups)
    if not y.any():
        return np.full(len(counts), np.nan)
    at, tp, fp = _at_or_above(y, p, counts, groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / np.where(tp + fp > 0, tp + fp, 1)  # 0 where nothing is called: no recall gained there
        return np.where(tp[0] > 0, (at * precision).sum(0) / tp[0], np.nan)


def _sens_point(y: np.ndarray, p: np.ndarray, specificity: float) -> float:
    y, p, _ = labelled(y, p)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return float(tpr[fpr <= 1 - specificity + _FPR_SLACK].max())


def _sens_weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray | None,
                   specificity: float) -> np.ndarray:
    """Highest sensitivity among thresholds whose specificity is at least ``specificity``, per resample."""
    y, p, groups = labelled(y, p, groups)
    if not y.any() or y.all():
        return np.full(len(counts), np.nan)
    _, tp, fp = _at_or_above(y, p, counts, groups)
    negatives = np.asarray(counts, dtype=np.float64) @ np.bincount(groups[y == 0], minlength=counts.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / tp[0], fp / negatives
    best = np.where(fpr <= 1 - specificity + _FPR_SLACK, tpr, 0.0).max(0)  # the origin (0, 0) is always allowed
    return np.where((tp[0] > 0) & (negatives > 0), best, np.nan)


# --- ece -------------------------------------------------------------------------------------------------------

def _ece_point(y: np.ndarray, p: np.ndarray) -> float:
    """MONAI's expected calibration error of one finding: the samples are one (1, 1, n) item of ``ECE_BINS`` bins.

    The metric's own return value, never ``aggregate()``: that all-gathers MONAI's buffers across torchrun's ranks,
    and this runs on the gathered set already, often on rank 0 alone (evaluation, reports), where it would hang.
    """
    y, p, _ = labelled(y, p)
    if not len(y):
        return float("nan")
    metric = CalibrationErrorMetric(num_bins=ECE_BINS, calibration_reduction="expected", metric_reduction="none")
    item = metric(y_pred=torch.as_tensor(p, dtype=torch.float32).view(1, 1, -1), y=torch.as_tensor(y).view(1, 1, -1))
    return float(item.reshape(-1)[0])  # local: the per-item result of this call


def calibration_bins(p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each probability's bin as ``monai.metrics.calibration_binning`` assigns it (float32 values and boundaries)."""
    boundaries = torch.linspace(0.0, 1.0 + torch.finfo(torch.float32).eps, bins + 1)
    values = torch.as_tensor(np.asarray(p), dtype=torch.float32)
    return torch.bucketize(values, boundaries[1:]).clamp(max=bins - 1).numpy()


def _ece_weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """sum over bins of |weighted sum of p - weighted sum of y| / total weight: count x |mean p - mean y| per bin.

    Each unit's sum of (p - y) per bin is one sparse (units, bins) matrix, so a resample is one product.
    """
    y, p, groups = labelled(y, p, groups)
    counts = np.asarray(counts, dtype=np.float64)
    if not len(y):
        return np.full(len(counts), np.nan)
    p32 = p.astype(np.float32).astype(np.float64)  # MONAI bins and averages float32 probabilities
    units = counts.shape[1]
    gap = sparse.csr_matrix((p32 - y, (groups, calibration_bins(p))), shape=(units, ECE_BINS))
    size = np.bincount(groups, minlength=units).astype(np.float64)
    total = counts @ size
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs((gap.T @ counts.T).T).sum(1) / np.where(total > 0, total, 1), np.nan)


# --- the registry ----------------------------------------------------------------------------------------------

BASE: dict[str, tuple[str, bool]] = {
    "auc": ("ROC AUC", True),
    "ap": ("average precision (area under the precision-recall curve)", True),
    "ece": (f"expected calibration error ({ECE_BINS} equal-width bins, MONAI CalibrationError)", False),
    "sens@spec": ("sensitivity at a specificity of at least {spec} (sens@specX sets X; default "
                  f"{DEFAULT_SPECIFICITY})", True),
}
_SENS = re.compile(r"sens@spec(0?\.\d+)?")


#: A user's metrics (``{_target_: my_metrics.brier, name: brier}`` in settings), registered by :func:`custom_metric`.
CUSTOM: dict[str, Metric] = {}
_TARGETS: dict[str, str] = {}  # each custom name's _target_: one name, one function
CUSTOM_KEYS = ("_target_", "name", "higher_is_better", "description")
_NAME = re.compile(r"[A-Za-z][\w.-]*")


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; raises MaiAugError naming the nearest registered name."""
    if name in CUSTOM:
        return CUSTOM[name]
    match = _SENS.fullmatch(name)
    if match:
        spec = float(match.group(1)) if match.group(1) else DEFAULT_SPECIFICITY
        if not 0 < spec < 1:
            raise MaiAugError(f"`metrics` {name}: specificity {spec} is not in (0, 1)")
        full = f"sens@spec{spec:g}"
        return Metric(full, full.replace("@", "_at_"), BASE["sens@spec"][0].format(spec=f"{spec:g}"), True,
                      lambda y, p: _sens_point(y, p, spec),
                      lambda y, p, counts, groups=None: _sens_weighted(y, p, counts, groups, spec))
    functions = {"auc": (_auc_point, _auc_weighted), "ap": (_ap_point, _ap_weighted), "ece": (_ece_point, _ece_weighted)}
    if name not in functions:
        near = difflib.get_close_matches(name, list(BASE), n=1, cutoff=0.3)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise MaiAugError(f"`metrics`: unknown metric {name!r}{hint}; choose from {', '.join(BASE)} "
                          f"(sens@specX, e.g. sens@spec0.95)")
    description, higher = BASE[name]
    return Metric(name, name, description, higher, *functions[name])


def custom_metric(entry: dict, where: str = "metrics", trust: bool | None = None) -> Metric:
    """A user's metric, ``{_target_: my_metrics.brier, name: brier, higher_is_better: false}``, registered by name.

    ``_target_`` is a function ``(y, p) -> float`` of one finding, as the built-ins' point functions: 0/1 labels
    (unlabelled samples dropped) and probabilities. It is code, so it is imported only under ``--trust-config``.
    """
    from mai_aug.core.trust import trusted_callable  # MONAI transforms: only when a settings entry names code

    unknown = [k for k in entry if k not in CUSTOM_KEYS]
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), CUSTOM_KEYS, n=1)
        raise MaiAugError(f"{where}: unknown key {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else
                          f" (valid: {', '.join(CUSTOM_KEYS)})"))
    name, higher = entry.get("name"), entry.get("higher_is_better", True)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MaiAugError(f"{where}: name {name!r} must be a word such as brier (it names files and columns)")
    if name in BASE or _SENS.fullmatch(name):
        raise MaiAugError(f"{where}: name {name!r} is a built-in metric; choose another name")
    if not isinstance(higher, bool):
        raise MaiAugError(f"{where}: higher_is_better {higher!r} must be true or false")
    point = trusted_callable(entry.get("_target_"), f"{where} {name}", trust)
    if _TARGETS.get(name, entry["_target_"]) != entry["_target_"]:
        raise MaiAugError(f"{where}: name {name!r} already names {_TARGETS[name]}; give each metric its own name")
    metric = Metric(name, name, str(entry.get("description", f"{name} ({entry['_target_']})")), higher,
                    _labelled_point(point), _repeated(point), bounds=(-np.inf, np.inf))
    CUSTOM[name], _TARGETS[name] = metric, entry["_target_"]
    return metric


def _labelled_point(point: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    """``point`` of the labelled samples (NaN labels dropped, labels 0/1); NaN where none are labelled."""

    def score(y: np.ndarray, p: np.ndarray) -> float:
        y, p, _ = labelled(y, p)
        return float(point(y, p)) if len(y) else float("nan")

    return score


def _repeated(point: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., np.ndarray]:
    """The bootstrap of a user's point function: each resample's samples repeated by their count, scored as given.

    Hand-written: neither sklearn nor MONAI resamples an arbitrary function; this is the plain definition (one call
    per resample), slower than the built-ins' weighted forms but exact for any function.
    """

    def weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        y, p, groups = labelled(y, p, groups)
        times = np.rint(np.asarray(counts, dtype=np.float64)).astype(np.int64)[:, groups]  # (b, samples)
        return np.array([float(point(np.repeat(y, t), np.repeat(p, t))) if t.sum() else float("nan") for t in times])

    return weighted


def resolve_metrics(names: Sequence[str | dict] | None) -> list[Metric]:
    """The metrics of ``names`` with ``auc`` first (always on), each once, in the order given.

    An entry may be a user's metric as a mapping (:func:`custom_metric`); it is registered under its name.
    """
    metrics = [get_metric("auc")]
    for name in names or ():
        metric = custom_metric(name) if isinstance(name, dict) else get_metric(str(name))
        if metric.name not in {m.name for m in metrics}:
            metrics.append(metric)
    return metrics


def per_finding(metric: Metric, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(findings,) ``metric`` of each column of (n, findings) labels and probabilities."""
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if metric.name == "auc" and not np.isnan(labels).any():
        return per_finding_auc(labels, scores)
    return np.array([metric.point(labels[:, j], scores[:, j]) for j in range(labels.shape[1])])


def bootstrap_metric(metric: Metric, labels: np.ndarray, scores: np.ndarray, counts: np.ndarray,
                     inverse: np.ndarray) -> np.ndarray:
    """(b, findings) ``metric`` when sample ``i`` weighs ``counts[b, inverse[i]]`` in resample ``b``.

    ``auc`` takes the tie-grouped fast path of ``stats/auc.py``; the others their weighted function, a chunk of
    ``CHUNK`` resamples at a time.
    """
    if metric.name == "auc" and not np.isnan(np.asarray(labels, dtype=float)).any():
        return bootstrap_aucs(labels, scores, counts, inverse)
    out = np.empty((len(counts), labels.shape[1]))
    for start in range(0, len(counts), CHUNK):
        for j in range(labels.shape[1]):
            out[start:start + CHUNK, j] = metric.weighted(labels[:, j], scores[:, j], counts[start:start + CHUNK], inverse)
    return out


def metric_table(metric: Metric, labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, names: Sequence[str],
                 n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """``auc_table`` for ``metric``: per finding and macro, the value (column ``metric.key``) and its patient-bootstrap
    interval, on the same resamples as every other metric of the same labels, patients and seed."""
    return score_table(labels, scores, patients, names, lambda y, p: per_finding(metric, y, p),
                       lambda y, p, c, i: bootstrap_metric(metric, y, p, c, i), metric.key, n_boot, seed, level,
                       metric.bounds)


def interval_tables(metrics: Sequence[Metric], labels: np.ndarray, scores: np.ndarray, patients: np.ndarray,
                    names: Sequence[str], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, level: float = 0.95
                    ) -> dict[str, pd.DataFrame]:
    """One run's interval tables: ``metric_table`` of each metric (``auc`` included), keyed by metric name.

    The one construction of a run's tables (``evaluate`` writes them): every table is :func:`score_table` on the
    same patient resamples, ``auc``'s with its tie-grouped fast path (equal to ``auc_table``).
    """
    return {metric.name: metric_table(metric, labels, scores, patients, names, n_boot, seed, level)
            for metric in metrics}
