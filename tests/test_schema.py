"""One settings schema: a setting is one Field, and its flag, preset key, fingerprint part and resume rule follow.

``--threads`` is such a setting: one entry in the schema plus its consumer (``torch.set_num_threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
import yaml

from conftest import cut_datalist
from mai_aug.cli import build_parser, main
from mai_aug.core.errors import MaiAugError
from mai_aug.core.threads import available_cores, default_threads
from mai_aug.settings import schema
from mai_aug.settings.config import TrainConfig, config_class, config_differences
from mai_aug.settings.fingerprint import components
from mai_aug.settings.flags import add_compare_train_flags, add_train_flags, flagged
from mai_aug.settings.presets import check_train_section
from mai_aug.settings.schema import FIELDS, Field, Range, preset_fields


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _with(field: Field) -> tuple[Field, ...]:
    """A copy of the schema with ``field`` added."""
    return (*FIELDS, field)


@pytest.mark.parametrize("changes_results, resumable", [(True, False), (False, True)])
def test_a_new_field_gets_its_flag_preset_key_fingerprint_part_and_resume_rule(changes_results, resumable):
    warmup = Field("warmup", int, 0, help="warm-up epochs (default: %(default)s)", range=Range(0),
                   changes_results=changes_results, resumable=resumable)
    fields = _with(warmup)
    # the flag: parsed, checked against the range, left out unless given
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_train_flags(parser, fields)
    assert parser.parse_args(["--warmup", "2"]).warmup == 2
    assert "warmup" not in vars(parser.parse_args([]))
    assert "warm-up epochs (default: 0)" in " ".join(parser.format_help().split())
    with pytest.raises(argparse.ArgumentError, match="-1 must be at least 0"):
        parser.parse_args(["--warmup", "-1"])
    # the preset key, checked as strictly
    assert check_train_section({"warmup": 3}, "preset: train", preset_fields(fields)) == {"warmup": 3}
    with pytest.raises(MaiAugError, match="train.warmup: -1 must be at least 0"):
        check_train_section({"warmup": -1}, "preset: train", preset_fields(fields))
    with pytest.raises(MaiAugError, match="unknown key 'warmup'"):
        check_train_section({"warmup": 3}, "preset: train", preset_fields())  # the real schema has no such key
    # the settings class and the fingerprint's field set
    config_cls = config_class(fields)
    plain, warm = config_cls(out="run"), config_cls(out="run", warmup=2)
    assert plain.warmup == 0
    assert ("warmup" in components(warm, {}, {})["settings"]) is changes_results
    assert (components(plain, {}, {}) == components(warm, {}, {})) is not changes_results
    # the resume rule
    said = config_differences(plain.to_dict(), warm)
    assert said == ([] if resumable else ["warmup: 0 -> 2"])


def test_a_new_compare_routed_field_is_a_compare_flag_defaulting_to_the_preset():
    fields = _with(Field("warmup", int, 0, range=Range(0), compare_routes=True, compare_help="overrides it"))
    parser = argparse.ArgumentParser()
    add_compare_train_flags(parser, fields)
    assert parser.parse_args([]).warmup is None and parser.parse_args(["--warmup", "1"]).warmup == 1
    assert "warmup" in schema.names_where(lambda f: f.compare_routes, fields)


def test_the_train_parser_has_exactly_the_schemas_flags():
    options = {o: a for a in _subparser("train")._actions for o in a.option_strings}
    negated = {f"--no-{f.option[2:]}" for f in flagged() if f.action == "bool"}  # --amp / --no-amp
    assert "--no-amp" in negated
    expected = {f.option for f in flagged()} | negated | {"-h", "--help", "--trust-config", "--settings"}
    assert set(options) == expected
    for f in flagged():
        assert options[f.option].dest == f.name and options[f.option].default is argparse.SUPPRESS
        assert list(options[f.option].choices or []) == list(f.flag_choices or f.choices or [])
        assert options[f.option].metavar == f.metavar
        if f.action is None:
            assert options[f.option].nargs == f.nargs


def test_compare_has_a_flag_for_every_routed_setting():
    options = {o: a for a in _subparser("compare")._actions for o in a.option_strings}
    for name in schema.COMPARE_TRAIN_FLAGS:
        action = options[schema.BY_NAME[name].option]
        assert action.dest == name and action.default is None and action.help == schema.BY_NAME[name].compare_help


# --- --threads: one Field, its consumer, recorded, not part of the identity ------------------------------------


def test_threads_default_is_the_cores_available_shared_under_torchrun(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == available_cores() == TrainConfig(out="r").threads
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * available_cores()))
    assert default_threads() == 1  # never below one


@pytest.mark.parametrize("omp, expected", [("1", 1), ("100000", "cores"), ("0", "cores"), ("two", "cores")])
def test_threads_default_follows_omp_num_threads_where_it_is_a_positive_count(monkeypatch, omp, expected):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert default_threads() == (available_cores() if expected == "cores" else expected)


def test_threads_is_recorded_not_part_of_the_fingerprint_and_resumable(phantom_dir, tmp_path):
    datalist = cut_datalist(phantom_dir, tmp_path, training=16, validation=16)
    tiny = ["--datalist", str(datalist), "--regime", "none", "--image-size", "32", "--batch-size", "8",
            "--epochs", "1", "--steps-per-epoch", "1", "--workers", "0", "--quiet"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # so that 1 below is train's doing
        assert main(["train", *tiny, "--out", str(tmp_path / "one"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # applied before training
    finally:
        torch.set_num_threads(before)
    assert main(["train", *tiny, "--out", str(tmp_path / "default")]) == 0
    one, default = (yaml.safe_load((tmp_path / run / "config.yaml").read_text()) for run in ("one", "default"))
    assert one["threads"] == 1 and one["resolved"]["sources"]["threads"] == "cli"
    assert default["threads"] == default_threads() and default["resolved"]["sources"]["threads"] == "default"
    sha = [json.loads((tmp_path / run / "fingerprint.json").read_text())["sha256"] for run in ("one", "default")]
    assert sha[0] == sha[1]
    assert config_differences(one, dataclasses.replace(TrainConfig.from_dict(one), threads=2)) == []


@pytest.mark.parametrize("command", [["train", "--datalist", "d.json", "--out", "r"], ["evaluate", "--run", "r"],
                                     ["compare", "--out", "c"]])
@pytest.mark.parametrize("value, said", [("0", "0 must be at least 1"), ("two", "'two' is not an integer"),
                                         ("5000", "5000 is above 4096")])
def test_a_bad_thread_count_is_one_line(capsys, command, value, said):
    assert main([*command, "--threads", value]) == 2
    err = capsys.readouterr().err.strip()
    assert f"argument --threads: {said}" in err and len(err.splitlines()) == 1


def test_a_settings_file_sets_threads_as_strictly(tmp_path, capsys):
    settings = tmp_path / "s.yaml"
    settings.write_text("threads: 0\n")
    assert main(["train", "--settings", str(settings), "--datalist", "d.json", "--out", str(tmp_path / "r")]) == 2
    assert "s.yaml: threads: 0 must be at least 1" in capsys.readouterr().err


def test_evaluate_applies_threads_before_it_works(monkeypatch):
    import mai_aug.analyses.evaluate.run as evaluate

    seen = []

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise MaiAugError("stopped here")

    monkeypatch.setattr(evaluate, "evaluate_run", record)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # so that 1 below is evaluate's doing
        assert main(["evaluate", "--run", "r", "--threads", "1"]) == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_hand_written_choice_lists_follow_their_registries():
    """``--dataset``'s choices are the adapter registry's, and every built-in metric is named in each ``--metrics``
    help (the command line lists them without importing the modules that register them)."""
    from mai_aug.cli import build_parser
    from mai_aug.core.choices import DATASETS
    from mai_aug.data.datasets import DATASETS as REGISTERED
    from mai_aug.stats.scores import BASE

    assert DATASETS[0] == "auto" and sorted(DATASETS[1:]) == sorted(REGISTERED)
    helps = [schema.BY_NAME["metrics"].help, schema.BY_NAME["metrics"].compare_help]
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    helps += [a.help for a in evaluate._actions if "--metrics" in a.option_strings]
    assert len(helps) == 3
    for text in helps:
        assert all(name in text for name in BASE), text
