"""Run identity: compare reuses a run only when its fingerprint matches; train splits with its own seed."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import mai_aug
from mai_aug.cli import main
from mai_aug.data.prepare import SplitRequest, datalist_for
from mai_aug.settings import fingerprint
from mai_aug.settings.config import TrainConfig
from mai_aug.settings.fingerprint import canonical_sha256, components, differences, run_status, write_fingerprint

TINY = ["--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0", "--bootstrap", "200", "--quiet"]


#: The demo preset's training on a small DenseNet (MONAI's class, a fraction of DenseNet121's cost): run identity is
#: about settings, data and code, not the network. Written once per module by ``tiny_preset``.
TINY_PRESET = """data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}
train: {pretrained: none, in_channels: 1, cache: store, network: densenet,
        network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}
"""
PRESET: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def tiny_preset(tmp_path_factory) -> Path:
    PRESET[:] = [tmp_path_factory.mktemp("preset") / "tiny.yaml"]
    PRESET[0].write_text(TINY_PRESET)
    return PRESET[0]


def compare(data: Path, out: Path, *extra: str, regimes: tuple[str, ...] = ("none",), size: str = "32",
            lr: str = "1e-3") -> int:
    return main(["compare", "--data", str(data), "--preset", str(PRESET[0]), "--regimes", *regimes, "--image-size", size,
                 "--lr", lr, *TINY, *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def comparison(phantom_dir, tmp_path_factory, tiny_preset) -> Path:
    out = tmp_path_factory.mktemp("identity") / "out"
    assert compare(phantom_dir, out) == 0
    return out


def test_same_arguments_skip_the_finished_run(comparison, phantom_dir, capsys):
    before = (comparison / "none" / "seed-0" / "fingerprint.json").read_text()
    assert compare(phantom_dir, comparison) == 0
    assert "none/seed-0: skipped" in capsys.readouterr().err
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
    assert "none/seed-0: skipped" in err and "basic/seed-0: trained" in err
    summary = (comparison / "summary.md").read_text()
    assert "| none |" in summary and "| basic |" in summary


def test_retrain_replaces_mismatching_runs_and_reports_their_settings(comparison, phantom_dir, tmp_path, capsys):
    out = shutil.copytree(comparison, tmp_path / "out")
    other = shutil.copytree(phantom_dir, tmp_path / "other")
    assert compare(other, out, "--retrain", lr="1e-5") == 0
    err = capsys.readouterr().err
    assert "none/seed-0: trained" in err and "moved" in err
    run = yaml.safe_load((out / "none" / "seed-0" / "config.yaml").read_text())
    assert run["lr"] == pytest.approx(1e-5)
    config = yaml.safe_load((out / "compare_config.yaml").read_text())
    assert config["train"]["lr"] == pytest.approx(1e-5) and config["data"] == f"synthetic phantom ({other})"
    assert config["train"] == {k: run[k] for k in config["train"]}  # read from the run folder
    assert "| learning rate | 1e-05 |" in (out / "report.md").read_text()
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
    assert run_status(tmp_path, _parts(tmp_path, workers=7, device="cuda", cache="none")) == ("finished", [])
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
    other = datalist_for(SplitRequest.from_settings(vars(TrainConfig(out=str(out), data=str(phantom_dir), split_seed=1))),
                         report=None)
    assert [item["name"] for item in other["test"]] == splits[1]


def test_compare_reevaluates_predictions_made_from_another_checkpoint(comparison, phantom_dir, tmp_path, capsys):
    out = shutil.copytree(comparison, tmp_path / "out")
    run = out / "none" / "seed-0"
    assert json.loads((run / "eval" / "test_meta.json").read_text())["checkpoint"] == "best.pt"
    assert main(["evaluate", "--run", str(run), "--checkpoint", "last", "--bootstrap", "200"]) == 0
    meta = json.loads((run / "eval" / "test_meta.json").read_text())
    assert meta["checkpoint"] == "last_checkpoint_epoch=1.pt" and len(meta["sha256"]) == 64
    capsys.readouterr()
    assert compare(phantom_dir, out) == 0
    assert "none/seed-0: evaluated" in capsys.readouterr().err
    assert json.loads((run / "eval" / "test_meta.json").read_text())["checkpoint"] == "best.pt"
    assert compare(phantom_dir, out) == 0
    assert "none/seed-0: skipped" in capsys.readouterr().err
    (run / "eval" / "test_meta.json").unlink()  # predictions nothing vouches for (an interrupted evaluate)
    assert compare(phantom_dir, out) == 0
    assert "none/seed-0: evaluated" in capsys.readouterr().err


def test_fingerprint_holds_resolved_settings_and_the_code(comparison):
    run = comparison / "none" / "seed-0"
    stored = json.loads((run / "fingerprint.json").read_text())["components"]
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    assert stored["settings"]["amp"] is False and resolved["amp"] is False  # CPU: the unresolved value was None
    assert stored["settings"]["augment_on"] == resolved["augment_on"] != "auto"
    assert stored["code_sha256"] == fingerprint.code_sha256() and stored["extended_from_epochs"] == []
    cuda = {**stored, "settings": {**stored["settings"], "amp": True}}
    assert differences(stored, cuda) == ["amp: False -> True"]  # a CUDA-AMP run is another run


def test_changed_code_is_a_mismatch_that_retrain_replaces(comparison, phantom_dir, tmp_path, capsys, monkeypatch):
    out = shutil.copytree(comparison, tmp_path / "out")
    monkeypatch.setattr(fingerprint, "code_sha256", lambda: "0" * 64)
    assert compare(phantom_dir, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none/seed-0: mai_aug code changed" in err and "--retrain" in err
    assert compare(phantom_dir, out, "--retrain") == 0
    assert "none/seed-0: trained" in capsys.readouterr().err
    assert compare(phantom_dir, out) == 0
    assert "none/seed-0: skipped" in capsys.readouterr().err


def test_code_hash_covers_source_and_configs_wherever_installed(tmp_path, monkeypatch):
    fingerprint.code_sha256.cache_clear()  # the hash of the files now, not when this process first asked
    real = fingerprint.code_sha256()
    copy = Path(shutil.copytree(Path(mai_aug.__file__).parent, tmp_path / "mai_aug"))
    monkeypatch.setattr(mai_aug, "__file__", str(copy / "__init__.py"))
    try:
        fingerprint.code_sha256.cache_clear()
        assert fingerprint.code_sha256() == real  # the same files elsewhere
        (copy / "__pycache__").mkdir(exist_ok=True)
        (copy / "__pycache__" / "x.pyc").write_bytes(b"compiled")
        (copy / "notes.txt").write_text("not code")
        fingerprint.code_sha256.cache_clear()
        assert fingerprint.code_sha256() == real
        preset = copy / "configs" / "presets" / "demo.yaml"
        preset.write_text(preset.read_text() + "# edited\n")
        fingerprint.code_sha256.cache_clear()
        edited = fingerprint.code_sha256()
        assert edited != real
        (copy / "engine" / "loss.py").write_text((copy / "engine" / "loss.py").read_text() + "\n")
        fingerprint.code_sha256.cache_clear()
        assert fingerprint.code_sha256() not in (real, edited)
    finally:
        monkeypatch.undo()
        fingerprint.code_sha256.cache_clear()
    assert fingerprint.code_sha256() == real


def test_epochs_grow_only_before_the_second_epoch_begins(tmp_path):
    write_fingerprint(_parts(tmp_path), tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last_checkpoint_epoch=1.pt").write_bytes(b"")  # the status reads the names only
    assert run_status(tmp_path, _parts(tmp_path, epochs=5)) == ("interrupted", [])
    (checkpoints / "last_checkpoint_epoch=2_iteration=7.pt").write_bytes(b"")  # inside epoch 2: its rate was used
    grown = "epochs: 2 -> 5 after 2 trained epochs: the schedule would differ from a fresh run"
    assert run_status(tmp_path, _parts(tmp_path, epochs=5)) == ("mismatch", [grown])
    extended = json.loads((tmp_path / "fingerprint.json").read_text())["components"]
    extended["extended_from_epochs"] = [1]
    write_fingerprint(extended, tmp_path)
    status, diffs = run_status(tmp_path, _parts(tmp_path))
    assert status == "mismatch" and diffs == ["resumed with `epochs` changed from [1] after training began: the "
                                              "schedule differs from a fresh run"]


def test_train_resume_refuses_fewer_epochs_and_records_a_stretched_schedule(phantom_dir, tmp_path, capsys):
    out = tmp_path / "run"

    def train(epochs: int, *extra: str) -> int:
        return main(["train", "--data", str(phantom_dir), "--regime", "none", "--image-size", "32", "--batch-size",
                     "4", "--epochs", str(epochs), "--steps-per-epoch", "1", "--workers", "0", "--cache", "none",
                     "--quiet", "--out", str(out), *extra])

    def recorded() -> tuple[list, list]:
        config = yaml.safe_load((out / "config.yaml").read_text())
        stored = json.loads((out / "fingerprint.json").read_text())["components"]
        return config["resolved"]["extended_from_epochs"], stored["extended_from_epochs"]

    assert train(1) == 0
    assert train(2, "--resume") == 0  # after epoch 1: the same schedule as a fresh 2-epoch run
    assert recorded() == ([], [])
    assert train(3, "--resume") == 0  # after epoch 2: epoch 2 ran at the 2-epoch schedule's rate
    assert recorded() == ([2], [2])
    capsys.readouterr()
    assert train(2, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--epochs 2 is fewer than the 3 epochs already trained")
    assert recorded() == ([2], [2])


def test_retrain_does_not_move_a_run_that_is_training(comparison, phantom_dir, tmp_path, capsys):
    out = shutil.copytree(comparison, tmp_path / "out")
    run = out / "none" / "seed-0"
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)  # a train in that folder (another open description)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert compare(phantom_dir, out, "--retrain", lr="1e-5") == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert "another process (pid" in err[-1] and str(run) in err[-1]
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == pytest.approx(1e-3)
    assert not (out / "replaced").exists()


def test_an_unreadable_fingerprint_is_a_mismatch(comparison, phantom_dir, tmp_path, capsys):
    out = shutil.copytree(comparison, tmp_path / "out")
    for body in ('{"components": [1, 2]}', "{not json", '{"sha256": "x", "components": {"settings": 3}}'):
        (out / "none" / "seed-0" / "fingerprint.json").write_text(body)
        assert compare(phantom_dir, out) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "none/seed-0: unreadable fingerprint.json" in err
        assert "Traceback" not in err


def test_config_and_fingerprint_are_written_fsynced_under_hidden_names(tmp_path, monkeypatch):
    from mai_aug.core import files as utils
    from mai_aug.settings.config import read_config, write_config

    synced, renamed = [], []
    real_fsync, real_replace = utils.os.fsync, utils.os.replace
    monkeypatch.setattr(utils.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(utils.os, "replace", lambda a, b: renamed.append(Path(a).name) or real_replace(a, b))
    write_config(TrainConfig(out=str(tmp_path)), {"amp": False}, tmp_path / "config.yaml")
    write_fingerprint(_parts(tmp_path), tmp_path)
    assert len(renamed) == 2 and all(name.startswith(".") and name.endswith(".tmp") for name in renamed)
    assert len(synced) >= 2  # each file before its rename (and the folder after)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "fingerprint.json"]
    assert read_config(tmp_path)["resolved"] == {"amp": False}
