"""``--amp`` on CPU: bfloat16 autocast of the network's forward in training and every inference, as trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import cut_datalist
from mai_aug.analyses.trained_run import TrainedRun
from mai_aug.cli import main
from mai_aug.engine.precision import AutocastInferer, engine_precision, inference_dtype, trained_dtype
from mai_aug.settings.fingerprint import differences

TRAIN = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
         "--cache", "none", "--regime", "basic", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def runs(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 32 px run trained twice on CPU from one seed: float32 and ``--amp`` (bfloat16)."""
    folder = tmp_path_factory.mktemp("amp-cpu")
    datalist = cut_datalist(phantom_dir, folder, training=16, validation=8, test=8)
    out = {}
    for name, flag in (("fp32", "--no-amp"), ("bf16", "--amp")):
        out[name] = folder / name
        assert main(["train", "--datalist", str(datalist), "--out", str(out[name]), flag, *TRAIN]) == 0
    return out


class _AutocastProbe:
    """A forward hook noting whether CPU autocast was on, and in which dtype, during each forward."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, torch.dtype]] = []

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))


def test_cpu_amp_trains_records_amp_and_is_another_run(runs):
    resolved = {k: yaml.safe_load((p / "config.yaml").read_text())["resolved"] for k, p in runs.items()}
    assert resolved["bf16"]["amp"] is True and resolved["fp32"]["amp"] is False
    assert resolved["bf16"]["device"] == resolved["fp32"]["device"] == "cpu"
    stored = {k: json.loads((p / "fingerprint.json").read_text()) for k, p in runs.items()}
    assert stored["bf16"]["sha256"] != stored["fp32"]["sha256"]
    assert differences(stored["fp32"]["components"], stored["bf16"]["components"]) == ["amp: False -> True"]
    # the same seed, data and initial weights: only the forward's precision differs, so the trained weights do
    weights = {k: TrainedRun(p, device="cpu").network.state_dict() for k, p in runs.items()}
    assert weights["bf16"].keys() == weights["fp32"].keys()  # the state-dict keys are the bare network's
    assert any(not torch.equal(weights["bf16"][k], weights["fp32"][k]) for k in weights["fp32"])


def test_evaluation_of_a_cpu_amp_run_runs_under_bfloat16(runs):
    run = TrainedRun(runs["bf16"], device="cpu")
    assert run.amp and run.amp_dtype == torch.bfloat16
    probe = _AutocastProbe()
    handle = run.network.register_forward_hook(probe)
    items = json.loads((runs["bf16"] / "datalist.json").read_text())["test"]
    try:
        autocast = run.predict(items)
        run.amp, run.amp_dtype = False, None  # the same checkpoint in float32
        plain = run.predict(items)
    finally:
        handle.remove()
    assert probe.seen[0] == (True, torch.bfloat16) and probe.seen[-1][0] is False
    assert autocast.dtype == np.float64  # logits cast to float64 before the sigmoid, as in float32
    # bfloat16 differs from float32 by more than the bundle test's 1e-5 tolerance: that test sees which ran
    assert 1e-5 < np.abs(autocast - plain).max() < 1e-2
    assert TrainedRun(runs["fp32"], device="cpu").amp is False  # a float32 run stays float32


def test_autocast_covers_the_forward_only():
    probe = _AutocastProbe()
    net = torch.nn.Linear(4, 2)
    net.register_forward_hook(probe)
    out = AutocastInferer()(torch.ones(3, 4), net)
    assert probe.seen == [(True, torch.bfloat16)] and out.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks to the batched stage, loss or metrics around it
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert engine_precision(cpu, False) == {"amp": False}
    assert engine_precision(cuda, True) == {"amp": True, "amp_kwargs": None}  # MONAI's float16 AMP, GradScaler
    assert isinstance(engine_precision(cpu, True)["inferer"], AutocastInferer)


@pytest.mark.parametrize(("raw", "trained", "on_cpu", "on_cuda"), [
    ({"amp": True, "resolved": {"amp": True, "device": "cpu"}}, torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ({"amp": None, "resolved": {"amp": False, "device": "cpu"}}, None, None, None),
    ({"amp": None, "resolved": {"amp": True, "device": "cuda:0"}}, torch.float16, None, torch.float16),
    ({"amp": None}, torch.float16, None, torch.float16),  # older runs: training's default with CUDA
])
def test_inference_autocast_follows_the_run(raw, trained, on_cpu, on_cuda):
    assert trained_dtype(raw) == trained
    assert inference_dtype(trained, torch.device("cpu")) == on_cpu
    assert inference_dtype(trained, torch.device("cuda")) == on_cuda


@pytest.mark.slow
def test_bundle_of_a_cpu_amp_run_gives_predicts_probabilities(runs, tmp_path):
    from test_bundle import by_name, run_monai_bundle

    bundle = tmp_path / "chest"
    assert main(["export-bundle", "--run", str(runs["bf16"]), "--out", str(bundle)]) == 0
    images = [Path(it["image"]) for it in json.loads((runs["bf16"] / "datalist.json").read_text())["test"][:4]]
    (tmp_path / "in").mkdir()
    for image in images:
        (tmp_path / "in" / image.name).write_bytes(image.read_bytes())
    result = run_monai_bundle("run", "--config_file", str(bundle / "configs" / "inference.yaml"),
                              "--meta_file", str(bundle / "configs" / "metadata.json"),
                              "--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"),
                              "--bundle_root", str(bundle))  # run from elsewhere than the bundle folder
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = sorted((tmp_path / "in").glob("*.png"))
    assert main(["predict", "--run", str(runs["bf16"]), *map(str, pngs), "--out", str(tmp_path / "p.csv")]) == 0
    ours, theirs = by_name(tmp_path / "out" / "predictions.csv"), by_name(tmp_path / "p.csv")
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-5)
    assert TrainedRun(runs["bf16"], device="cpu").amp  # predict ran under bfloat16, so the bundle did too
