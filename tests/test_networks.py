"""Networks as configuration: any 2D classifier of monai.networks.nets by name or _target_, checked, pretrained."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from monai.networks.nets import ResNet, resnet18

from conftest import cut_datalist
from mai_aug.analyses.trained_run import TrainedRun
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.networks.build import build_network
from mai_aug.networks.spec import resolve_network
from mai_aug.settings.config import TrainConfig
from mai_aug.settings.fingerprint import components, differences
from mai_aug.settings.presets import check_preset

TINY = ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
        "--quiet"]


@pytest.fixture(scope="module")
def small_datalist(phantom_dir, tmp_path_factory) -> Path:
    return cut_datalist(phantom_dir, tmp_path_factory.mktemp("networks"), training=32, validation=32, test=64)


@pytest.fixture(scope="module")
def resnet_run(small_datalist, tmp_path_factory) -> Path:
    """A run trained with ``--network ResNet18`` (any case names the same network)."""
    run = tmp_path_factory.mktemp("net-runs") / "resnet"
    assert main(["train", "--datalist", str(small_datalist), "--network", "ResNet18", "--out", str(run), *TINY]) == 0
    return run


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_resnet18_trains_records_its_network_and_evaluates(resnet_run, capsys):
    config = yaml.safe_load((resnet_run / "config.yaml").read_text())
    assert config["network"] == "resnet18"  # the registry's name, not the spelling given
    stored = config["resolved"]["network"]
    assert stored["target"] == "monai.networks.nets.resnet18" and stored["family"] == "resnet"
    assert stored["args"]["n_input_channels"] == 1 and stored["args"]["num_classes"] == 14
    fingerprint = json.loads((resnet_run / "fingerprint.json").read_text())
    assert fingerprint["components"]["settings"]["network"] == "resnet18"
    assert isinstance(TrainedRun(resnet_run).network, ResNet)  # evaluate rebuilds it from the stored spec
    assert main(["evaluate", "--run", str(resnet_run), "--bootstrap", "200"]) == 0
    assert len(pd.read_csv(resnet_run / "eval" / "test_predictions.csv")) == 64


def test_efficientnet_trains_and_evaluates(small_datalist, tmp_path):
    run = tmp_path / "effnet"
    assert main(["train", "--datalist", str(small_datalist), "--network", "efficientnet-b0", "--out", str(run),
                 *TINY]) == 0
    stored = yaml.safe_load((run / "config.yaml").read_text())["resolved"]["network"]
    assert stored["args"]["model_name"] == "efficientnet-b0" and stored["args"]["pretrained"] is False
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--bootstrap", "200"]) == 0


def test_evaluate_refuses_a_stored_network_outside_monai(resnet_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.yaml", "datalist.json"):
        (copy / name).write_bytes((resnet_run / name).read_bytes())
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "best.pt").write_bytes((resnet_run / "checkpoints" / "best.pt").read_bytes())
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["resolved"]["network"]["target"] = "os.system"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", "--run", str(copy), "--bootstrap", "200"]) == 2
    err = one_error_line(capsys)
    assert "resolved.network.target 'os.system'" in err and "--trust-config" in err


def torchvision_resnet18_keys() -> list[str]:
    """torchvision's resnet18 state-dict names, written from its architecture (torchvision is not installed)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{b}" for b in bn)]
    for layer in range(1, 5):
        for block in range(2):
            at = f"layer{layer}.{block}"
            keys += [f"{at}.conv1.weight", *(f"{at}.bn1.{b}" for b in bn), f"{at}.conv2.weight", *(f"{at}.bn2.{b}" for b in bn)]
            if layer > 1 and block == 0:  # stride 2: a bias-free 1x1 convolution and batch norm on the shortcut
                keys += [f"{at}.downsample.0.weight", *(f"{at}.downsample.1.{b}" for b in bn)]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("in_channels", [1, 3])
def test_local_resnet18_weights_load_with_count(tmp_path, in_channels):
    # an ImageNet-shaped source in torchvision's layout: 3 channels, 1000 classes, torchvision's stem and shortcuts
    source = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000, conv1_t_stride=2, bias_downsample=False)
    state = source.state_dict()
    assert sorted(state) == sorted(torchvision_resnet18_keys())
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as saved from DataParallel
    spec = resolve_network("resnet18", {}, 14, in_channels, 32)
    net, report = build_network(14, in_channels, str(path), spec, 32)
    assert report.loaded == report.total - 2 == len(state) - 2 and report.skipped == ["fc.bias", "fc.weight"]
    expected = source.conv1.weight if in_channels == 3 else source.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.equal(net.conv1.weight, expected)
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(net.layer2[0].downsample[1].running_mean, source.layer2[0].downsample[1].running_mean)


def test_weights_of_another_network_are_refused(tmp_path, small_datalist, capsys):
    path = tmp_path / "resnet34.pth"
    torch.save(resolve_and_build("resnet34", 3).state_dict(), path)  # basic blocks: resnet50 has bottlenecks
    assert main(["train", "--datalist", str(small_datalist), "--network", "resnet50", "--pretrained", str(path),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "resnet50 feature tensors match" in one_error_line(capsys)


def resolve_and_build(name: str, in_channels: int = 1, size: int = 32, **args) -> torch.nn.Module:
    return build_network(14, in_channels, "none", resolve_network(name, args, 14, in_channels, size), size)[0]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--network", "resnt18"], "did you mean resnet18"),
    (["--network", "DenseNet-12"], "did you mean densenet121"),
    (["--network", "vit", "--image-size", "40"], "--image-size 40 is not a multiple of patch_size 16"),
    (["--network", "vit", "--network-args", "{patch_size: 12}"], "--image-size 32 is not a multiple of patch_size 12"),
    (["--network", "resnet18", "--network-args", "{num_classes: 10}"], "network_args.num_classes is 10 but must be 14"),
    (["--network", "densenet121", "--network-args", "{spatial_dims: 3}"], "network_args.spatial_dims is 3"),
    (["--network", "resnet18", "--network-args", "{feed_forward: false}"], "gives (1, 512) for one 32 px image"),
    (["--network", "efficientnet-b0", "--pretrained", "imagenet"], "weights load only into the DenseNet and ResNet"),
    (["--network", "os.system"], "_target_ is not a class of monai.networks.nets"),
    (["--network", "monai.networks.nets.UNet"], "not a 2D classifier of monai.networks.nets"),
    (["--network", "densenet121", "--network-args", "{act: \"$print(1)\"}"], "'$' expression"),
])
def test_bad_networks_are_one_line_errors(small_datalist, tmp_path, capsys, argv, fragment):
    size = [] if "--image-size" in argv else ["--image-size", "32"]
    rest = [a for a in TINY if a not in ("--image-size", "32")]
    code = main(["train", "--datalist", str(small_datalist), "--out", str(tmp_path / "bad"), *argv, *size, *rest])
    assert code == 2
    assert fragment in one_error_line(capsys)
    assert not list((tmp_path / "bad").glob("checkpoints/*.pt"))


def test_network_too_deep_for_the_image_size_is_one_line():
    # DenseNet121 halves 16 px five times: its last transition pools a 1 px map
    with pytest.raises(MaiAugError, match=r"`network` densenet121 cannot take 1-channel 16 px images \(") as e:
        resolve_and_build("densenet121", size=16)
    assert "\n" not in str(e.value)


def test_trusted_target_outside_monai_is_built(tmp_path):
    with pytest.raises(MaiAugError, match=r"_target_ is not a class of monai.networks.nets"):
        resolve_network("torch.nn.Flatten", {}, 14, 1, 32)
    # trusted: instantiated as given (no adapter), then held to the (1, 14) contract by the dry forward
    spec = resolve_network("torch.nn.Flatten", {}, 14, 1, 32, trust=True)
    with pytest.raises(MaiAugError, match=r"gives \(1, 1024\) for one 32 px image, expected \(1, 14\)"):
        build_network(14, 1, "none", spec, 32, trust=True)


def test_preset_network_forms(tmp_path, capsys):
    by_target = {"train": {"network": {"_target_": "monai.networks.nets.ResNet", "block": "basic",
                                       "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64]}}}
    train = check_preset(by_target, "mine")["train"]
    assert train["network"] == "monai.networks.nets.ResNet" and train["network_args"]["layers"] == [1, 1, 1, 1]
    config = TrainConfig.from_dict({"out": "x", **train})
    assert config.network == "resnet"
    net = resolve_and_build(config.network, **config.network_args)
    assert net.layer1[0].conv1.out_channels == 8 and net.conv1.stride == (2, 2)
    by_name = check_preset({"train": {"network": {"name": "SEResNet50", "args": {"reduction": 8}}}}, "mine")["train"]
    assert TrainConfig.from_dict({"out": "x", **by_name}).network == "seresnet50"
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "PWNED"
    evil.write_text(textwrap.dedent(f"""
        train:
          network: {{_target_: os.system, command: "touch {marker}"}}
        """))
    assert main(["compare", "--preset", str(evil), "--out", str(tmp_path / "cmp")]) == 2
    assert "train.network os.system: _target_ is not a class of monai.networks.nets" in one_error_line(capsys)
    assert not marker.exists()


def test_network_is_part_of_the_run_identity():
    base = components(TrainConfig(out="a"), {}, {})
    assert components(TrainConfig(out="a", network="DenseNet121"), {}, {}) == base
    other = components(TrainConfig(out="a", network="resnet18"), {}, {})
    assert "network: 'densenet121' -> 'resnet18'" in differences(base, other)
    wider = components(TrainConfig(out="a", network="resnet18", network_args={"widen_factor": 2.0}), {}, {})
    assert any(d.startswith("network_args:") for d in differences(other, wider))


@pytest.mark.skipif(importlib.util.find_spec("einops") is None, reason="MONAI's ViT needs einops")
def test_small_vit_trains(small_datalist, tmp_path):
    run = tmp_path / "vit"
    args = "{patch_size: 8, hidden_size: 32, mlp_dim: 64, num_layers: 1, num_heads: 2}"
    assert main(["train", "--datalist", str(small_datalist), "--network", "ViT", "--network-args", args,
                 "--out", str(run), *TINY]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["resolved"]["network"]["args"]["img_size"] == 32


def test_resume_rebuilds_the_stored_network_and_refuses_another(small_datalist, tmp_path, capsys):
    run = tmp_path / "resume"
    args = ["train", "--datalist", str(small_datalist), "--network", "resnet10", "--out", str(run), *TINY]
    assert main(args) == 0
    assert main([*args, "--network", "densenet121", "--resume"]) == 2
    assert "network: 'resnet10' -> 'densenet121'" in one_error_line(capsys)
    assert main([*args, "--epochs", "2", "--resume"]) == 0  # the later --epochs wins
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]


def test_compare_network_override_leaves_the_presets_args(capsys):
    from mai_aug.study.compare import _override_network

    preset = {"network": "vit", "network_args": {"patch_size": 8}}
    same = dict(preset)
    _override_network(same, preset, "ViT")
    assert same["network_args"] == {"patch_size": 8}
    other = {**preset, "network": "resnet18"}
    _override_network(other, preset, "resnet18")
    assert "network_args" not in other and "network_args are not used" in capsys.readouterr().err
    with pytest.raises(MaiAugError, match="did you mean resnet18"):
        _override_network(dict(preset), preset, "resnet-81")
