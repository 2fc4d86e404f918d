"""Preset YAML is checked strictly: unknown keys with a suggestion, wrong types and out-of-range values are one line."""

from __future__ import annotations

import pytest

from mai_aug.cli import main
from mai_aug.settings.presets import PRESETS, load_preset


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_presets_pass(name):
    assert "train" in load_preset(name)


@pytest.mark.parametrize("body, fragment", [
    ("train: {epoch: 1}", "train: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("train: {split: official}", "train: unknown key 'split'"),  # belongs in data:, where compare applies it
    ("trian: {epochs: 1}", "unknown key 'trian' (did you mean 'train'?)"),
    ("train: {dataset: chexpert}", "train: unknown key 'dataset'"),  # compare's --dataset reads --data
    ("train: {metrics: [{_target_: my_metrics.brier, name: brier}]}",
     "train.metrics brier: _target_ 'my_metrics.brier' is code"),
    ("train: {epochs: ten}", "train.epochs: expected an integer, got 'ten'"),
    ("train: {image_size: '32'}", "train.image_size: expected an integer, got '32'"),
    ("train: [1, 2]", "train: expected a mapping"),
    ("train: {lr: .nan}", "train.lr: expected a number (finite)"),
    ("train: {lr: 0}", "train.lr: 0 must be above 0"),
    ("train: {image_size: 16}", "train.image_size: 16 must be at least 32"),
    ("train: {cache: ram}", "train.cache: 'ram' is not one of store, none"),
    ("train: {augment_on: gpu}", "train.augment_on: 'gpu' is not one of auto, loader, device"),
    ("data: {split: random}", "data.split: 'random' is not one of patient, official"),
    ("data: {test_frac: 1.5}", "data.test_frac: 1.5 must be in [0, 1)"),
    ("phantom: {n: 0}", "phantom.n: 0 must be at least 1"),
    ("regimes: none", "regimes: expected a list of strings"),
    ("bootstrap: 199", "bootstrap: 199 must be at least 200"),
    ("seeds: 0", "seeds: 0 is below 1"),
    ("seeds: two", "seeds: expected an integer, got 'two'"),
    ("robustness: {shift: [rotation]}", "robustness: unknown key 'shift' (did you mean 'shifts'?)"),
    ("robustness: {shifts: [spin]}", "--shifts 'spin': expected some of rotation"),
    ("robustness: {shifts: [zoom], levels: [zoom=big]}", "robustness: levels 'zoom=big': expected zoom=V1,V2"),
    ("- just\n- a list", "expected a mapping"),
    ("external: {split: all}", "external: expected a mapping with a phantom: entry"),
    ("external: {phantom: {layout: dicom}}", "external: phantom.layout: 'dicom' is not one of nih, chexpert"),
    ("external: {phantom: {}, split: some}", "external.split: 'some' is not one of all, official"),
    ("external: {phantom: {}, name: ../up}", "external: name '../up': not a valid name"),
])
def test_bad_preset_is_one_line(tmp_path, capsys, body, fragment):
    preset = tmp_path / "p.yaml"
    preset.write_text(body + "\n")
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_preset_seeds_and_sweep_are_defaults_the_command_line_overrides():
    from mai_aug.study.compare import CompareOptions, _preset_defaults

    preset = load_preset("robustness")
    opts = _preset_defaults(CompareOptions(out="o"), preset)
    assert (opts.seeds, opts.robustness, opts.robustness_levels) == ([0, 1, 2], ["rotation", "zoom"], [])
    given = _preset_defaults(CompareOptions(out="o", seeds=[4], robustness=["noise"]), preset)
    assert (given.seeds, given.robustness) == ([4], ["noise"])
    assert _preset_defaults(CompareOptions(out="o"), load_preset("demo")).robustness is None


def test_preset_sweep_takes_command_line_levels_and_levels_alone_are_refused():
    from mai_aug.core.errors import MaiAugError
    from mai_aug.study.compare import CompareOptions, _preset_defaults

    opts = _preset_defaults(CompareOptions(out="o", robustness_levels=["rotation=0,5"]), load_preset("robustness"))
    assert opts.robustness == ["rotation", "zoom"] and opts.robustness_levels == ["rotation=0,5"]
    with pytest.raises(MaiAugError, match="need `robustness`"):
        _preset_defaults(CompareOptions(out="o", robustness_levels=["rotation=0,5"]), load_preset("demo"))
