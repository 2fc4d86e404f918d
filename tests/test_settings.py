"""One settings system: ``train --settings FILE.yaml`` under command-line flags, TrainConfig's defaults written once,
strict keys, and no flag whose value could be dropped on the way to TrainConfig (or compare's options)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

import mai_aug.engine.train
import mai_aug.study.compare
from mai_aug.analyses.external.data import ExternalSpec
from mai_aug.cli import _data_options, build_parser, main
from mai_aug.core.errors import MaiAugError
from mai_aug.settings.config import TrainConfig
from mai_aug.settings.layers import FILE_ONLY, build_train_config, read_settings, setting_names
from mai_aug.settings.schema import COMPARE_TRAIN_FLAGS
from mai_aug.study.compare import CompareOptions
from mai_aug.study.executors.base import ExecutorOptions


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _dests(name: str) -> set[str]:
    return {a.dest for a in _subparser(name)._actions if a.dest != "help"}


def _captured_train(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    seen: list[TrainConfig] = []
    monkeypatch.setattr(mai_aug.engine.train, "train", seen.append)
    return seen


def test_cli_overrides_file_only_where_given(tmp_path, monkeypatch):
    seen = _captured_train(monkeypatch)
    settings = tmp_path / "settings.yaml"
    settings.write_text("lr: 0.01\nepochs: 3\nimage_size: 64\nnetwork: resnet18\nmetrics: [auc, ap]\n"
                        "weight_decay: 0.001\n")
    assert main(["train", "--settings", str(settings), "--lr", "0.5", "--datalist", "d.json",
                 "--out", str(tmp_path / "run")]) == 0
    (config,) = seen
    assert config.lr == 0.5 and config.epochs == 3 and config.image_size == 64 and config.network == "resnet18"
    assert config.metrics == ["auc", "ap"] and config.weight_decay == 0.001
    assert config.batch_size == TrainConfig.__dataclass_fields__["batch_size"].default  # the one default
    assert config.sources["lr"] == "cli" and config.sources["epochs"] == "file"
    assert config.sources["batch_size"] == "default" and config.sources["out"] == "cli"
    assert set(config.sources) == set(setting_names())


def test_without_a_file_flags_and_defaults_are_as_before(tmp_path, monkeypatch):
    seen = _captured_train(monkeypatch)
    assert main(["train", "--datalist", "d.json", "--out", str(tmp_path / "run"), "--quiet", "--no-weighted-loss",
                 "--regimes-file", "a.yaml", "--regimes-file", "b.yaml"]) == 0
    (config,) = seen
    default = TrainConfig(out=str(tmp_path / "run"), datalist="d.json")
    changed = {k for k, v in config.to_dict().items() if v != default.to_dict()[k]}
    assert changed == {"progress", "weighted_loss", "regimes_file"}
    assert config.regimes_file == ["a.yaml", "b.yaml"] and config.progress is False


def test_out_may_come_from_the_file(tmp_path, monkeypatch):
    seen = _captured_train(monkeypatch)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"out: {tmp_path / 'run'}\ndatalist: d.json\n")
    assert main(["train", "--settings", str(settings)]) == 0
    assert seen[0].out == str(tmp_path / "run") and seen[0].sources["datalist"] == "file"


def _train_with_settings(tmp_path: Path, body: str, *extra: str) -> int:
    """``mai-aug train`` with ``body`` as its settings file (a datalist that need not exist; RUN under tmp_path)."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(body + "\n")
    return main(["train", "--settings", str(settings), "--datalist", "d.json", "--out", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("body, fragment", [
    ("learning_rate: 0.1", "settings.yaml: unknown key 'learning_rate' (did you mean 'lr'?)"),
    ("epoch: 2", "settings.yaml: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("lr: fast", "settings.yaml: lr: expected a number (finite), got 'fast'"),
    ("lr: 0", "settings.yaml: lr: 0 must be above 0"),
    ("cache: ram", "settings.yaml: cache: 'ram' is not one of store, none"),
    ("image_size: '64'", "settings.yaml: image_size: expected an integer, got '64'"),
    ("metrics: [auc, aucc]", "settings.yaml: metrics: unknown metric 'aucc'"),
    ("network: resnt18", "did you mean resnet18"),
    ("- lr\n- 0.1", "settings.yaml: expected a mapping"),
    ("lr: [", "settings.yaml: not valid YAML"),
    ("dataset: {_target_: my_adapter.read_mine}", "settings.yaml: dataset: _target_ 'my_adapter.read_mine' is code"),
    ("dataset: os.system", "settings.yaml: dataset: _target_ 'os.system' is code"),  # a dotted name is code too
    ("metrics: [{_target_: my_metrics.brier, name: brier}]", "_target_ 'my_metrics.brier' is code"),
    ("metrics: [{_target_: my_metrics.brier, name: ap}]", "name 'ap' is a built-in metric"),
    ("metrics: [{_target_: my_metrics.brier, nme: brier}]", "unknown key 'nme' (did you mean 'name'?)"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, body, fragment):
    assert _train_with_settings(tmp_path, body) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_one_metric_name_one_function(tmp_path, capsys):
    body = "metrics: [{_target_: numpy.mean, name: m1}, {_target_: numpy.median, name: m1}]"
    assert _train_with_settings(tmp_path, body, "--trust-config") == 2
    assert "name 'm1' already names numpy.mean" in capsys.readouterr().err


def test_out_is_required_somewhere(tmp_path, capsys):
    assert main(["train", "--datalist", "d.json"]) == 2
    assert "give --out DIR (or out: in the --settings file)" in capsys.readouterr().err


def test_trusted_target_that_cannot_be_imported(tmp_path, capsys):
    assert _train_with_settings(tmp_path, "dataset: {_target_: no_such_module_here.read}", "--trust-config") == 2
    assert "cannot import _target_ 'no_such_module_here.read'" in capsys.readouterr().err


def test_every_train_flag_is_a_setting_and_every_setting_is_reachable(tmp_path):
    dests = _dests("train") - {"settings", "trust_config"}  # train's two arguments that are no setting
    names = set(setting_names())
    assert dests <= names, f"train flags that are no TrainConfig field (their value would be dropped): {dests - names}"
    assert dests | FILE_ONLY == names, f"settings neither a flag nor listed as file-only: {names - dests - FILE_ONLY}"
    assert not dests & FILE_ONLY
    # every field, the file-only ones too, is read from a settings file and reaches the TrainConfig
    values = {**TrainConfig(out=str(tmp_path / "run")).to_dict(), "weight_decay": 0.01, "tensorboard_dir": "tb",
              "hparams": True, "cache_dir": "cache", "lr": 0.003, "views": ["PA"]}
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(values))
    config = build_train_config([("file", read_settings(tmp_path / "all.yaml"))])
    assert config.to_dict() == values and set(config.sources.values()) == {"file"}


def test_setting_flags_have_no_argparse_default():
    """A default on a setting's flag would override the --settings file: defaults live in TrainConfig only."""
    names = set(setting_names())
    defaults = {a.dest: a.default for a in _subparser("train")._actions
                if a.dest in names and a.default is not argparse.SUPPRESS}
    assert defaults == {}


def test_every_compare_flag_is_routed(tmp_path, monkeypatch):
    names = set(setting_names())
    routed = set(COMPARE_TRAIN_FLAGS) | {f.name for f in dataclasses.fields(CompareOptions)} \
        | {f.name for f in dataclasses.fields(ExecutorOptions)} \
        | set(_data_options(argparse.Namespace(**dict.fromkeys(_dests("compare"))))) | {"command", "handler", "trust_config"} \
        | {f"external_{f.name}" if f.name in ("dataset", "split", "name", "uncertain") else f.name
           for f in dataclasses.fields(ExternalSpec)}  # --external DIR and its options make CompareOptions.external
    assert _dests("compare") <= routed, f"compare flags going nowhere: {_dests('compare') - routed}"
    assert set(COMPARE_TRAIN_FLAGS) <= names
    seen: list[CompareOptions] = []
    monkeypatch.setattr(mai_aug.study.compare, "run_compare", lambda opts: seen.append(opts))
    assert main(["compare", "--out", str(tmp_path / "cmp"), "--lr", "0.5", "--epochs", "2", "--image-size", "48",
                 "--network", "resnet18", "--metrics", "ap", "--workers", "0", "--executor", "ray", "--cpus-per-run",
                 "3", "--gpus-per-run", "0.5", "--slurm-args", "qos=high", "--seed-list", "4", "2"]) == 0
    executor = seen[0].executor
    assert (executor.kind, executor.cpus_per_run, executor.gpus_per_run, executor.slurm_args) == ("ray", 3, 0.5,
                                                                                                  ["qos=high"])
    assert seen[0].seeds == [4, 2]
    overrides = seen[0].train_overrides
    assert overrides["lr"] == 0.5 and overrides["epochs"] == 2 and overrides["image_size"] == 48
    assert overrides["network"] == "resnet18" and overrides["metrics"] == ["ap"] and overrides["workers"] == 0
    assert overrides["batch_size"] is None  # not given: the preset's value
    assert seen[0].external is None
    assert main(["compare", "--out", str(tmp_path / "cmp"), "--external", str(tmp_path), "--external-dataset", "chexpert",
                 "--external-split", "official", "--external-name", "site", "--lesion", "--external-uncertain", "zeros"]) == 0
    assert seen[1].external == ExternalSpec(tmp_path, "chexpert", "official", None, True, "zeros", "site")


def test_unknown_layer_key_is_refused():
    with pytest.raises(MaiAugError, match="'learning_rate' is not a TrainConfig field"):
        build_train_config([("cli", {"out": "r", "learning_rate": 0.1})])


def test_example_settings_file_trains_as_written(monkeypatch, tmp_path):
    seen = _captured_train(monkeypatch)
    example = Path(__file__).parents[1] / "workflows" / "configs" / "my-settings.yaml"
    assert main(["train", "--settings", str(example), "--datalist", "d.json", "--out", str(tmp_path / "run"),
                 "--epochs", "1"]) == 0
    written = yaml.safe_load(example.read_text())
    config = seen[0]
    assert config.epochs == 1 and config.sources["epochs"] == "cli"
    assert config.network == written["network"]["name"] and config.weight_decay == written["weight_decay"]
    assert {k for k, v in config.sources.items() if v == "file"} == set(written) - {"epochs"} | {"network_args"}


@pytest.mark.parametrize("given", [["--uncertain", "zeros"], ["--views", "PA"], ["--split-seed", "3"], ["file"]])
def test_split_settings_beside_a_datalist_are_refused_not_dropped(tmp_path, capsys, given):
    if given == ["file"]:
        settings = tmp_path / "s.yaml"
        settings.write_text("val_frac: 0.3\n")
        given = ["--settings", str(settings)]
    assert main(["train", "--datalist", str(tmp_path / "d.json"), "--out", str(tmp_path / "run"), *given]) == 2
    err = capsys.readouterr().err
    assert "is already split" in err and "has no effect" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
