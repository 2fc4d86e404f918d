"""AUC helpers: defined without positives, fast weighted AUC equals the dense reference and sklearn, patient bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mai_aug.stats.auc import (
    MIN_POSITIVE_PATIENTS,
    auc_table,
    macro_auc,
    patient_bootstrap_weights,
    patient_counts,
    per_finding_auc,
    positive_patients,
    scored_findings,
    weighted_auc,
)


def dense_weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The previous implementation (images x distinct-scores one-hot matrix): the reference for the fast one."""
    uniq, idx = np.unique(scores, return_inverse=True)
    onehot = np.zeros((len(scores), len(uniq)))
    onehot[np.arange(len(scores)), idx] = 1.0
    y = labels.astype(float)
    w_pos = (weights * y) @ onehot
    w_neg = (weights * (1 - y)) @ onehot
    below = np.cumsum(w_neg, axis=1) - w_neg
    num = (w_pos * (below + 0.5 * w_neg)).sum(1)
    den = w_pos.sum(1) * w_neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def test_finding_without_positives_is_nan_and_left_out_with_warning():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.3, 0.4]])
    aucs = per_finding_auc(labels, scores)
    assert aucs[0] == 1.0 and np.isnan(aucs[1])
    with pytest.warns(UserWarning, match="B"):
        assert macro_auc(aucs, ["A", "B"]) == 1.0


def test_per_finding_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((120, 3)), 1)
    labels = (rng.random((120, 3)) < [0.1, 0.5, 0.9]).astype(int)
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(3)]
    assert np.abs(per_finding_auc(labels, scores) - expected).max() < 1e-12


def test_weighted_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(80), 1)  # many ties
    labels = (rng.random(80) < 0.4).astype(int)
    weights = rng.integers(0, 3, (5, 80)).astype(float)
    ours = weighted_auc(scores, labels, weights)
    for w, value in zip(weights, ours):
        assert value == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))


@pytest.mark.parametrize("decimals,prevalence", [(1, 0.3), (2, 0.05), (3, 0.9), (12, 0.5)])
def test_fast_weighted_auc_equals_dense_reference(decimals, prevalence):
    rng = np.random.default_rng(decimals)
    n, b = 400, 700  # b > the chunk size, so chunking is exercised
    scores = np.round(rng.random(n), decimals)
    labels = (rng.random(n) < prevalence).astype(int)
    weights = rng.integers(0, 3, (b, n)).astype(float)
    weights[0] = 0  # no weight at all
    weights[1] = labels  # positives only
    ours, ref = weighted_auc(scores, labels, weights), dense_weighted_auc(scores, labels, weights)
    assert np.array_equal(np.isnan(ours), np.isnan(ref)) and np.isnan(ours[:2]).all()
    assert np.nanmax(np.abs(ours - ref)) < 1e-12


def test_bootstrap_resamples_whole_patients_with_the_same_draws():
    patients = np.array([7, 7, 7, 9, 9, 4])
    w = patient_bootstrap_weights(patients, 50, seed=0)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 3] == w[:, 4]).all()
    assert np.allclose(w[:, [0, 3, 5]].sum(1), 3)  # three patients drawn each time
    draws = np.random.default_rng(0).integers(0, 3, size=(50, 3))  # the draws of the np.add.at version
    counts = np.zeros((50, 3))
    np.add.at(counts, (np.arange(50)[:, None], draws), 1.0)
    assert np.array_equal(w, counts[:, np.unique(patients, return_inverse=True)[1]])


def test_resamples_missing_a_kept_group_are_drawn_again():
    patients = np.arange(20)
    keep = [np.arange(20) == 3]  # one patient that every resample must contain
    counts, _ = patient_counts(patients, 200, seed=0, keep=keep)
    plain, _ = patient_counts(patients, 200, seed=0)
    assert (counts[:, 3] > 0).all() and (plain[:, 3] == 0).any()
    assert np.array_equal(counts[plain[:, 3] > 0], plain[plain[:, 3] > 0])  # rows that were fine are unchanged


def test_scored_findings_need_enough_distinct_positive_patients():
    patients = np.repeat(np.arange(30), 2)
    labels = np.zeros((60, 2), int)
    labels[: 2 * MIN_POSITIVE_PATIENTS, 0] = 1  # MIN patients, two positive images each
    labels[: 2 * MIN_POSITIVE_PATIENTS, 1] = 1
    labels[:2, 1] = 0  # one patient fewer...
    labels[40:42, 1] = 1  # ...and one more positive image of an already positive patient
    labels[43, 1] = 1
    assert labels.sum(0).tolist() == [2 * MIN_POSITIVE_PATIENTS, 2 * MIN_POSITIVE_PATIENTS + 1]
    assert positive_patients(labels, patients).tolist() == [MIN_POSITIVE_PATIENTS, MIN_POSITIVE_PATIENTS + 1]
    labels[43, 1] = 0
    assert positive_patients(labels, patients).tolist() == [MIN_POSITIVE_PATIENTS, MIN_POSITIVE_PATIENTS]
    assert scored_findings(labels, patients).tolist() == [True, True]
    labels[40:42, 1] = 0
    assert scored_findings(labels, patients).tolist() == [True, False]
    few_negatives = np.ones((60, 1), int)
    few_negatives[: 2 * MIN_POSITIVE_PATIENTS - 2] = 0
    assert not scored_findings(few_negatives, patients)[0]


def test_auc_table_ci_brackets_point_estimate_and_macro_is_over_scored_findings():
    rng = np.random.default_rng(3)
    patients = np.arange(300) // 2
    labels = (rng.random((300, 4)) < 0.2).astype(int)
    labels[:, 2] = 0
    labels[:, 3] = 0
    labels[[10, 11, 50], 3] = 1  # two positive patients: AUC, but no interval and not in the macro mean
    scores = labels + rng.normal(0, 0.8, labels.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN warnings either
        table = auc_table(labels, scores, patients, ["A", "B", "C", "D"], n_boot=200).set_index("finding")
    for f in ("A", "B", "macro"):
        assert table.loc[f, "ci_low"] < table.loc[f, "auc"] < table.loc[f, "ci_high"]
    assert np.isnan(table.loc["C", "auc"]) and table.loc["C", "positives"] == 0
    assert np.isfinite(table.loc["D", "auc"]) and np.isnan(table.loc["D", "ci_low"])
    assert table.loc["D", "positive_patients"] == 2 and not table.loc["D", "scored"]
    assert table.loc["macro", "auc"] == pytest.approx(table.loc[["A", "B"], "auc"].mean())


def test_auc_table_without_any_scored_finding_has_aucs_but_no_intervals():
    """A small split where no finding has 5 positive patients: AUCs, no intervals, no crash."""
    labels = np.array([[1, 0], [0, 1], [0, 0], [1, 1], [0, 0], [0, 0]])
    scores = np.linspace(0.1, 0.9, 12).reshape(6, 2)
    table = auc_table(labels, scores, np.arange(6), ["A", "B"], n_boot=20).set_index("finding")
    assert np.isfinite(table.loc["A", "auc"]) and table[["ci_low", "ci_high"]].isna().all().all()
    assert not table["scored"].any()


def test_evaluate_and_compare_give_one_seed_the_same_logit_interval():
    """eval/test_auc.csv and a one-seed comparison's auc_by_regime.csv: one construction, the same numbers."""
    from mai_aug.stats.paired import score_regimes, summary_table

    rng = np.random.default_rng(4)
    patients = np.arange(200) // 2
    labels = (rng.random((200, 3)) < 0.3).astype(int)
    scores = labels + rng.normal(0, 1.0, labels.shape)
    names = ["A", "B", "C"]
    table = auc_table(labels, scores, patients, names, n_boot=300).set_index("finding")
    summary = summary_table(score_regimes(labels, patients, {"none": [scores]}, n_boot=300), names).set_index("finding")
    for f in ("macro", *names):
        assert table.loc[f, ["ci_low", "ci_high"]].tolist() == pytest.approx(summary.loc[f, ["ci_low", "ci_high"]].tolist())
        logit = [np.log(v / (1 - v)) for v in table.loc[f, ["ci_low", "auc", "ci_high"]]]
        assert logit[2] - logit[1] > 0 and logit[1] - logit[0] == pytest.approx(logit[2] - logit[1])  # symmetric in logit


def test_findings_above_chance_are_counted_at_the_bonferroni_level():
    """One seed: a finding is above chance when its interval at 1 - 0.05 / (scored findings), not at 95%, is above
    0.5 (auc_table's own intervals at that level give the same count)."""
    from mai_aug.stats.paired import score_regimes, summary_table

    rng = np.random.default_rng(9)
    patients = np.arange(300) // 2
    labels = (rng.random((300, 6)) < 0.3).astype(int)
    scores = labels * np.array([0.0, 0.2, 0.35, 0.5, 1.0, 2.0]) + rng.normal(0, 1.0, labels.shape)
    names = [f"F{j}" for j in range(6)]
    summary = summary_table(score_regimes(labels, patients, {"none": [scores]}, n_boot=400), names)
    above = int(summary.loc[summary["finding"] == "macro", "findings_above_0.5"].iloc[0])
    strict = auc_table(labels, scores, patients, names, n_boot=400, level=1 - 0.05 / 6)
    marginal = auc_table(labels, scores, patients, names, n_boot=400)
    per_finding = lambda t: int((t[t["finding"] != "macro"]["ci_low"] > 0.5).sum())  # noqa: E731
    assert above == per_finding(strict)
    assert per_finding(strict) < per_finding(marginal)  # the correction matters in this example
