"""The training step's options: resolved per device, applied to the network and Adam, recorded with the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import DenseNet

from mai_aug.cli import main
from mai_aug.core.devices import StepOptions, resolve_step
from mai_aug.engine.step import make_adam, prepare_network

TINY = ["--image-size", "32", "--batch-size", "16", "--workers", "0", "--quiet", "--lr", "1e-3", "--epochs", "1",
        "--steps-per-epoch", "3", "--network", "densenet",
        "--network-args", "{init_features: 8, growth_rate: 4, block_config: [2, 2]}"]


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return DenseNet(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(2, 2))


def test_unset_options_are_on_with_cuda_off_on_cpu_and_a_given_one_wins():
    assert resolve_step(None, None, "off", torch.device("cpu")) == StepOptions(False, False, "off")
    assert resolve_step(None, None, "off", torch.device("cuda")) == StepOptions(True, True, "off")
    assert resolve_step(True, False, "reduce-overhead", torch.device("cpu")) == StepOptions(True, False, "reduce-overhead")


def test_channels_last_and_compile_keep_the_state_dict_and_the_outputs():
    plain, keys = tiny_net(), list(tiny_net().state_dict())
    fast = prepare_network(tiny_net(), StepOptions(channels_last=True, fused_adam=False, compile="default"))
    assert list(fast.state_dict()) == keys  # compiled in place: checkpoints keep their keys
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1
                and m.weight.shape[1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    nhwc = prepare_network(tiny_net(), StepOptions(channels_last=True, fused_adam=False)).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # the same function in another memory order (the compiled forward is not run: minutes)
        torch.testing.assert_close(nhwc(x), plain.eval()(x), rtol=1e-4, atol=1e-5)


def test_fused_adam_takes_the_unfused_step():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 32, 32), (torch.rand(4, 3) < 0.5).float()
    weights = []
    for fused in (False, True):
        net = tiny_net()
        optimizer = make_adam(net.parameters(), 1e-3, 0.0, StepOptions(False, fused))
        assert bool(optimizer.defaults.get("fused")) is fused
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    moved = (weights[0] - torch.cat([p.detach().flatten() for p in tiny_net().parameters()])).abs().max()
    assert moved > 2e-3  # three steps of lr 1e-3 moved the weights; the kernels agree to a quarter of one step
    # (Adam divides by sqrt(v): a weight whose gradient is near zero amplifies float rounding, 1.3e-4 seen at 1 thread)
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=2.5e-4)


def test_a_run_records_its_step_options_in_its_identity(phantom_dir, tmp_path):
    datalist = tmp_path / "datalist.json"
    assert main(["split", "--data", str(phantom_dir), "--out", str(datalist)]) == 0
    runs = {}
    for name, flags in (("plain", []), ("fast", ["--channels-last", "--fused-adam"])):
        run = tmp_path / name
        assert main(["train", "--datalist", str(datalist), "--regime", "none", "--out", str(run), *TINY, *flags]) == 0
        runs[name] = run
    resolved = yaml.safe_load((runs["fast"] / "config.yaml").read_text())["resolved"]
    assert resolved["channels_last"] is True and resolved["fused_adam"] is True and resolved["compile"] == "off"
    settings = {name: json.loads((run / "fingerprint.json").read_text())["components"]["settings"]
                for name, run in runs.items()}
    assert settings["plain"]["channels_last"] is False and settings["fast"]["channels_last"] is True
    assert {k for k in settings["plain"] if settings["plain"][k] != settings["fast"][k]} == {"channels_last",
                                                                                               "fused_adam"}
    metrics = {name: (Path(run) / "metrics.csv").read_text().splitlines()[1] for name, run in runs.items()}
    assert metrics["plain"].split(",")[0] == metrics["fast"].split(",")[0]  # the same epoch, trained both ways


@pytest.mark.parametrize("flag", ["--compile fast", "--channels-last=yes"])
def test_bad_step_options_are_one_line(flag, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--regime", "none", "--out", str(tmp_path / "r"), *flag.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--compile" in err[0] or "--channels-last" in err[0]), err
