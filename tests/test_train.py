"""Training and evaluation on MONAI engines, on tiny phantoms (32-48 px, a few steps)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import DenseNet121
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mai_aug.cli import main
from mai_aug.data.nih import FINDINGS
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.networks.build import build_network, torchvision_state_dict

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--batch-size", "16", "--workers", "0", "--quiet", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def datalist(phantom_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dl") / "datalist.json"
    assert main(["split", "--data", str(phantom_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trained_run(datalist, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "basic"
    assert main(["train", "--datalist", str(datalist), "--regime", "complex", "--out", str(run), "--epochs", "2",
                 "--steps-per-epoch", "4", *TINY]) == 0
    return run


def test_done_records_the_runs_compute_cost(trained_run):
    """DONE: the epochs, this session's wall time and the device, for compare's compute-cost table."""
    done = json.loads((trained_run / "DONE").read_text())
    assert done["epochs"] == 2 and done["train_seconds"] > 0 and done["resumed"] is False
    assert done["device"] == f"cpu ({torch.get_num_threads()} threads)"


def scalars(run: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]} | {"_images": acc.Tags()["images"]}


def test_run_folder_and_tensorboard(trained_run):
    for name in ("config.yaml", "metrics.csv", "train.log", "datalist.json", "checkpoints/best.pt"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "checkpoints").glob("last_checkpoint_epoch=2.pt"))
    tags = scalars(trained_run)
    for finding in FINDINGS:
        assert [e.step for e in tags[f"val/auc/{finding}"]] == [1, 2]
    assert "val/auc_macro" in tags and "train/loss" in tags and "train/lr" in tags
    assert "train/augmented_batch" in tags["_images"]
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and list(metrics.columns[4:]) == list(FINDINGS)
    assert np.allclose(metrics["auc_macro"], metrics[list(FINDINGS)].mean(axis=1, skipna=True), atol=1e-5)
    config = (trained_run / "config.yaml").read_text()
    assert "regime: complex" in config and "RandAffined" in config and "device: cpu" in config


def test_first_batch_images_keep_orientation(trained_run):
    acc = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    import io

    from PIL import Image

    event = acc.Images("train/augmented_batch")[0]
    img = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("L"), dtype=float)
    # The phantom's heart sits on the image right: in the lower middle band, right beats left on average over
    # the batch's 32 px tiles (one image's findings or augmentation can hide it).
    tiles = img.reshape(img.shape[0] // 32, 32, img.shape[1] // 32, 32).transpose(0, 2, 1, 3).reshape(-1, 32, 32)
    assert len(tiles) == 16
    assert (tiles[:, 18:26, 17:24].mean(axis=(1, 2)) - tiles[:, 18:26, 8:15].mean(axis=(1, 2))).mean() > 0


def test_resume_continues_at_next_epoch_with_optimizer_state(trained_run, datalist, tmp_path):
    state = torch.load(next((trained_run / "checkpoints").glob("last*.pt")), weights_only=True)
    assert state["trainer"]["iteration"] == 8 and state["optimizer"]["state"]  # 2 epochs x 4 steps
    assert main(["train", "--datalist", str(datalist), "--regime", "complex", "--out", str(trained_run), "--epochs", "3",
                 "--steps-per-epoch", "4", "--resume", *TINY]) == 0
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3]
    log = (trained_run / "train.log").read_text()
    assert "resuming" in log and "after epoch 2" in log
    new = torch.load(next((trained_run / "checkpoints").glob("last*.pt")), weights_only=True)
    assert new["trainer"]["iteration"] == 12
    steps = [s["step"] for s in new["optimizer"]["state"].values()]
    assert float(steps[0]) == 12  # 4 steps x 3 epochs: Adam's state carried over


def test_resume_with_different_config_says_what_differs(trained_run, datalist, capsys):
    assert main(["train", "--datalist", str(datalist), "--regime", "basic", "--out", str(trained_run), "--epochs", "3",
                 "--steps-per-epoch", "4", "--resume", *TINY]) == 2
    err = capsys.readouterr().err
    assert "regime: 'complex' -> 'basic'" in err


def test_same_seed_same_metrics(datalist, tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--datalist", str(datalist), "--regime", "complex", "--out", str(tmp_path / name),
                     "--epochs", "1", "--steps-per-epoch", "3", *TINY]) == 0
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_killed_run_resumes_and_completes(datalist, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "workflows" / "train.py"), "--datalist", str(datalist), "--regime", "basic",
           "--out", str(run), "--epochs", "3", "--steps-per-epoch", "6", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((run / "checkpoints").glob("last*epoch=1.pt")):
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((run / "checkpoints").glob("last*epoch=1.pt")), "no checkpoint before the kill"
    assert main(["train", "--datalist", str(datalist), "--regime", "basic", "--out", str(run), "--epochs", "3",
                 "--steps-per-epoch", "6", "--resume", *TINY]) == 0
    with open(run / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert json.loads((run / "DONE").read_text())["resumed"] is True  # its wall time is the last session's


def test_evaluate_and_predict(trained_run, phantom_dir, tmp_path, capsys):
    assert main(["evaluate", "--run", str(trained_run), "--bootstrap", "200"]) == 0
    table = pd.read_csv(trained_run / "eval" / "test_auc.csv")
    assert table["finding"].tolist() == [*FINDINGS, "macro"]
    ok = table["ci_low"].notna()  # findings with too few positive patients get no interval
    assert ok.any() and ((table.loc[ok, "ci_low"] <= table.loc[ok, "auc"]) & (table.loc[ok, "auc"] <= table.loc[ok, "ci_high"])).all()
    assert (trained_run / "eval" / "test_roc.png").stat().st_size > 10_000
    preds = pd.read_csv(trained_run / "eval" / "test_predictions.csv")
    assert len(preds) == table.loc[0, "positives"] + table.loc[0, "negatives"]
    images = sorted((phantom_dir / "images").glob("*.png"))[:3]
    out = tmp_path / "p.csv"
    assert main(["predict", "--run", str(trained_run), *map(str, images), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image", *FINDINGS] and len(frame) == 3
    assert ((frame[list(FINDINGS)] > 0) & (frame[list(FINDINGS)] < 1)).all().all()


def test_bad_checkpoints_are_clear_errors(trained_run, tmp_path, capsys):
    truncated = tmp_path / "trunc.pt"
    data = (trained_run / "checkpoints" / "best.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert main(["evaluate", "--run", str(trained_run), "--checkpoint", str(truncated)]) == 2
    assert "truncated" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, other)
    assert main(["evaluate", "--run", str(trained_run), "--checkpoint", str(other)]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_bad_training_input(datalist, tmp_path, capsys):
    base = ["train", "--datalist", str(datalist), "--out", str(tmp_path / "r"), "--epochs", "1"]
    assert main([*base, "--regime", "nope", "--quiet"]) == 2
    assert "unknown regime 'nope'" in capsys.readouterr().err
    assert main([*base, "--image-size", "16", "--quiet"]) == 2
    assert "at least 32" in capsys.readouterr().err
    assert main([*base, "--image-size", "32", "--batch-size", "60000", "--quiet"]) == 2
    assert "larger than the training split" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--image-size", "32", "--device", "cuda", "--quiet"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_empty_validation_split(phantom_dir, tmp_path, capsys):
    assert main(["train", "--data", str(phantom_dir), "--val-frac", "0", "--out", str(tmp_path / "r"),
                 "--image-size", "32", "--quiet"]) == 2
    assert "validation split is empty" in capsys.readouterr().err


def test_nan_loss_stops_with_message(datalist, tmp_path, capsys):
    bad = tmp_path / "nan.yaml"
    bad.write_text("regimes:\n  poison:\n    random:\n      - {_target_: Lambdad, keys: image, func: \"$lambda x: x * float('nan')\"}\n")
    run = tmp_path / "nan"
    assert main(["train", "--datalist", str(datalist), "--regime", "poison", "--regimes-file", str(bad), "--out", str(run),
                 "--trust-config", "--epochs", "1", "--steps-per-epoch", "3", *TINY]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "Traceback" not in err
    assert not list((run / "checkpoints").glob("*.pt"))


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("old_format", [False, True])
def test_local_torchvision_weights_load_with_count(tmp_path, in_channels, old_format):
    source = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000)
    path = tmp_path / "densenet121.pth"
    torch.save(torchvision_state_dict(source, old_format=old_format), path)
    net, report = build_network(14, in_channels, str(path))
    assert report.loaded == report.total - 2 and report.skipped == ["classifier.bias", "classifier.weight"]
    expected = source.features.conv0.weight
    if in_channels == 1:
        expected = expected.sum(dim=1, keepdim=True)
    assert torch.equal(net.features.conv0.weight, expected)
    assert torch.equal(net.features.denseblock4.denselayer16.layers.conv2.weight,
                       source.features.denseblock4.denselayer16.layers.conv2.weight)


def test_pretrained_file_that_is_not_densenet(tmp_path, datalist, capsys):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)
    assert main(["train", "--datalist", str(datalist), "--out", str(tmp_path / "r"), "--pretrained", str(path),
                 "--image-size", "32", "--quiet"]) == 2
    assert "feature tensors match" in capsys.readouterr().err


def test_weighted_loss_balances_classes():
    freq = np.array([0.1, 0.5])
    loss = WeightedBCEWithLogits(freq)
    logits = torch.zeros(10, 2)
    target = torch.tensor([[1.0, 1.0]] + [[0.0, 0.0]] * 9)
    # Per finding, positives contribute freq_neg * n_pos and negatives freq_pos * n_neg.
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = torch.where(target == 1, torch.tensor(1 - freq, dtype=torch.float32), torch.tensor(freq, dtype=torch.float32))
    assert torch.isclose(loss(logits, target), (per * w).mean())
    pos_part = (per * w)[:, 0][target[:, 0] == 1].sum()
    neg_part = (per * w)[:, 0][target[:, 0] == 0].sum()
    assert torch.isclose(pos_part, neg_part)  # 1 positive x 0.9 == 9 negatives x 0.1
    assert torch.isclose(WeightedBCEWithLogits(None)(logits, target), per.mean())


def test_train_prints_the_split_table_once(datalist, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--datalist", str(datalist), "--out", str(run), "--epochs", "1", "--steps-per-epoch", "1",
                 *[a for a in TINY if a != "--quiet"]]) == 0
    header = [line for line in capsys.readouterr().err.splitlines() if line.split()[:1] == ["images"]]
    assert len(header) == 1
    assert (run / "train.log").read_text().count("INFO split:") == 1


def test_file_only_records_stay_off_the_terminal(tmp_path, capsys):
    """How a study's runs keep the split table (printed once by compare) in train.log only."""
    from mai_aug.core.logs import FILE_ONLY, RunLog

    with RunLog(tmp_path / "train.log") as logger:
        logger.info("split: table", extra=FILE_ONLY)
        logger.info("on both")
    err = capsys.readouterr().err
    assert "on both" in err and "split: table" not in err
    assert "split: table" in (tmp_path / "train.log").read_text()
