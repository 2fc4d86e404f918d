"""Run identity: compare reuses a run only when its fingerprint matches; train splits with its own seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mai_aug.cli import main
from mai_aug.data.prepare import datalist_from_options
from mai_aug.engine.config import TrainConfig
from mai_aug.engine.fingerprint import canonical_sha256, components, differences, run_status, write_fingerprint

TINY = ["--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0", "--bootstrap", "200", "--quiet"]


def compare(data: Path, out: Path, *extra: str, regimes: tuple[str, ...] = ("none",), size: str = "32",
            lr: str = "1e-3") -> int:
    return main(["compare", "--data", str(data), "--regimes", *regimes, "--image-size", size, "--lr", lr, *TINY,
                 *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def comparison(phantom_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("identity") / "out"
    assert compare(phantom_dir, out) == 0
    return out


def test_same_arguments_skip_the_finished_run(comparison, phantom_dir, capsys):
    before = (comparison / "none" / "seed-0" / "fingerprint.json").read_text()
    assert compare(phantom_dir, comparison) == 0
    assert "none seed 0: skipped" in capsys.readouterr().err
    assert (comparison / "none" / "seed-0" / "fingerprint.json").read_text() == before


def test_changed_settings_are_refused_with_what_differs(comparison, phantom_dir, capsys):
    report = (comparison / "report.md").read_text()
    assert compare(phantom_dir, comparison, size="48", lr="1e-5") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "none/seed-0" in err and "image_size: 32 -> 48" in err and "lr: 0.001 -> 1e-05" in err
    assert "--retrain" in err and "new --out" in err
    assert (comparison / "report.md").read_text() == report  # nothing was touched
    assert yaml.safe_load((comparison / "none" / "seed-0" / "config.yaml").read_text())["image_size"] == 32


def test_other_data_is_refused_and_the_datalist_kept(comparison, phantom_dir, tmp_path, capsys):
    other = shutil.copytree(phantom_dir, tmp_path / "other")  # same images at another path: another datalist
    datalist = (comparison / "datalist.json").read_bytes()
    assert compare(other, comparison) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "datalist.json holds another split" in err and "datalist content differs" in err and "--retrain" in err
    assert (comparison / "datalist.json").read_bytes() == datalist


def test_adding_a_regime_trains_only_that_one(comparison, phantom_dir, capsys):
    assert compare(phantom_dir, comparison, regimes=("none", "basic")) == 0
    err = capsys.readouterr().err
    assert "none seed 0: skipped" in err and "basic seed 0: trained" in err
    summary = (comparison / "summary.md").read_text()
    assert "| none |" in summary and "| basic |" in summary


def test_retrain_replaces_mismatching_runs_and_reports_their_settings(comparison, phantom_dir, tmp_path, capsys):
    out = shutil.copytree(comparison, tmp_path / "out")
    other = shutil.copytree(phantom_dir, tmp_path / "other")
    assert compare(other, out, "--retrain", lr="1e-5") == 0
    err = capsys.readouterr().err
    assert "none seed 0: trained" in err and "moved" in err
    run = yaml.safe_load((out / "none" / "seed-0" / "config.yaml").read_text())
    assert run["lr"] == pytest.approx(1e-5)
    config = yaml.safe_load((out / "compare_config.yaml").read_text())
    assert config["train"]["lr"] == pytest.approx(1e-5) and config["data"] == str(other)
    assert config["train"] == {k: run[k] for k in config["train"]}  # read from the run folder
    assert "lr: 1.0e-05" in (out / "report.md").read_text()
    old = list((out / "replaced").glob("*/none/seed-0/config.yaml"))
    assert len(old) == 1 and yaml.safe_load(old[0].read_text())["lr"] == pytest.approx(1e-3)
    assert (old[0].parents[2] / "datalist.json").read_bytes() == (comparison / "datalist.json").read_bytes()
    new_list = json.loads((out / "datalist.json").read_text())
    assert new_list["test"][0]["image"].startswith(str(other))
    for kept in out.glob("*/seed-*/fingerprint.json"):  # every run left beside the new datalist was made from it
        assert json.loads(kept.read_text())["components"]["datalist_sha256"] == canonical_sha256(new_list)


def _parts(tmp_path: Path, **settings) -> dict:
    config = TrainConfig(out=str(tmp_path), regime="none", image_size=32, **{"epochs": 2, **settings})
    return components(config, {"description": "x"}, {"labels": [], "training": [], "validation": [], "test": []})


def test_an_interrupted_run_may_grow_epochs_a_finished_one_may_not(tmp_path):
    write_fingerprint(_parts(tmp_path), tmp_path)
    assert run_status(tmp_path, _parts(tmp_path)) == ("interrupted", [])
    assert run_status(tmp_path, _parts(tmp_path, epochs=5)) == ("interrupted", [])
    assert run_status(tmp_path, _parts(tmp_path, epochs=1)) == ("mismatch", ["epochs: 2 -> 1"])
    (tmp_path / "DONE").write_text("{}")
    assert run_status(tmp_path, _parts(tmp_path)) == ("finished", [])
    assert run_status(tmp_path, _parts(tmp_path, epochs=5)) == ("mismatch", ["epochs: 2 -> 5"])
    assert run_status(tmp_path, _parts(tmp_path, workers=7, device="cuda", cache="disk")) == ("finished", [])
    assert differences(_parts(tmp_path), _parts(tmp_path, seed=3)) == ["seed: 0 -> 3"]


def test_a_run_without_fingerprint_is_not_reused(tmp_path):
    assert run_status(tmp_path, _parts(tmp_path)) == ("new", [])
    (tmp_path / "config.yaml").write_text("regime: none\n")
    status, diffs = run_status(tmp_path, _parts(tmp_path))
    assert status == "mismatch" and "no fingerprint.json" in diffs[0]


def test_train_splits_with_its_own_seed(phantom_dir, tmp_path):
    splits = {}
    for seed in (0, 1):
        assert main(["split", "--data", str(phantom_dir), "--seed", str(seed), "--out", str(tmp_path / f"{seed}.json")]) == 0
        splits[seed] = [item["name"] for item in json.loads((tmp_path / f"{seed}.json").read_text())["test"]]
    assert splits[0] != splits[1]
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom_dir), "--regime", "none", "--image-size", "32", "--batch-size", "4",
                 "--epochs", "1", "--steps-per-epoch", "1", "--workers", "0", "--cache", "none", "--seed", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert [item["name"] for item in json.loads((out / "datalist.json").read_text())["test"]] == splits[0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["seed"] == 1 and config["split_seed"] == 0
    other = datalist_from_options(TrainConfig(out=str(out), data=str(phantom_dir), split_seed=1), report=None)
    assert [item["name"] for item in other["test"]] == splits[1]
