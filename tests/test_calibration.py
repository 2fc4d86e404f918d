"""Calibration: the per-finding fit (stats), ``mai-aug calibrate`` on a tiny run, and predict/evaluate applying it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from conftest import cut_datalist
from mai_aug.analyses.evaluate.predict import predict_files
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.stats.calibration import apply, ece_by_finding, fit, logit

TRAIN = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
         "--cache", "none", "--regime", "none", "--quiet"]


def miscalibrated(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and outputs sigmoid(3 z + 1.5): overconfident and shifted, as a weighted loss."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) * 1.5
    y = (rng.random((n, 3)) < expit(z)).astype(float)
    return y, expit(3 * z + 1.5)


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_fit_lowers_ece_of_miscalibrated_outputs(method):
    y, p = miscalibrated()
    maps = fit(p, y, method)
    calibrated = apply(p, maps)
    before, after = ece_by_finding(y, p, "abc"), ece_by_finding(y, calibrated, "abc")
    assert before["macro"] > 0.1 and after["macro"] < before["macro"] / 2
    assert all(m.fitted and m.slope > 0 for m in maps)
    if method == "temperature":
        assert all(m.intercept == 0 for m in maps)
    else:  # the true map from the outputs' logit back to z: slope 1/3, intercept -0.5
        assert all(abs(m.slope - 1 / 3) < 0.03 and abs(m.intercept + 0.5) < 0.1 for m in maps)
    # the formula, and the ranking kept (AUC unchanged)
    slopes, intercepts = np.array([m.slope for m in maps]), np.array([m.intercept for m in maps])
    np.testing.assert_allclose(calibrated, expit(slopes * logit(p) + intercepts), rtol=1e-12)
    assert all((np.argsort(calibrated[:, j], kind="stable") == np.argsort(p[:, j], kind="stable")).all()
               for j in range(3))


def test_fit_on_separated_or_one_class_data():
    """Separated scores give a finite map (Platt's smoothed targets); a finding without both classes stays identity,
    and unlabelled (NaN) samples are left out."""
    p = np.array([[0.1, 0.2], [0.2, 0.3], [0.8, 0.4], [0.9, 0.5], [0.5, 0.6]])
    y = np.array([[0, 0], [0, 0], [1, 0], [1, np.nan], [np.nan, 0]])
    separated, one_class = fit(p, y, "platt")
    assert separated.fitted and np.isfinite([separated.slope, separated.intercept]).all()
    assert (one_class.slope, one_class.intercept, one_class.fitted) == (1.0, 0.0, False) and one_class.reason
    np.testing.assert_allclose(apply(p, [one_class, one_class])[:, 1], p[:, 1], rtol=1e-12)
    with pytest.raises(MaiAugError, match="`method` 'nope'"):
        fit(p, y, "nope")


@pytest.fixture(scope="module")
def run(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration-run")
    datalist = cut_datalist(phantom_dir, folder, training=16, validation=40, test=12)
    assert main(["train", "--datalist", str(datalist), "--out", str(folder / "run"), *TRAIN]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def calibrated(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the run with its Platt calibration."""
    copy = Path(shutil.copytree(run, tmp_path_factory.mktemp("calibrated") / "run"))
    assert main(["calibrate", "--run", str(copy)]) == 0
    return copy


def _predict(run: Path, images: list[Path], out: Path, capsys) -> tuple[pd.DataFrame, str]:
    capsys.readouterr()
    assert main(["predict", "--run", str(run), *map(str, images), "--out", str(out)]) == 0
    return pd.read_csv(out).set_index("image"), capsys.readouterr().out


def test_calibrate_then_predict_and_evaluate(run, tmp_path, capsys):
    run = Path(shutil.copytree(run, tmp_path / "run"))
    images = [Path(it["image"]) for it in json.loads((run / "datalist.json").read_text())["test"][:6]]
    raw, said = _predict(run, images, tmp_path / "raw.csv", capsys)
    exact_raw = predict_files(run, images).set_index("image").to_numpy()  # unrounded, unlike the CSV's 6 digits
    assert "uncalibrated: these are the network's sigmoid outputs, not calibrated probabilities" in said
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0
    assert "uncalibrated" in capsys.readouterr().out and not (run / "eval" / "test_calibration.csv").exists()

    assert main(["calibrate", "--run", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    record = json.loads((run / "calibration.json").read_text())
    assert record["method"] == "platt" and record["checkpoint"]["checkpoint"] == "best.pt"
    assert record["images"] == 40 and set(record["ece_validation"]) == {"uncalibrated", "calibrated"}
    maps = [record["maps"][name] for name in raw.columns]
    assert any(m["fitted"] for m in maps)
    ece = record["ece_validation"]
    assert ece["calibrated"]["macro"] < ece["uncalibrated"]["macro"]  # in-sample: the fit lowers it

    calibrated, said = _predict(run, images, tmp_path / "cal.csv", capsys)
    assert said.splitlines()[-2].startswith("calibrated: Platt scaling per finding, fitted on the validation split")
    slope = np.array([m["slope"] for m in maps])
    intercept = np.array([m["intercept"] for m in maps])
    exact = predict_files(run, images).set_index("image").to_numpy()
    np.testing.assert_allclose(exact, expit(slope * logit(exact_raw) + intercept), rtol=1e-9)
    np.testing.assert_allclose(calibrated.to_numpy(), exact, atol=5e-7)  # the CSV: the same, to its 6 digits
    assert np.abs(calibrated.to_numpy() - raw.to_numpy()).max() > 1e-3

    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0
    assert "ECE macro on test:" in capsys.readouterr().out
    table = pd.read_csv(run / "eval" / "test_calibration.csv")
    assert table["finding"].tolist() == [*raw.columns, "macro"]
    assert list(table.columns) == ["finding", "ece_uncalibrated", "ece_calibrated"]


def test_temperature_and_a_calibration_of_another_checkpoint(run, tmp_path, capsys):
    run = Path(shutil.copytree(run, tmp_path / "run"))
    images = [Path(it["image"]) for it in json.loads((run / "datalist.json").read_text())["test"][:3]]
    raw, _ = _predict(run, images, tmp_path / "raw.csv", capsys)
    assert main(["calibrate", "--run", str(run), "--method", "temperature"]) == 0
    record = json.loads((run / "calibration.json").read_text())
    assert record["method"] == "temperature" and all(m["intercept"] == 0 for m in record["maps"].values())
    record["checkpoint"]["sha256"] = "0" * 64  # fitted for another best.pt
    (run / "calibration.json").write_text(json.dumps(record))
    stale, said = _predict(run, images, tmp_path / "stale.csv", capsys)
    line = said.splitlines()[-2]
    assert line.startswith("uncalibrated:") and "was fitted for best.pt sha256 000000000000" in line and "ignored" in line
    pd.testing.assert_frame_equal(stale, raw)


def test_calibrate_reuses_current_validation_predictions(run, tmp_path, monkeypatch):
    """After ``evaluate --split validation`` of the same checkpoint, calibrate fits on its predictions file."""
    from mai_aug.analyses.trained_run import TrainedRun

    run = Path(shutil.copytree(run, tmp_path / "run"))
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--bootstrap", "200"]) == 0
    monkeypatch.setattr(TrainedRun, "predict", lambda *a, **k: pytest.fail("predicted again"))
    assert main(["calibrate", "--run", str(run)]) == 0
    frame = pd.read_csv(run / "eval" / "validation_predictions.csv")
    names = json.loads((run / "calibration.json").read_text())["findings"]
    y, p = frame[[f"true_{n}" for n in names]].to_numpy(float), frame[names].to_numpy(float)
    expected = ece_by_finding(y, p, names)["macro"]
    assert json.loads((run / "calibration.json").read_text())["ece_validation"]["uncalibrated"]["macro"] == (
        pytest.approx(expected, rel=1e-6))


@pytest.mark.parametrize("edit, message", [
    (lambda r: "{not json", "not readable as JSON"),
    (lambda r: {**r, "method": "isotonic"}, "not a calibration"),
    (lambda r: {**r, "findings": r["findings"][:2]}, "its findings are not the run's"),
    (lambda r: {**r, "maps": {k: {**v, "slope": "1; import os"} for k, v in r["maps"].items()}}, "finite slope"),
])
def test_broken_calibration_is_one_line(calibrated, tmp_path, capsys, edit, message):
    run = Path(shutil.copytree(calibrated, tmp_path / "run"))
    edited = edit(json.loads((run / "calibration.json").read_text()))
    (run / "calibration.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    image = json.loads((run / "datalist.json").read_text())["test"][0]["image"]
    capsys.readouterr()
    assert main(["predict", "--run", str(run), image, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and "calibration.json" in err and err.count("\n") == 1, err


def test_calibrate_refuses_bad_input_in_one_line(run, tmp_path, capsys):
    assert main(["calibrate", "--run", str(run), "--method", "isotonic"]) == 2
    assert "invalid choice: 'isotonic'" in capsys.readouterr().err
    empty = Path(shutil.copytree(run, tmp_path / "run"))
    datalist = json.loads((empty / "datalist.json").read_text())
    (empty / "datalist.json").write_text(json.dumps({**datalist, "validation": []}))
    capsys.readouterr()
    assert main(["calibrate", "--run", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "validation split is empty" in err and err.count("\n") == 1
    assert not (empty / "calibration.json").exists()
