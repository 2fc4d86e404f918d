"""Learning curves: nested patient subsets of the training split, and `compare --train-fraction` end to end."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import last_checkpoint
from mai_aug.data.split import load_datalist
from mai_aug.data.subsets import (
    check_fractions,
    check_same_evaluation,
    findings_without_positives,
    nested_subset,
    patient_order,
    subset_size,
)
from mai_aug.engine.checkpoint import load_checkpoint

REGIMES = ["basic", "basic-copy"]  # basic-copy is basic under another name: identical runs
#: A small DenseNet (MONAI's class, a fraction of DenseNet121's cost): the curves are about subsets, not the network.
TINY_NET = {"init_features": 8, "growth_rate": 4, "block_config": [2, 2]}


@pytest.fixture(scope="module")
def full_datalist(phantom_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("split") / "datalist.json"
    assert main(["split", "--data", str(phantom_dir), "--out", str(out)]) == 0
    return load_datalist(out)


def _patients(items: list[dict]) -> set:
    return {it["patient"] for it in items}


def test_subsets_are_nested_patient_wise_and_share_validation_and_test(full_datalist):
    n = len(_patients(full_datalist["training"]))
    held_out = _patients(full_datalist["validation"]) | _patients(full_datalist["test"])
    previous: set = set()
    for fraction in (0.05, 0.1, 0.3, 0.5, 1.0):
        subset = nested_subset(full_datalist, fraction, seed=0)
        kept = _patients(subset["training"])
        assert len(kept) == math.ceil(round(fraction * n, 9))
        assert previous <= kept and not kept & held_out
        # whole patients: every training image of a kept patient is kept
        assert len(subset["training"]) == sum(it["patient"] in kept for it in full_datalist["training"])
        for key in ("labels", "validation", "test"):
            assert subset[key] == full_datalist[key]
        assert subset == nested_subset(full_datalist, fraction, seed=0)  # the same subset every time
        previous = kept
    assert _patients(nested_subset(full_datalist, 0.3, seed=1)["training"]) != _patients(
        nested_subset(full_datalist, 0.3, seed=0)["training"])  # the split seed orders the patients


def test_small_subsets_keep_a_positive_of_every_finding(full_datalist):
    order = patient_order(full_datalist["training"], seed=0)
    labels = np.nan_to_num(np.asarray([it["label"] for it in full_datalist["training"]], float))
    present = labels.sum(0) > 0
    moved = int(present.sum())  # at most one patient is moved to the front per finding
    smallest = moved / len(order)
    subset = nested_subset(full_datalist, smallest, seed=0)
    assert findings_without_positives(subset, full_datalist) == []
    tiny = nested_subset(full_datalist, 1 / len(order), seed=0)  # one patient cannot have every finding
    missing = findings_without_positives(tiny, full_datalist)
    assert missing and set(missing) <= {n for n, p in zip(full_datalist["labels"], present) if p}


def test_evaluation_splits_must_match(full_datalist):
    subset = nested_subset(full_datalist, 0.5, seed=0)
    with pytest.raises(MaiAugError, match="test differs"):
        check_same_evaluation(full_datalist, {**subset, "test": subset["test"][1:]}, "0.5")
    stranger = {**full_datalist["training"][0], "patient": "not-a-training-patient"}
    with pytest.raises(MaiAugError, match="not-a-training-patient"):
        check_same_evaluation(full_datalist, {**subset, "training": [stranger]}, "0.5")


def test_fractions_are_checked_sorted_and_end_at_one():
    assert check_fractions(["0.3", 0.1]) == [0.1, 0.3, 1.0]
    assert check_fractions([1.0, 0.5]) == [0.5, 1.0]
    assert subset_size(0.3, 10) == 3 and subset_size(0.01, 10) == 1
    for bad, said in (("0", "(0, 1]"), ("1.5", "(0, 1]"), ("a", "not a number"), ("nan", "(0, 1]")):
        with pytest.raises(MaiAugError, match=said.replace("(", r"\(").replace("]", r"\]")):
            check_fractions([bad])
    for twice in ([0.5, "0.5"], [0.1, 0.1 + 1e-15]):  # one folder name: refused, not merged
        with pytest.raises(MaiAugError, match="given twice"):
            check_fractions(twice)


@pytest.mark.parametrize("bad", ["0", "1.5", "a"])
def test_bad_fraction_exits_2_with_one_line(bad, tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path / "out"), "--train-fraction", "0.5", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--train-fraction" in err and bad in err
    assert not (tmp_path / "out").exists()


def _argv(phantom_dir: Path, tmp: Path, out: Path, *fractions: str) -> list[str]:
    """A tiny comparison of two identical regimes on a tiny DenseNet; the preset leaves steps_per_epoch unset (one pass
    per epoch)."""
    preset = tmp / "preset.yaml"
    preset.write_text(yaml.safe_dump({"data": {"split": "patient", "val_frac": 0.1, "test_frac": 0.2, "seed": 0},
                                      "train": {"image_size": 32, "batch_size": 200, "epochs": 1, "workers": 0,
                                                "cache": "store", "pretrained": "none", "in_channels": 1,
                                                "network": "densenet", "network_args": TINY_NET}}))
    regimes = tmp / "copy.yaml"
    regimes.write_text('regimes:\n  basic-copy: "%regimes#basic"\n')
    return ["compare", "--data", str(phantom_dir), "--preset", str(preset), "--regimes", *REGIMES,
            "--regimes-file", str(regimes), "--bootstrap", "200", "--quiet", "--out", str(out),
            "--train-fraction", *fractions]


@pytest.fixture(scope="module")
def curves(phantom_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("curves")
    out = tmp / "out"
    assert main(_argv(phantom_dir, tmp, out, "0.5")) == 0
    return out


def test_compare_writes_the_learning_curve(curves):
    for name in ("learning_curve.csv", "learning_curve.png", "fraction-0.5/datalist.json"):
        assert (curves / name).is_file() and (curves / name).stat().st_size > 100, name
    curve = pd.read_csv(curves / "learning_curve.csv")
    assert curve["fraction"].tolist() == [0.5, 0.5, 1.0, 1.0] and curve["regime"].tolist() == REGIMES * 2
    assert {"n_train_patients", "n_train_images", "auc", "ci_low", "ci_high", "diff_vs_basic", "diff_ci_low",
            "diff_ci_high", "ci_excludes_0"} <= set(curve.columns)
    full, half = (load_datalist(curves / p / "datalist.json") for p in (".", "fraction-0.5"))
    assert half["validation"] == full["validation"] and half["test"] == full["test"]
    n = len(_patients(full["training"]))
    by_fraction = curve.drop_duplicates("fraction").set_index("fraction")
    assert by_fraction.loc[1.0, "n_train_patients"] == n and by_fraction.loc[1.0, "n_train_images"] == len(full["training"])
    assert by_fraction.loc[0.5, "n_train_patients"] == math.ceil(n / 2) == len(_patients(half["training"]))
    # fraction 1 is the study's own runs, scored as summary.csv scores them
    summary = pd.read_csv(curves / "summary.csv")
    macro = summary[summary["finding"] == "macro"].set_index("regime")
    ones = curve[curve["fraction"] == 1.0].set_index("regime")
    assert np.allclose(ones["auc"], macro.loc[ones.index, "auc"], atol=1e-6)
    assert np.allclose(ones["ci_low"], macro.loc[ones.index, "ci_low"], atol=1e-6)
    report = (curves / "report.md").read_text()
    assert "## Learning curves" in report and "learning_curve.png" in report
    assert f"### Fraction 0.5: {math.ceil(n / 2)} patients" in report and "### Fraction 1:" in report
    assert "within that size" in report and "same number of updates" in report
    shows = report.split("## What this study shows")[1].split("\n## ")[0]  # the smallest size in the findings
    half_row = curve[(curve["fraction"] == 0.5) & (curve["regime"] != "basic")].iloc[0]
    assert (f"trained on 0.5 of the training patients ({half_row['n_train_patients']}) (macro AUC): "
            f"{half_row['diff_vs_basic']:+.3f}") in shows
    config = yaml.safe_load((curves / "compare_config.yaml").read_text())
    assert set(config["train_fractions"]) == {"0.5", "1"}


def test_every_size_makes_the_full_runs_number_of_updates(curves):
    full = yaml.safe_load((curves / "basic" / "seed-0" / "config.yaml").read_text())
    half = yaml.safe_load((curves / "fraction-0.5" / "basic" / "seed-0" / "config.yaml").read_text())
    steps = full["resolved"]["split_sizes"]["training"] // 200
    assert full["steps_per_epoch"] is None and half["steps_per_epoch"] == steps >= 1
    iterations = [load_checkpoint(last_checkpoint(curves / p / "basic" / "seed-0" / "checkpoints"))["trainer"]["iteration"]
                  for p in (".", "fraction-0.5")]
    assert iterations[0] == iterations[1] == steps


def test_identical_regimes_give_identical_curves(curves):
    curve = pd.read_csv(curves / "learning_curve.csv")
    for _, rows in curve.groupby("fraction"):
        a, b = (rows[rows["regime"] == r].iloc[0] for r in REGIMES)
        assert a["auc"] == b["auc"] and a["ci_low"] == b["ci_low"] and a["ci_high"] == b["ci_high"]
        assert b["diff_vs_basic"] == 0 and b["diff_ci_low"] <= 0 <= b["diff_ci_high"] and not b["ci_excludes_0"]


def test_rerun_reuses_runs_and_a_changed_subset_is_refused(curves, phantom_dir, tmp_path, capsys):
    argv = _argv(phantom_dir, tmp_path, curves, "0.5")
    capsys.readouterr()
    start = time.monotonic()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "fraction-0.5/basic/seed-0: skipped" in err and err.count(": skipped") == 4 and time.monotonic() - start < 120
    # runs of another subset in a fraction's folder are never reused: the datalist hash differs
    shutil.copytree(curves / "fraction-0.5", curves / "fraction-0.6")
    assert main(_argv(phantom_dir, tmp_path, curves, "0.6")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fraction-0.6" in err and "datalist content differs" in err
    shutil.rmtree(curves / "fraction-0.6")
    # a subset smaller than one batch is refused before anything trains
    assert main(_argv(phantom_dir, tmp_path, curves, "0.001")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--train-fraction 0.001" in err and "batch size 200" in err
    assert not (curves / "fraction-0.001").exists()
