"""Metrics as configuration: the registry against sklearn / MONAI / hand computation, and --metrics end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import CalibrationErrorMetric
from sklearn.metrics import average_precision_score, roc_auc_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.stats.auc import auc_table, per_finding_auc, score_table, weighted_auc
from mai_aug.stats.paired import score_regimes, summary_table
from mai_aug.stats.scores import get_metric, labelled, metric_table, per_finding, resolve_metrics
from mai_aug.study.report import write_report

TINY = ["--image-size", "32", "--batch-size", "8", "--workers", "0", "--quiet", "--epochs", "1",
        "--steps-per-epoch", "2"]


def small_case(seed: int = 0, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1).round(2)  # rounded: ties between scores
    return y, p


def sens_at_spec_by_hand(y: np.ndarray, p: np.ndarray, spec: float) -> float:
    """Every threshold tried: the best sensitivity whose specificity (negatives below it) reaches ``spec``."""
    best = 0.0
    for t in [np.inf, *np.unique(p)]:
        called = p >= t
        if (~called[y == 0]).mean() >= spec - 1e-12:
            best = max(best, called[y == 1].mean())
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_metric_equals_sklearn_or_hand(seed):
    y, p = small_case(seed)
    assert get_metric("auc").point(y, p) == pytest.approx(roc_auc_score(y, p))
    assert get_metric("ap").point(y, p) == pytest.approx(average_precision_score(y, p))
    for spec in (0.9, 0.75):
        name = "sens@spec" if spec == 0.9 else f"sens@spec{spec}"
        assert get_metric(name).point(y, p) == pytest.approx(sens_at_spec_by_hand(y, p, spec))
    # the bootstrap's weighted functions equal the point functions on the samples repeated by their weights
    w = np.random.default_rng(seed + 10).integers(0, 3, size=(4, len(y))).astype(float)
    for name in ("auc", "ap", "ece", "sens@spec", "sens@spec0.75"):
        metric = get_metric(name)
        repeated = [metric.point(y[np.repeat(np.arange(len(y)), row.astype(int))],
                                 p[np.repeat(np.arange(len(y)), row.astype(int))]) for row in w]
        assert metric.weighted(y, p, w) == pytest.approx(repeated, abs=1e-6), name
        units = np.arange(len(y)) // 2  # pairs of samples resampled together, as patients are
        pairs = w[:, ::2]
        repeated = [metric.point(y[np.repeat(np.arange(len(y)), row[units].astype(int))],
                                 p[np.repeat(np.arange(len(y)), row[units].astype(int))]) for row in pairs]
        assert metric.weighted(y, p, pairs, units) == pytest.approx(repeated, abs=1e-6), name


def test_ece_equals_monai_calibration_error():
    rng = np.random.default_rng(5)
    labels = (rng.random((50, 3)) < [0.2, 0.5, 0.8]).astype(float)
    probs = rng.random((50, 3))
    metric = CalibrationErrorMetric(num_bins=20, calibration_reduction="expected", metric_reduction="none")
    # MONAI's layout: findings are channels, images the spatial axis of one item
    metric(y_pred=torch.as_tensor(np.ascontiguousarray(probs.T)[None], dtype=torch.float32), y=torch.as_tensor(labels.T[None]))
    expected = metric.aggregate().numpy().ravel()
    assert per_finding(get_metric("ece"), labels, probs) == pytest.approx(expected, abs=1e-6)
    assert get_metric("ece").higher_is_better is False


def test_nan_labels_are_dropped_per_finding():
    y, p = small_case(3)
    masked = y.copy()
    masked[:7] = np.nan
    for name in ("auc", "ap", "ece", "sens@spec"):
        metric = get_metric(name)
        assert metric.point(masked, p) == pytest.approx(metric.point(y[7:], p[7:]), abs=1e-7), name
        w = np.ones((2, len(y)))
        assert metric.weighted(masked, p, w) == pytest.approx([metric.point(y[7:], p[7:])] * 2, abs=1e-6), name
    assert len(labelled(masked, p)[0]) == len(y) - 7


def test_resolve_metrics_keeps_auc_first_once():
    assert [m.name for m in resolve_metrics(["ece", "auc", "sens@spec0.95", "ece"])] == ["auc", "ece", "sens@spec0.95"]
    assert get_metric("sens@spec0.95").key == "sens_at_spec0.95"


def patient_case(seed: int = 0, patients: int = 40, findings: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(patients), 2)
    labels = (rng.random((len(pid), findings)) < 0.4).astype(np.int64)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    return labels, probs, pid


def test_generic_bootstrap_uses_the_same_resamples_as_auc():
    labels, probs, pid = patient_case()
    names = ["A", "B"]
    fast = auc_table(labels, probs, pid, names, n_boot=200, seed=4)

    def generic(y, p, counts, inverse):  # the weighted path, one finding at a time, on the tables' resamples
        return np.stack([weighted_auc(p[:, j], y[:, j], counts[:, inverse]) for j in range(y.shape[1])], axis=1)

    slow = score_table(labels, probs, pid, names, per_finding_auc, generic, "auc", n_boot=200, seed=4)
    pd.testing.assert_frame_equal(fast, slow)
    for name in ("ap", "ece", "sens@spec"):
        table = metric_table(get_metric(name), labels, probs, pid, names, n_boot=200, seed=4)
        scored = table[table["scored"]]
        assert len(scored) == 3 and (scored["ci_low"] <= scored.iloc[:, 1]).all()
        assert (scored.iloc[:, 1] <= scored["ci_high"]).all() and (scored["ci_high"] > scored["ci_low"]).all()


def test_identical_predictions_give_zero_difference():
    labels, probs, pid = patient_case(1)
    preds = {"base": [probs], "copy": [probs.copy()]}
    for name in ("ap", "ece"):
        summary = summary_table(score_regimes(labels, pid, preds, n_boot=200, metric=name), ["A", "B"],
                                baseline="base", value_name=get_metric(name).key)
        copy = summary[(summary["regime"] == "copy") & summary["scored"]]
        assert len(copy) == 3 and (copy["diff_vs_base"] == 0).all()
        assert ((copy["diff_ci_low"] <= 0) & (copy["diff_ci_high"] >= 0)).all() and not copy["ci_excludes_0"].any()


def fake_study(out: Path, regimes: dict[str, np.ndarray], labels: np.ndarray, pid: np.ndarray, names: list[str]) -> dict:
    items = [{"image": f"img{i}.png", "patient": str(p), "label": [int(v) for v in row]}
             for i, (p, row) in enumerate(zip(pid, labels))]
    for regime, probs in regimes.items():
        frame = pd.DataFrame({"image": [it["image"] for it in items], "patient": [it["patient"] for it in items]})
        for j, name in enumerate(names):
            frame[name] = probs[:, j]
            frame[f"true_{name}"] = labels[:, j]
        (out / regime / "seed-0" / "eval").mkdir(parents=True)
        frame.to_csv(out / regime / "seed-0" / "eval" / "test_predictions.csv", index=False)
    return {"labels": names, "training": [], "validation": [], "test": items}


def test_report_has_paired_ap_difference_and_reliability_diagrams(tmp_path):
    labels, probs, pid = patient_case(2, patients=60)
    names = ["A", "B"]
    better = np.clip(probs + 0.3 * (labels - 0.5), 0, 1)
    datalist = fake_study(tmp_path, {"none": probs, "sharp": better}, labels, pid, names)
    write_report(tmp_path, ["none", "sharp"], [0], datalist, 200, {"data": "fake", "preset": "demo"}, ["ap", "ece"])
    report = (tmp_path / "report.md").read_text()
    ap = pd.read_csv(tmp_path / "summary_ap.csv")
    row = ap[(ap["regime"] == "sharp") & (ap["finding"] == "macro")].iloc[0]
    expected = (per_finding(get_metric("ap"), labels, better) - per_finding(get_metric("ap"), labels, probs)).mean()
    assert row["diff_vs_none"] == pytest.approx(expected, abs=1e-6)
    assert "Paired ap difference against `none`" in report and f"{row['diff_vs_none']:+.3f} [" in report
    assert "### `ece`" in report and "lower is better" in report and "within that metric's own family" in report
    for regime in ("none", "sharp"):
        assert f"(reliability_{regime}.png)" in report
        assert (tmp_path / f"reliability_{regime}.png").stat().st_size > 1000
    assert set(pd.read_csv(tmp_path / "summary_ece.csv")["regime"]) == {"none", "sharp"}


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("metrics")
    datalist = cut_datalist(phantom_dir, folder, training=32, validation=48)
    run = folder / "run"
    assert main(["train", "--datalist", str(datalist), "--regime", "none", "--out", str(run),
                 "--metrics", "ap", "ece", *TINY]) == 0
    return run


def test_train_logs_chosen_metrics(tiny_run):
    names = json.loads((tiny_run / "datalist.json").read_text())["labels"]
    acc = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/auc_macro", "val/ap_macro", "val/ece_macro"} <= tags
    assert all({f"val/auc/{n}", f"val/ap/{n}", f"val/ece/{n}"} <= tags for n in names)
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    assert list(metrics.columns[4:4 + len(names)]) == names  # AUC columns as before, extra ones after
    for key in ("ap", "ece"):
        columns = [f"{key}_{n}" for n in names]
        assert metrics[columns].notna().any(axis=None) and f"{key}_macro" in metrics
        assert metrics[f"{key}_macro"].iloc[0] == pytest.approx(metrics[columns].iloc[0].mean(skipna=True), abs=1e-6)
        logged = acc.Scalars(f"val/{key}_macro")[0].value
        assert logged == pytest.approx(metrics[f"{key}_macro"].iloc[0], abs=1e-5)
    assert "metrics:\n- ap\n- ece" in (tiny_run / "config.yaml").read_text()


def test_evaluate_writes_a_table_per_metric(tiny_run, capsys):
    assert main(["evaluate", "--run", str(tiny_run), "--split", "validation", "--bootstrap", "200",
                 "--metrics", "ap", "sens@spec0.8"]) == 0
    assert "validation_ap.csv" in capsys.readouterr().out
    predictions = pd.read_csv(tiny_run / "eval" / "validation_predictions.csv")
    names = json.loads((tiny_run / "datalist.json").read_text())["labels"]
    labels, probs = predictions[[f"true_{n}" for n in names]].to_numpy(), predictions[names].to_numpy()
    for name, key in (("ap", "ap"), ("sens@spec0.8", "sens_at_spec0.8")):
        table = pd.read_csv(tiny_run / "eval" / f"validation_{key}.csv")
        assert table["finding"].tolist() == [*names, "macro"]
        assert table[key].iloc[:-1].to_numpy() == pytest.approx(per_finding(get_metric(name), labels, probs),
                                                                nan_ok=True, abs=1e-8)
        scored = table[table["scored"]]
        assert ((scored["ci_low"] <= scored[key]) & (scored[key] <= scored["ci_high"])).all()
    assert not (tiny_run / "eval" / "validation_ece.csv").exists()  # --metrics replaces the run's own list
    assert main(["evaluate", "--run", str(tiny_run), "--split", "validation", "--bootstrap", "200",
                 "--metrics", "ap"]) == 0  # a re-evaluation leaves no table of the earlier one behind
    assert not (tiny_run / "eval" / "validation_sens_at_spec0.8.csv").exists()
    assert (tiny_run / "eval" / "validation_ap.csv").is_file() and (tiny_run / "eval" / "validation_meta.json").is_file()


def test_reevaluation_says_which_earlier_metric_tables_it_removed(tiny_run, capsys):
    """An evaluation without --metrics (the run's own: ap, ece) after one with sens@spec0.8: that table goes, said."""
    common = ["evaluate", "--run", str(tiny_run), "--split", "validation", "--bootstrap", "200"]
    assert main([*common, "--metrics", "ap", "sens@spec0.8"]) == 0
    capsys.readouterr()
    assert main(common) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "removed" in line]
    assert said == ["warning: removed validation_sens_at_spec0.8.csv of the earlier evaluation (stale for the new "
                    "predictions); pass --metrics auc ap ece sens@spec0.8 to write them again"]
    assert {"validation_ap.csv", "validation_ece.csv"} <= {p.name for p in (tiny_run / "eval").iterdir()}
    assert main(common) == 0 and "removed" not in capsys.readouterr().err  # nothing dropped: nothing said


@pytest.mark.parametrize("argv, nearest", [
    (["train", "--datalist", "x.json", "--out", "o", "--metrics", "eec"], "'ece'"),
    (["evaluate", "--run", "r", "--metrics", "ap", "aps"], "'ap'"),
    (["compare", "--out", "o", "--metrics", "sens@spec2"], "'sens@spec'"),
])
def test_unknown_metric_exits_2_naming_the_nearest(argv, nearest, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown metric" in err and nearest in err and len(err.strip().splitlines()) == 1


def test_preset_metric_is_checked_before_work(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  metrics: [ap, auprc]\n")
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "o"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'auprc'" in err and not (tmp_path / "o" / "datalist.json").exists()


def _logloss(y, p):
    """A custom metric whose values exceed 1 (mean negative log-likelihood)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_custom_metric_intervals_are_not_clipped_to_the_auc_range():
    from mai_aug.stats.scores import custom_metric, metric_table

    metric = custom_metric({"_target_": "test_metrics_config._logloss", "name": "logloss_test",
                            "higher_is_better": False}, "settings.yaml: metrics", trust=True)
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 2)) < 0.3).astype(float)
    scores = np.clip(0.5 + 0.45 * rng.standard_normal((120, 2)), 0.01, 0.99)  # badly calibrated: log-loss above 1
    table = metric_table(metric, labels, scores, np.arange(120) // 2, ["a", "b"], n_boot=200)
    assert (table["logloss_test"] > 1).any()
    assert ((table["ci_low"] <= table["logloss_test"]) & (table["logloss_test"] <= table["ci_high"])).all()
