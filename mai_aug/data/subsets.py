"""Nested patient subsets of a datalist's training split: the training sizes of a learning curve.

The training patients are put in one fixed order (shuffled by the split seed; then, rarest finding first, the first
patient positive for a finding that no earlier-moved patient has is moved to the front), and the subset of
fraction ``f`` keeps the images of the first ``ceil(f * n_patients)`` patients. Every smaller subset is therefore
contained in every larger one, and every subset of at least as many patients as were moved to the front holds a
positive of every finding the training split has. Validation and test are the full datalist's, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mai_aug.core.errors import MaiAugError
from mai_aug.data.split import known_positives


def parse_fraction(text: str | float) -> float:
    """A training fraction in (0, 1]; raises MaiAugError naming the value."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise MaiAugError(f"`train_fraction` {text!r}: not a number") from None
    if not 0 < value <= 1:  # also refuses nan
        raise MaiAugError(f"`train_fraction` {text}: must be in (0, 1]")
    return value


def check_fractions(values: Sequence[str | float]) -> list[float]:
    """The fractions sorted, each in (0, 1], with 1.0 (the full training split: the study's own runs) added as the
    curve's end; a repeated fraction is refused rather than dropped."""
    fractions = [parse_fraction(v) for v in values]
    if not fractions:
        raise MaiAugError("`train_fraction`: give at least one fraction, such as 0.1 0.3 1.0")
    labels = [fraction_label(f) for f in fractions]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise MaiAugError(f"`train_fraction`: {repeated[0]} is given twice")
    return sorted({*fractions, 1.0})


def fraction_label(fraction: float) -> str:
    """The name of a fraction in folders and tables: ``0.1``, ``0.25``, ``1`` (12 significant digits; fractions that
    share a name are refused by :func:`check_fractions`)."""
    return f"{fraction:.12g}"


def patient_order(training: Sequence[dict], seed: int) -> list:
    """The training patients in the fixed order the nested subsets take them from (see the module docstring)."""
    if not training:
        return []
    patients = sorted({it["patient"] for it in training}, key=str)  # an order independent of the datalist's
    index = {p: i for i, p in enumerate(patients)}
    labels = known_positives(np.asarray([it["label"] for it in training], dtype=np.float64))
    has = np.zeros((len(patients), labels.shape[1]), dtype=bool)
    np.logical_or.at(has, [index[it["patient"]] for it in training], labels > 0)
    order = list(np.random.default_rng(seed).permutation(len(patients)))
    front: list[int] = []
    for j in np.argsort(has.sum(0), kind="stable"):  # rarest finding first
        if not has[:, j].any() or any(has[p, j] for p in front):
            continue
        front.append(next(p for p in order if has[p, j]))
    moved = set(front)
    return [patients[p] for p in [*front, *(p for p in order if p not in moved)]]


def subset_size(fraction: float, n_patients: int) -> int:
    """``ceil(fraction * n_patients)``, at least 1 (rounded first: 0.3 * 10 is 3.0000000000000004 in floating point)."""
    return max(1, math.ceil(round(fraction * n_patients, 9)))


def nested_subset(datalist: dict, fraction: float, seed: int) -> dict:
    """``datalist`` with its training split cut to the first ``subset_size(fraction, n)`` patients of
    :func:`patient_order` (their images in the datalist's order); validation and test are the same lists."""
    order = patient_order(datalist["training"], seed)
    kept = set(order[: subset_size(fraction, len(order))])
    subset = {**datalist, "training": [it for it in datalist["training"] if it["patient"] in kept]}
    check_same_evaluation(datalist, subset, fraction_label(fraction))
    return subset


def check_same_evaluation(full: dict, subset: dict, label: str) -> None:
    """Raise unless ``subset`` has ``full``'s labels, validation and test, and its training patients are a subset of
    ``full``'s: a learning curve compares sizes on one shared evaluation."""
    for key in ("labels", "validation", "test"):
        if subset[key] != full[key]:
            raise MaiAugError(f"`train_fraction` {label}: its {key} differs from the full datalist's")
    extra = {it["patient"] for it in subset["training"]} - {it["patient"] for it in full["training"]}
    if extra:
        raise MaiAugError(f"`train_fraction` {label}: training patient {sorted(extra, key=str)[0]} is not in the "
                          f"full training split")


def findings_without_positives(subset: dict, full: dict) -> list[str]:
    """The findings with a positive image in ``full``'s training split but none in ``subset``'s."""
    def positives(items: Sequence[dict]) -> np.ndarray:
        labels = np.asarray([it["label"] for it in items], dtype=np.float64).reshape(-1, len(full["labels"]))
        return known_positives(labels).sum(0)

    had, has = positives(full["training"]), positives(subset["training"])
    return [name for name, a, b in zip(full["labels"], had, has) if a > 0 and b == 0]
