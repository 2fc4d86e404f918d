"""``mai-aug export-bundle``: MONAI's bundle runner, without mai_aug, gives ``mai-aug predict``'s probabilities."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import monai
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.networks.nets import DenseNet121
from PIL import Image

import mai_aug
from conftest import cut_datalist
from mai_aug.bundle.inference import preprocessing
from mai_aug.bundle.metadata import required_packages
from mai_aug.bundle.transforms import SMOOTH_RESIZE, foreign_packages
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.loader import build_dataset
from mai_aug.transforms.regimes import Regime, available_regimes, load_regime, regime_from_spec

SIZE = 32
TRAIN = ["--image-size", str(SIZE), "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
         "--cache", "none", "--regime", "basic", "--quiet"]
# Required by MONAI's metadata schema (meta_schema_20240725.json) at the top level and for each tensor it describes.
SCHEMA_REQUIRED = ["schema", "version", "monai_version", "pytorch_version", "numpy_version",
                   "required_packages_version", "task", "description", "authors", "copyright", "network_data_format"]
TENSOR_REQUIRED = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]
# Runs a bundle as `python -m monai.bundle ARGS` would, with mai_aug made unimportable. MONAI's command line needs
# the `fire` package; without it the same `monai.bundle.run` is called directly.
RUNNER = """
import runpy, sys
sys.modules["mai_aug"] = None  # the bundle must not need mai_aug
args = sys.argv[1:]
try:
    import fire  # noqa: F401
except ImportError:
    import monai.bundle
    getattr(monai.bundle, args[0])(**dict(zip((a.lstrip("-") for a in args[1::2]), args[2::2])))
else:
    sys.argv = ["monai.bundle", *args]
    runpy.run_module("monai.bundle", run_name="__main__")
"""


def run_monai_bundle(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` in ``cwd`` (the bundle folder, where its relative paths start)."""
    return subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.fixture(scope="module")
def run(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundle-run")
    datalist = cut_datalist(phantom_dir, folder, training=16, validation=8, test=4)
    assert main(["train", "--datalist", str(datalist), "--out", str(folder / "run"), *TRAIN]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "chest"
    assert main(["export-bundle", "--run", str(run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom test images (64 px: shrunk) and odd files: RGB and small (enlarged), 16-bit, wide (both at once)."""
    folder = tmp_path_factory.mktemp("bundle-images")
    for item in json.loads((run / "datalist.json").read_text())["test"][:3]:
        shutil.copy(item["image"], folder)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / "rgb_small.png")
    Image.fromarray(rng.integers(0, 65536, (50, 50), dtype=np.uint16)).save(folder / "sixteen_bit.png")
    Image.fromarray(rng.integers(0, 256, (24, 70), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L").convert("P").save(folder / "palette.png")
    return folder


def by_name(csv: Path) -> pd.DataFrame:
    frame = pd.read_csv(csv)
    return frame.assign(image=frame["image"].map(os.path.basename)).set_index("image").sort_index()


@pytest.mark.slow
def test_bundle_gives_predicts_probabilities_without_mai_aug(bundle, run, images, tmp_path):
    """The bundle moved to another folder runs there (its paths are relative: bundle_root is ``.``)."""
    moved = Path(shutil.copytree(bundle, tmp_path / "elsewhere" / "chest"))
    out = tmp_path / "bundle-out"
    result = run_monai_bundle("run", "--config_file", "configs/inference.yaml", "--meta_file", "configs/metadata.json",
                              "--input_dir", str(images), "--output_dir", str(out), cwd=moved)
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = sorted(images.glob("*.png"))
    assert main(["predict", "--run", str(run), *map(str, pngs), "--out", str(tmp_path / "predict.csv")]) == 0
    ours, theirs = by_name(out / "predictions.csv"), by_name(tmp_path / "predict.csv")
    findings = yaml.safe_load((run / "config.yaml").read_text())["resolved"]["findings"]
    assert list(ours.columns) == list(theirs.columns) == findings
    assert list(ours.index) == list(theirs.index) == sorted(p.name for p in pngs)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-5)
    assert ours.to_numpy().std(axis=0).max() > 1e-4  # the images give different outputs: a real comparison


@pytest.mark.slow
def test_calibrated_bundle_gives_calibrated_predict_and_the_model_card(run, images, tmp_path, capsys):
    """A run evaluated and calibrated: its bundle (mai_aug unimportable) applies the calibration as predict does,
    and its metadata and README carry the test AUC with intervals and the calibration."""
    run = Path(shutil.copytree(run, tmp_path / "run"))
    pngs = sorted(images.glob("*.png"))
    assert main(["predict", "--run", str(run), *map(str, pngs), "--out", str(tmp_path / "raw.csv")]) == 0
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0
    assert main(["calibrate", "--run", str(run)]) == 0
    capsys.readouterr()
    assert main(["export-bundle", "--run", str(run), "--out", str(tmp_path / "bundle")]) == 0
    said = capsys.readouterr().out
    assert "bundle outputs: calibrated: Platt scaling" in said and "model card:" not in said
    bundle = tmp_path / "bundle"
    result = run_monai_bundle("run", "--config_file", "configs/inference.yaml", "--meta_file", "configs/metadata.json",
                              "--input_dir", str(images), "--output_dir", str(tmp_path / "out"), cwd=bundle)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["predict", "--run", str(run), *map(str, pngs), "--out", str(tmp_path / "predict.csv")]) == 0
    ours, theirs = by_name(tmp_path / "out" / "predictions.csv"), by_name(tmp_path / "predict.csv")
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-5)
    assert np.abs(ours.to_numpy() - by_name(tmp_path / "raw.csv").to_numpy()).max() > 1e-3  # calibrated, not raw

    calibration = json.loads((run / "calibration.json").read_text())
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    card = meta["mai_aug"]["model_card"]
    assert card["calibration"]["state"] == "calibrated" and card["calibration"]["maps"] == calibration["maps"]
    assert "uncalibrated" not in meta["pred_classes"] and "calibrated probabilities" in meta["pred_classes"]
    auc = pd.read_csv(run / "eval" / "test_auc.csv")
    rows = card["test_auc"]["findings"]
    assert card["test_auc"]["state"] == "evaluated" and [r["finding"] for r in rows] == auc["finding"].tolist()
    np.testing.assert_allclose([r["auc"] if r["auc"] is not None else np.nan for r in rows], auc["auc"])
    np.testing.assert_allclose([r["ci_low"] if r["ci_low"] is not None else np.nan for r in rows], auc["ci_low"])
    text = (bundle / "docs" / "README.md").read_text()
    macro = auc[auc["finding"] == "macro"].iloc[0]
    value = "-" if np.isnan(macro["auc"]) else f"{macro['auc']:.3f}"  # 4 test images: often undefined
    assert f"| macro | {value} |" in text and "Test AUC of `best.pt` per finding" in text
    assert "Calibration: Platt scaling per finding, fitted on the run's validation split" in text


def _regime_with(deterministic: list[dict]) -> Regime:
    spec = copy.deepcopy(load_regime("basic", SIZE).spec)
    spec["deterministic"] = deterministic
    return regime_from_spec("custom", spec, SIZE)


CUSTOM = {
    # a lazy block (rotate + zoom, fused into one resampling) before an intensity transform
    "lazy-deterministic": [{"_target_": "Rotated", "keys": "image", "angle": 0.1, "padding_mode": "border"},
                           {"_target_": "Zoomd", "keys": "image", "zoom": 1.1, "padding_mode": "edge"},
                           {"_target_": "NormalizeIntensityd", "keys": "image"}],
    # mai_aug's own transforms in the deterministic part, rewritten too
    "mai_aug-deterministic": [{"_target_": SMOOTH_RESIZE, "keys": "image", "spatial_size": [SIZE + 8, SIZE + 8],
                               "enlarge_mode": "bilinear"},
                              {"_target_": "mai_aug.transforms.intensity.ToUint8d", "keys": "image"}],
}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", [*available_regimes(), *CUSTOM])
def test_bundle_preprocessing_equals_predicts_exactly(name, in_channels, images):
    """The bundle's transforms, parsed by MONAI's ConfigParser, give predict's network inputs bit for bit."""
    regime = _regime_with(CUSTOM[name]) if name in CUSTOM else load_regime(name, SIZE)
    if name == "lazy-deterministic":
        assert any(getattr(t, "lazy", False) is True for t in regime.online_parts[0])  # the case under test
    config = preprocessing(regime, in_channels)
    assert foreign_packages(config) == []
    transform = ConfigParser({"preprocessing": config}).get_parsed_content("preprocessing")
    items = [{"image": str(p)} for p in sorted(images.glob("*.png"))]
    expected = build_dataset([{**it, "label": [0]} for it in items], regime, train=False, cache="none")
    for item, want in zip(items, expected):
        got = transform(dict(item))["image"]
        want = want["image"].expand(in_channels, -1, -1)
        assert got.shape == want.shape and got.shape[0] == in_channels and got.dtype == torch.float32
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(want)), item["image"]


def test_other_packages_are_declared():
    """A transform with no MONAI equivalent (a --trust-config run's own) stays, and its package is required."""
    config = {"a": [{"_target_": "LoadImaged"}, {"_target_": "monai.transforms.Flipd"},
                    {"_target_": "mai_aug.transforms.batched.Normalize", "x": {"_target_": "mypkg.sub.Thing"}}]}
    assert foreign_packages(config) == ["mai_aug", "mypkg"]
    assert required_packages(foreign_packages(config))["mai_aug"] == mai_aug.__version__


def test_metadata_model_and_readme(bundle, run):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    findings = config["resolved"]["findings"]
    assert all(key in meta for key in SCHEMA_REQUIRED)
    for tensor in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        assert all(key in tensor for key in TENSOR_REQUIRED)
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["spatial_shape"] == [SIZE, SIZE] and image["num_channels"] == 1
    assert pred["num_channels"] == len(findings) and pred["channel_def"] == {str(i): n for i, n in enumerate(findings)}
    own = meta["mai_aug"]
    assert (own["labels"], own["regime"], own["image_size"], own["in_channels"], own["network"]) == (
        findings, "basic", SIZE, 1, "monai.networks.nets.DenseNet121")
    assert meta["monai_version"] == monai.__version__ and own["exported_with"]["mai_aug"] == mai_aug.__version__
    assert "mai_aug" not in meta["required_packages_version"]  # MONAI-only preprocessing
    assert "mai_aug" not in (bundle / "configs" / "inference.yaml").read_text().replace("mai-aug export-bundle", "")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(findings))
    net.load_state_dict(state)  # a bare state dict, MONAI's convention
    assert all(torch.equal(state[k], best[k]) for k in best)
    assert "python -m monai.bundle run" in (bundle / "docs" / "README.md").read_text()
    # the model card of a run neither evaluated nor calibrated says both
    card = own["model_card"]
    assert card["test_auc"]["state"] == "not evaluated" and "mai-aug evaluate --run" in card["test_auc"]["note"]
    assert card["calibration"]["state"] == "uncalibrated" and "uncalibrated" in meta["pred_classes"]
    datalist = json.loads((run / "datalist.json").read_text())
    assert card["data"]["splits"]["validation"] == {
        "images": len(datalist["validation"]), "patients": len({it["patient"] for it in datalist["validation"]})}
    assert card["regime"]["name"] == "basic" and card["training"]["image_size"] == SIZE
    assert card["training"]["weighted_loss"] is True and card["training"]["epochs"] == 1
    text = (bundle / "docs" / "README.md").read_text()
    assert "## Model card" in text and "Test AUC: not evaluated" in text and "Calibration: none; uncalibrated" in text
    assert "Regime: `basic`" in text and f"validation {len(datalist['validation'])} images" in text
    assert "calibration_slope" not in (bundle / "configs" / "inference.yaml").read_text()


def test_bundle_holds_no_path_of_this_machine(bundle, run):
    """Relocatable, as MONAI model-zoo bundles: ``bundle_root: .``, and the run and its data named, not located."""
    config = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    assert config["bundle_root"] == "."
    for name in ("configs/inference.yaml", "configs/metadata.json", "docs/README.md"):
        text = (bundle / name).read_text()
        for path in {str(bundle.parent), str(run.parent), str(Path.home()), str(Path.cwd())}:
            assert path not in text, (name, path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["mai_aug"]["run"] == f"{run.parent.name}/{run.name}"


def test_metadata_passes_monai_verify_metadata(bundle, tmp_path):
    """``monai.bundle verify_metadata`` downloads its schema; offline it reads the file we give it instead."""
    pytest.importorskip("jsonschema")
    tensor = {"type": "object", "required": TENSOR_REQUIRED}
    io = {"type": "object", "patternProperties": {"^.+$": tensor}}
    schema = {"type": "object", "required": SCHEMA_REQUIRED,
              "properties": {"network_data_format": {"type": "object", "required": ["inputs", "outputs"],
                                                     "properties": {"inputs": io, "outputs": io}},
                             "required_packages_version": {"type": "object"}, "version": {"type": "string"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    monai.bundle.verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"),
                                 filepath=str(tmp_path / "schema.json"))
    broken = json.loads((bundle / "configs" / "metadata.json").read_text())
    del broken["network_data_format"]["outputs"]["pred"]["dtype"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="dtype"):
        monai.bundle.verify_metadata(meta_file=str(tmp_path / "broken.json"), filepath=str(tmp_path / "schema.json"))


def _edit_regime(run: Path, to: Path, edit) -> Path:
    shutil.copytree(run, to)
    config = yaml.safe_load((to / "config.yaml").read_text())
    edit(config["resolved"]["regime"])
    (to / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return to


def test_bad_input_is_one_line(run, tmp_path, capsys):
    no_best = shutil.copytree(run, tmp_path / "no-best")
    (no_best / "checkpoints" / "best.pt").unlink()
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    marker = tmp_path / "marker"
    code = _edit_regime(run, tmp_path / "code", lambda r: r["load"][0].update(
        image_only=f"$__import__('os').system('touch {marker}') or 1.0"))
    inject = _edit_regime(run, tmp_path / "inject", lambda r: r["load"][2].update(
        enlarge_mode=f"bicubic'), __import__('os').system('touch {marker}'), ('"))
    cases = [
        (["--run", str(tmp_path / "missing")], "no config.yaml"),
        (["--run", str(no_best)], "no checkpoints/best.pt"),
        (["--run", str(run), "--out", str(full)], "not empty (pass --overwrite"),
        (["--run", str(code)], "'$' expression"),
        (["--run", str(inject)], "enlarge_mode"),
    ]
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "out")]
        capsys.readouterr()
        assert main(["export-bundle", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not marker.exists() and not (tmp_path / "out").exists()
    capsys.readouterr()
    assert main(["export-bundle", "--run", str(run), "--out", str(full), "--overwrite"]) == 0
    assert (full / "models" / "model.pt").is_file() and (full / "notes.txt").read_text() == "mine"
    said = capsys.readouterr().out  # neither calibrated nor evaluated: both said
    assert "bundle outputs: uncalibrated:" in said and "model card: no test evaluation of best.pt" in said


def test_workflow_script_is_the_command():
    script = Path(__file__).parents[1] / "workflows" / "export_bundle.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0 and "mai-aug export-bundle" in result.stdout and "--overwrite" in result.stdout


def test_monai_finds_the_inference_properties(bundle, tmp_path):
    """MONAI's own check of an inference bundle's required ids (bundle_root, device, dataset, evaluator...)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.yaml"),
                              meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                              output_dir=str(tmp_path))
    workflow.initialize()  # writes the predictions CSV's header
    assert workflow.check_properties() == []
    assert (tmp_path / "predictions.csv").read_text().startswith("image,Atelectasis,")


@pytest.mark.parametrize("name", ["densenet121", "resnet18", "efficientnet-b0"])
def test_network_def_builds_the_runs_network(name):
    """The bundle's network_def (a MONAI _target_ config, no mai_aug) builds the network the run trained."""
    from monai.bundle import ConfigParser

    from mai_aug.bundle.inference import network_config
    from mai_aug.networks.build import instantiate
    from mai_aug.networks.spec import resolve_network

    spec = resolve_network(name, {}, 3, 1, 64)
    raw = {"resolved": {"network": spec.to_dict(), "findings": ["a", "b", "c"]}, "in_channels": 1, "image_size": 64}
    from_bundle = ConfigParser({"net": network_config(raw)}).get_parsed_content("net")
    ours = instantiate(spec, 1, 64)
    assert {k: v.shape for k, v in from_bundle.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_vit_run_is_refused_in_one_line():
    from mai_aug.bundle.inference import network_config
    from mai_aug.networks.spec import resolve_network

    spec = resolve_network("vit", {"patch_size": 8}, 3, 1, 32)
    with pytest.raises(MaiAugError, match="cannot be exported yet"):
        network_config({"resolved": {"network": spec.to_dict(), "findings": ["a", "b", "c"]}})


# one trainable network of each family mai-aug train builds (smallest of its family); the others refuse export
EXPORTED = {"densenet": "densenet121", "resnet": "resnet18", "senet": "seresnet50", "efficientnet": "efficientnet-b0"}


def test_every_family_is_exported_or_refused():
    from mai_aug.bundle.inference import UNEXPORTABLE
    from mai_aug.networks.spec import FAMILIES

    assert set(EXPORTED) | set(UNEXPORTABLE) == set(FAMILIES)


@pytest.mark.parametrize("family", list(EXPORTED))
def test_every_family_exports_and_its_bundle_predicts(family, phantom_dir, tmp_path):
    """export-bundle of a 1-step run of each family; the bundle, run by MONAI's ConfigWorkflow, gives predict's
    probabilities (ResNet names its input channels ``n_input_channels``: the export once failed on it)."""
    from monai.bundle import ConfigWorkflow

    datalist = cut_datalist(phantom_dir, tmp_path, training=4, validation=4, test=3)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    train = [*TRAIN, "--batch-size", "4", "--steps-per-epoch", "1", "--network", EXPORTED[family]]
    assert main(["train", "--datalist", str(datalist), "--out", str(run), *train]) == 0
    assert main(["export-bundle", "--run", str(run), "--out", str(bundle)]) == 0
    pngs = [Path(it["image"]) for it in json.loads((run / "datalist.json").read_text())["test"]]
    images = tmp_path / "images"
    images.mkdir()
    for png in pngs:
        shutil.copy(png, images)
    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.yaml"),
                              meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="inference",
                              input_dir=str(images), output_dir=str(tmp_path / "out"), bundle_root=str(bundle))
    workflow.initialize()
    workflow.run()
    assert main(["predict", "--run", str(run), *map(str, sorted(images.iterdir())),
                 "--out", str(tmp_path / "predict.csv")]) == 0
    ours, theirs = by_name(tmp_path / "out" / "predictions.csv"), by_name(tmp_path / "predict.csv")
    assert list(ours.index) == list(theirs.index) == sorted(p.name for p in pngs)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-5)
