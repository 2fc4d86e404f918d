"""Configs are data unless trusted; a run folder's stored regime, not a regimes file, drives evaluate/predict/resume."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import cut_datalist
from mai_aug.analyses.trained_run import TrainedRun
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.core.trust import check_data_only
from mai_aug.engine.precision import trained_dtype
from mai_aug.transforms.regimes import default_regimes_file, load_regime

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
        "--quiet"]


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def touch_expression(marker: Path) -> str:
    """A `$` expression that creates ``marker`` and evaluates to 1.0."""
    return f"$__import__('pathlib').Path({str(marker)!r}).touch() or 1.0"


def payloads(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (regimes file body, the entry the refusal must name)."""
    marker = tmp_path / "PWNED"
    return {
        "$ in a transform argument": (f"""
            regimes:
              evil:
                random: [{{_target_: RandGaussianNoised, keys: image, prob: "{touch_expression(marker)}"}}]
            """, "regimes.evil.random[0].prob"),
        "_target_ os.system": (f"""
            regimes:
              evil:
                random: [{{_target_: os.system, command: "touch {marker}"}}]
            """, "regimes.evil.random[0]._target_"),
        "$ in load": (f"""
            load:
              - {{_target_: LoadImaged, keys: image, image_only: "{touch_expression(marker)}"}}
            regimes:
              evil: {{}}
            """, "load[0].image_only"),
        "reader os.system": (f"""
            load:
              - {{_target_: LoadImaged, keys: image, reader: os.system, command: "touch {marker}"}}
            regimes:
              evil: {{}}
            """, "load[0].reader"),
        "reader list with os.system": (f"""
            load:
              - {{_target_: LoadImaged, keys: image, reader: [PILReader, os.system], command: "touch {marker}"}}
            regimes:
              evil: {{}}
            """, "load[0].reader[1]"),
    }


CASES = ["$ in a transform argument", "_target_ os.system", "$ in load", "reader os.system", "reader list with os.system"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["regimes", "preview"])
def test_code_in_a_regimes_file_is_refused_and_never_runs(tmp_path, capsys, case, command, phantom_dir):
    body, entry = payloads(tmp_path)[case]
    path = write(tmp_path / "evil.yaml", body)
    args = {"regimes": ["regimes", "--regimes-file", str(path), "--image-size", "32"],
            "preview": ["preview", "--data", str(phantom_dir), "--regime", "evil", "--regimes-file", str(path),
                        "--size", "32", "--n", "1", "--samples", "1", "--out", str(tmp_path / "p")]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and entry in err and "--trust-config" in err
    assert not (tmp_path / "PWNED").exists()


def test_trust_config_lets_your_own_code_run(tmp_path, capsys):
    body, _ = payloads(tmp_path)["$ in a transform argument"]
    path = write(tmp_path / "mine.yaml", body)
    assert main(["regimes", "--regimes-file", str(path), "--image-size", "32", "--trust-config"]) == 0
    assert (tmp_path / "PWNED").exists() and "RandGaussianNoised" in capsys.readouterr().out
    (tmp_path / "PWNED").unlink()
    body, _ = payloads(tmp_path)["_target_ os.system"]
    path = write(tmp_path / "mine.yaml", body)
    main(["regimes", "--regimes-file", str(path), "--image-size", "32", "--trust-config"])  # os.system is no transform
    assert (tmp_path / "PWNED").exists()  # but with --trust-config it was yours to run


def test_class_reached_through_a_module_attribute_never_runs(tmp_path, monkeypatch):
    # ConfigParser is a class inside mai_aug.transforms.regimes' namespace; its globals import any module by name
    (tmp_path / "mai_aug_payload.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path / "evil.yaml", """
        regimes:
          evil:
            random: [{_target_: mai_aug.transforms.regimes.ConfigParser, config: {}, globals: {z: mai_aug_payload}}]
        """)
    with pytest.raises(MaiAugError, match=r"regimes.evil.random\[0\]._target_: .* is not a MONAI or mai_aug transform"):
        load_regime("evil", 32, [path])
    assert not (tmp_path / "PWNED").exists()


REFUSED = {
    "class in a transform module's namespace": ({"_target_": "mai_aug.transforms.regimes.yaml.UnsafeLoader"}, "_target_"),
    "class of monai.transforms that is no transform": ({"_target_": "monai.transforms.utils.Fourier"}, "_target_"),
    "module outside the transforms, imported by ConfigParser": ({"_target_": "mai_aug.cli.main"}, "_target_"),
    "bare name MONAI resolves to another class": ({"_target_": "Affine"}, "ambiguous"),
    "transform looking a callable up by name": ({"_target_": "TorchVisiond", "keys": "image", "name": "Pad"}, "by name"),
    "transform writing files": ({"_target_": "SaveImaged", "keys": "image"}, "writes files"),
    "writer": ({"_target_": "Identityd", "keys": "image", "writer": "os.system"}, "'writer' is not allowed"),
    "reader by lower-case name (pydoc.locate imports it)": (
        {"_target_": "LoadImaged", "keys": "image", "reader": "pilreader"}, "not one of MONAI's image readers"),
    "dotted path as a callable argument": ({"_target_": "Lambdad", "keys": "image", "func": "os.system"},
                                           "'os.system' names importable code"),
    "_mode_ (callable or debug instantiation)": ({"_target_": "Identityd", "keys": "image", "_mode_": "callable"}, "_mode_"),
    "_requires_ (evaluated before instantiation)": ({"_target_": "Identityd", "keys": "image", "_requires_": "x"}, "_requires_"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_names_of_code_are_refused(case):
    entry, fragment = REFUSED[case]
    with pytest.raises(MaiAugError, match=re.escape(fragment)) as err:
        check_data_only({"random": [entry]}, "my.yaml", trust=False)
    assert str(err.value).startswith("my.yaml: random[0].") and "`trust_config`" in str(err.value)
    check_data_only({"random": [entry]}, "my.yaml", trust=True)


def test_transforms_and_readers_by_any_name_are_data():
    check_data_only({"load": [
        {"_target_": "monai.transforms.io.dictionary.LoadImaged", "keys": "image", "reader": "PILReader"},
        {"_target_": "LoadImaged", "keys": "image", "reader": ["monai.data.PILReader", "NumpyReader"]},
        {"_target_": "LoadImaged", "keys": "image", "reader": {"_target_": "monai.data.image_reader.PILReader"}},
        {"_target_": "monai.transforms.Affine", "scale_params": [1, 1]},
        {"_target_": "CastToTyped", "keys": "image", "dtype": "torch.float32"},
        {"_target_": "mai_aug.transforms.resize.SmoothResized", "keys": "image", "spatial_size": [32, 32]},
    ]}, "my.yaml", trust=False)


def test_macro_reading_another_file_is_refused(tmp_path):
    write(tmp_path / "other.yaml", "x: [1]\n")
    path = write(tmp_path / "my.yaml", f"""
        regimes:
          sneaky:
            random: "%{tmp_path / 'other.yaml'}#x"
        """)
    with pytest.raises(MaiAugError, match="reads another file"):
        load_regime("sneaky", 32, [path])


def test_shipped_configs_need_no_trust():
    check_data_only(yaml.safe_load(default_regimes_file().read_text()), "regimes.yaml", trust=False)
    my = ROOT / "workflows" / "configs" / "my-regimes.yaml"
    assert load_regime("contrast", 32, [my], trust=False).random


def test_spec_is_plain_resolved_data():
    spec = load_regime("complex-crop", 48).spec
    assert set(spec) == {"description", "load", "deterministic", "random", "allow_lateral_flip"}
    strings = re.findall(r"'([^']*)'", repr(spec))
    assert strings and not [v for v in strings if v.startswith(("@", "%", "$"))]  # no reference, macro or code
    assert spec["load"][2]["spatial_size"] == [48, 48] and spec["random"][0]["_target_"] == "RandRotated"


@pytest.fixture(scope="module")
def user_run(phantom_dir, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A tiny run trained on a user regime: (run folder, the regimes file, the training arguments)."""
    tmp = tmp_path_factory.mktemp("trust")
    regimes = write(tmp / "mine.yaml", """
        regimes:
          mine:
            deterministic: [{_target_: NormalizeIntensityd, keys: image}]
            random: [{_target_: RandAdjustContrastd, keys: image, prob: 1.0, gamma: [0.9, 1.1]}]
        """)
    cut_datalist(phantom_dir, tmp, training=32)  # validation kept whole: AUC intervals need positives
    run = tmp / "run"
    args = ["train", "--datalist", str(tmp / "datalist.json"), "--regime", "mine", "--regimes-file", str(regimes),
            "--out", str(run), *TINY]
    assert main(args) == 0
    return run, regimes, args


def evaluate(run: Path, *extra: str) -> pd.DataFrame:
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--bootstrap", "200", *extra]) == 0
    return pd.read_csv(run / "eval" / "validation_predictions.csv")


def test_editing_the_regimes_file_after_training_does_not_change_evaluate(user_run):
    run, regimes, _ = user_run
    before = evaluate(run)
    write(regimes, """
        regimes:
          mine:
            deterministic: [{_target_: ScaleIntensityd, keys: image, minv: 0.0, maxv: 100.0}]
        """)
    pd.testing.assert_frame_equal(evaluate(run), before)


def tamper(run: Path, edit) -> None:
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_code_in_a_run_folder_sent_to_you_never_runs(user_run, tmp_path, capsys):
    run, _, train_args = user_run
    original = (run / "config.yaml").read_text()
    marker = tmp_path / "PWNED"
    try:
        tamper(run, lambda c: c["resolved"]["regime"]["deterministic"][0].update(
            {"_target_": "NormalizeIntensityd", "nonzero": touch_expression(marker)}))
        for command in (["evaluate", "--run", str(run)], ["predict", "--run", str(run), str(run / "x.png")]):
            if command[0] == "predict":  # a real image: the run's config is what must be refused
                from PIL import Image

                Image.new("L", (32, 32), 100).save(run / "x.png")
            assert main(command) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1
            assert "deterministic[0].nonzero" in err and "--trust-config" in err and not marker.exists()
        assert main([*train_args, "--resume"]) == 2
        assert "deterministic[0].nonzero" in capsys.readouterr().err and not marker.exists()
        evaluate(run, "--trust-config")
        assert marker.exists()
    finally:
        (run / "config.yaml").write_text(original)


def test_run_without_a_stored_spec_is_refused_unless_trusted(user_run, capsys):
    run, _, _ = user_run
    original = (run / "config.yaml").read_text()
    try:
        tamper(run, lambda c: c["resolved"]["regime"].pop("load"))  # as written before regimes were stored
        assert main(["evaluate", "--run", str(run)]) == 2
        assert "predates stored regimes" in capsys.readouterr().err
        tamper(run, lambda c: c.update(regimes_file=[], regime="basic"))
        evaluate(run, "--trust-config")  # rebuilt from the (shipped) regimes files, as before
    finally:
        (run / "config.yaml").write_text(original)


def test_autocast_at_evaluation_follows_the_run(user_run):
    run, _, _ = user_run
    assert TrainedRun(run, device="cpu").amp is False  # a CPU run trained without --amp
    cuda_no_amp = {"amp": False, "resolved": {"amp": False, "device": "cuda"}}  # a CUDA run trained with --no-amp
    assert trained_dtype(cuda_no_amp) is None
    assert trained_dtype({"amp": True, "resolved": {"amp": True, "device": "cuda"}}) == torch.float16
    assert trained_dtype({"amp": None}) == torch.float16  # older runs: training's default with CUDA
    # more cases (CPU bfloat16 runs, inference on the other device) in test_amp_cpu.py


def test_the_kept_component_locator_follows_newly_imported_monai_modules(monkeypatch):
    """One locator serves while the imported MONAI modules stay the same; a new module gets a new one that finds it."""
    import sys
    import types

    from mai_aug.core.trust import monai_locator

    first = monai_locator()
    assert monai_locator() is first and first.get_component_module_name("RandRotated") is not None
    module = types.ModuleType("monai._mai_aug_test_module")

    class MaiAugTestOnlyTransform:
        pass

    MaiAugTestOnlyTransform.__module__ = module.__name__
    module.MaiAugTestOnlyTransform = MaiAugTestOnlyTransform
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert first.get_component_module_name("MaiAugTestOnlyTransform") is None  # its table predates the module
    fresh = monai_locator()
    assert fresh is not first and fresh.get_component_module_name("MaiAugTestOnlyTransform") == module.__name__
