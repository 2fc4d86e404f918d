"""AUC helpers: defined without positives, weighted AUC equals sklearn's, patient bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mai_aug.reports.auc import auc_table, macro_auc, patient_bootstrap_weights, per_finding_auc, weighted_auc


def test_finding_without_positives_is_nan_and_left_out_with_warning():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.3, 0.4]])
    aucs = per_finding_auc(labels, scores)
    assert aucs[0] == 1.0 and np.isnan(aucs[1])
    with pytest.warns(UserWarning, match="B"):
        assert macro_auc(aucs, ["A", "B"]) == 1.0


def test_weighted_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(80), 1)  # many ties
    labels = (rng.random(80) < 0.4).astype(int)
    weights = rng.integers(0, 3, (5, 80)).astype(float)
    ours = weighted_auc(scores, labels, weights)
    for w, value in zip(weights, ours):
        assert value == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))


def test_bootstrap_resamples_whole_patients():
    patients = np.array([7, 7, 7, 9, 9, 4])
    w = patient_bootstrap_weights(patients, 50, seed=0)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 3] == w[:, 4]).all()
    assert np.allclose(w[:, [0, 3, 5]].sum(1), 3)  # three patients drawn each time


def test_auc_table_ci_brackets_point_estimate():
    rng = np.random.default_rng(3)
    labels = (rng.random((300, 3)) < 0.2).astype(int)
    labels[:, 2] = 0
    scores = labels + rng.normal(0, 0.8, labels.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = auc_table(labels, scores, np.arange(300) // 2, ["A", "B", "C"], n_boot=200).set_index("finding")
    for f in ("A", "B", "macro"):
        assert table.loc[f, "ci_low"] < table.loc[f, "auc"] < table.loc[f, "ci_high"]
    assert np.isnan(table.loc["C", "auc"]) and table.loc["C", "positives"] == 0
    assert table.loc["macro", "auc"] == pytest.approx(table.loc[["A", "B"], "auc"].mean())
