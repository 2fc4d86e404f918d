"""``mai-aug saliency``: the pointing game, box mapping into the network input, and a tiny phantom run's outputs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import DenseNet121, resnet18
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mai_aug.analyses.saliency.run import check_geometry, target_layer
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.boxes import read_boxes
from mai_aug.data.loader import build_dataset
from mai_aug.stats.pointing import box_distance, chance_of_hit, hit_rate_table, map_box, pointing_hit
from mai_aug.transforms.regimes import load_regime

SIZE = 64  # DenseNet121's last feature map is 2x2 here: the smallest size where a peak has a place


def gaussian_map(col: float, row: float, size: int = 32, sigma: float = 2.0) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return np.exp(-((cols - col) ** 2 + (rows - row) ** 2) / (2 * sigma**2))


def test_pointing_game_scores_a_peak_inside_the_box_as_hit_and_outside_as_miss():
    box = (8.0, 10.0, 6.0, 4.0)  # x, y, w, h: columns 8-13, rows 10-13
    hit, col, row, distance = pointing_hit(gaussian_map(11, 12), [box], tolerance=0.0)
    assert hit and (col, row) == (11, 12) and distance == 0.0
    miss, col, row, distance = pointing_hit(gaussian_map(25, 12), [box], tolerance=0.0)
    assert not miss and (col, row) == (25, 12) and distance == pytest.approx(25.5 - 14.0)
    # one of several boxes is enough; the peak's row matters as much as its column
    assert pointing_hit(gaussian_map(25, 12), [box, (24.0, 11.0, 3.0, 3.0)], 0.0)[0]
    assert not pointing_hit(gaussian_map(11, 2), [box], 0.0)[0]
    # a constant map (all zero after Grad-CAM's ReLU) has no peak: a miss even where its first pixel is in a box
    assert not pointing_hit(np.zeros((32, 32)), [(0.0, 0.0, 4.0, 4.0)], 0.0)[0]


def test_tolerance_edge():
    box = (10.0, 10.0, 5.0, 5.0)
    saliency = gaussian_map(17, 12)  # pixel centre 17.5: 2.5 px right of the box's edge at 15
    assert box_distance((17, 12), box) == pytest.approx(2.5)
    assert pointing_hit(saliency, [box], tolerance=2.5)[0]
    assert not pointing_hit(saliency, [box], tolerance=2.49)[0]
    diagonal = gaussian_map(17, 17)  # 2.5 px right and 2.5 px below a corner: sqrt(2) x 2.5 away
    assert not pointing_hit(diagonal, [box], tolerance=3.5)[0] and pointing_hit(diagonal, [box], tolerance=3.6)[0]


def test_bright_rectangle_and_its_mapped_box_coincide_after_the_runs_transforms(tmp_path):
    """A wide image with a bright rectangle, through a regime's load (resize without keeping aspect) and
    deterministic part: the bright input pixels are the mapped box's pixels, not mirrored nor transposed."""
    width, height, box = 120, 80, (70.0, 20.0, 30.0, 40.0)  # right of centre, touching neither edge
    pixels = np.full((height, width), 40, np.uint8)
    pixels[20:60, 70:100] = 230
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    regime = load_regime("basic", image_size=32)
    image = build_dataset([{"image": str(tmp_path / "wide.png"), "label": [0]}], regime, False, cache="none")[0]
    image = torch.as_tensor(image["image"])[0].numpy()
    x, y, w, h = map_box(box, (width, height), (32, 32))
    assert (x, y, w, h) == pytest.approx((70 * 32 / 120, 20 * 32 / 80, 30 * 32 / 120, 40 * 32 / 80))
    bright = image > (image.max() + image.min()) / 2
    rows, cols = np.nonzero(bright)
    centres = np.stack([cols + 0.5, rows + 0.5], 1)
    assert all(box_distance((c, r), (x, y, w, h)) <= 0.5 for c, r in zip(cols, rows))  # no bright pixel outside
    inside = [(c, r) for r in range(32) for c in range(32) if x + 1 <= c + 0.5 <= x + w - 1 and y + 1 <= r + 0.5 <= y + h - 1]
    assert inside and all(bright[r, c] for c, r in inside)  # and the box's interior is bright
    assert centres[:, 0].mean() > 16  # on the image right, where the file has it
    assert check_geometry(regime, 32, (width, height), "test") > 0.99


def test_geometry_check_refuses_a_regime_that_turns_the_image(tmp_path):
    spec = tmp_path / "turn.yaml"
    spec.write_text("regimes:\n  turn:\n    deterministic:\n      - {_target_: Rotate90d, keys: image}\n")
    regime = load_regime("turn", image_size=32, regimes_files=[spec])
    with pytest.raises(MaiAugError, match="moves pixels"):
        check_geometry(regime, 32, (48, 40), "--run x")


def test_target_layer_defaults_and_a_bad_name():
    x = torch.zeros(1, 1, SIZE, SIZE)
    dense = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).eval()
    assert target_layer(dense, x) == "class_layers.relu"  # MONAI's Grad-CAM example layer
    assert target_layer(resnet18(spatial_dims=2, n_input_channels=1, num_classes=3).eval(), x) == "layer4"
    assert target_layer(dense, x, "features.denseblock4") == "features.denseblock4"
    with pytest.raises(MaiAugError, match="`target_layer` 'nope'"):
        target_layer(dense, x, "nope")


def test_chance_is_the_share_of_pixel_centres_near_a_box():
    assert chance_of_hit([(0.0, 0.0, 8.0, 4.0)], 16, 0.0) == pytest.approx(32 / 256)
    assert chance_of_hit([(0.0, 0.0, 8.0, 4.0), (0.0, 0.0, 4.0, 8.0)], 16, 0.0) == pytest.approx(48 / 256)
    assert chance_of_hit([(4.0, 4.0, 2.0, 2.0)], 16, 1.0) == pytest.approx(16 / 256)  # 2x2 box grown by one pixel


def test_hit_rates_and_patient_intervals():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 2)
    hits = np.full((80, 3), np.nan)
    hits[:, 0] = rng.random(80) < 0.7
    hits[:8, 1] = 1.0  # 4 patients: no interval
    table = hit_rate_table(hits, patients, ["A", "B", "C"], n_boot=300, seed=1)
    assert list(table["finding"]) == ["A", "B"]  # C has no box
    a, b = table.iloc[0], table.iloc[1]
    assert a["hit_rate"] == pytest.approx(np.mean(hits[:, 0])) and a["n_images"] == 80 and a["n_patients"] == 40
    assert a["ci_low"] < a["hit_rate"] < a["ci_high"]
    assert 0.15 < a["ci_high"] - a["ci_low"] < 0.45  # about 2 x 1.96 x sqrt(0.21 / 40 patients) (pairs of images)
    assert b["hit_rate"] == 1.0 and not b["scored"] and np.isnan(b["ci_low"]) and b["n_patients"] == 4


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory) -> Path:
    from conftest import cut_datalist

    folder = tmp_path_factory.mktemp("sal")
    datalist = cut_datalist(phantom_dir, folder, training=48, validation=16, test=60)
    out = folder / "run"
    assert main(["train", "--datalist", str(datalist), "--regime", "basic", "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--image-size", str(SIZE), "--batch-size", "16", "--workers", "0",
                 "--quiet"]) == 0
    return out


def test_tiny_run_writes_every_output(run, phantom_dir, capsys):
    assert main(["saliency", "--run", str(run), "--bootstrap", "200", "--max-images", "20"]) == 0
    printed = capsys.readouterr().out
    out = run / "saliency"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target_layer"] == "class_layers.relu" and meta["feature_map"] == [2, 2]
    assert meta["tolerance_px"] == pytest.approx(0.025 * SIZE) and meta["tolerance"].startswith("default")
    assert meta["checkpoint"] == "best.pt" and meta["geometry_probe_corr"]["64x64"] > 0.99
    pointing = pd.read_csv(out / "pointing.csv")
    assert {"image", "finding", "hit", "peak_x", "peak_y"} <= set(pointing.columns)
    assert pointing["image"].nunique() == 20 and set(pointing["hit"]) <= {0, 1}
    assert pointing[["peak_x", "peak_y"]].stack().between(0, SIZE - 1).all()
    # the hits follow from the peaks, the phantom's boxes scaled to the input (the phantom is 64 px) and the tolerance
    boxes = read_boxes(phantom_dir / "BBox_List_2017.csv")
    for r in pointing.itertuples():
        own = boxes[(boxes["image"] == r.image) & (boxes["finding"] == r.finding)][["x", "y", "w", "h"]].to_numpy()
        assert len(own) == r.boxes
        near = min(box_distance((r.peak_x, r.peak_y), b) for b in own)
        assert r.hit == int(near <= meta["tolerance_px"] and not r.flat_map)
    rates = pd.read_csv(out / "hit_rate.csv")
    assert rates["n_images"].sum() == len(pointing) and rates["hit_rate"].between(0, 1).all()
    assert rates["chance"].between(0, 1).all() and pointing["chance"].gt(0).all()
    assert (rates["hits"] == pointing.groupby("finding")["hit"].sum().reindex(rates["finding"]).to_numpy()).all()
    assert (out / "grid.png").stat().st_size > 10_000
    assert "# Pointing game" in (out / "summary.md").read_text() and "hit_rate.csv" in printed
    if (pointing["finding"] == "Cardiomegaly").any():
        assert meta["orientation"]["sentence"].startswith("Cardiomegaly:")
        assert "Cardiomegaly:" in printed
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "saliency/grid" in events.Tags()["images"]


def test_bad_input_is_one_line(run, tmp_path, capsys):
    no_best = tmp_path / "no-best"
    shutil.copytree(run, no_best, ignore=shutil.ignore_patterns("best.pt", "saliency", "tensorboard", "cache"))
    assert main(["saliency", "--run", str(no_best)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "best.pt not found" in err

    assert main(["saliency", "--run", str(run), "--boxes", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.csv: no such box file" in err

    bad = tmp_path / "bad.csv"
    bad.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Mass,1,2,abc,4\n")
    assert main(["saliency", "--run", str(run), "--boxes", str(bad)]) == 2
    assert "bad.csv: row 2, column w: 'abc' is not a positive number" in capsys.readouterr().err

    # a dataset without a box list: the run's test images copied to a folder that has none
    moved = tmp_path / "moved"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("saliency", "tensorboard", "cache"))
    datalist = json.loads((moved / "datalist.json").read_text())
    (tmp_path / "plain" / "images").mkdir(parents=True)
    for item in datalist["test"]:
        item["image"] = str(shutil.copy(item["image"], tmp_path / "plain" / "images"))
    (moved / "datalist.json").write_text(json.dumps(datalist))
    assert main(["saliency", "--run", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no BBox_List_2017.csv" in err and "--boxes" in err


def test_compare_saliency_pairs_identical_regimes(phantom_dir, tmp_path, capsys):
    """``basic-copy`` is ``basic`` under another name; ``none`` is the baseline they are compared with."""
    copy = tmp_path / "copy.yaml"
    copy.write_text('regimes:\n  basic-copy: "%regimes#basic"\n')
    preset = tmp_path / "tiny.yaml"  # the demo's training on a small DenseNet: its map is 8x8 at 64 px, no --saliency-force
    preset.write_text("data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}\n"
                      "train: {batch_size: 16, lr: 1.0e-3, pretrained: none, in_channels: 1, workers: 0, cache: store,\n"
                      "        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n")
    out = tmp_path / "out"
    argv = ["compare", "--data", str(phantom_dir), "--preset", str(preset), "--regimes", "none", "basic", "basic-copy",
            "--regimes-file", str(copy), "--image-size", str(SIZE), "--epochs", "1", "--steps-per-epoch", "2",
            "--workers", "0", "--bootstrap", "200", "--quiet", "--out", str(out), "--saliency",
            "--saliency-max-images", "24"]
    assert main(argv) == 0, capsys.readouterr().err[-1500:]
    assert capsys.readouterr().err.count("saliency of") == 3
    summary = pd.read_csv(out / "saliency.csv")
    basic, twin = (summary[summary["regime"] == r].reset_index(drop=True) for r in ("basic", "basic-copy"))
    assert basic["finding"].iloc[0] == "macro" and len(basic) > 2
    pd.testing.assert_series_equal(basic["hit_rate"], twin["hit_rate"])  # the same network: the same maps
    assert np.allclose(twin["diff_vs_none"], basic["diff_vs_none"])
    scored = twin["diff_ci_low"].notna()
    assert scored.any() and np.allclose(twin.loc[scored, "diff_ci_low"], basic.loc[scored, "diff_ci_low"])
    pointing = pd.read_csv(out / "basic" / "seed-0" / "saliency" / "pointing.csv")
    rates = pointing.groupby("finding")["hit"].mean()
    assert np.allclose(basic.set_index("finding").loc[rates.index, "hit_rate"], rates)
    report = (out / "report.md").read_text()
    assert "## Saliency: pointing game" in report and "![Grad-CAM grid basic-copy](basic-copy/seed-0/saliency/grid.png)" in report
    assert report.count("Cardiomegaly: ") >= 2 or "no Cardiomegaly box" in report
    shows = report.split("## What this study shows")[1].split("\n## ")[0]  # the macro hit-rate difference
    macro = twin[twin["finding"] == "macro"].iloc[0]
    if np.isfinite(macro["diff_ci_low"]):
        assert f"pointing game (macro hit rate): {macro['diff_vs_none']:+.3f} [{macro['diff_ci_low']:+.3f}" in shows
    assert main(argv) == 0
    assert "saliency of" not in capsys.readouterr().err  # current ones are reused
    assert main(["compare", "--data", str(phantom_dir), "--out", str(tmp_path / "o2"), "--saliency-tolerance", "2"]) == 2
    assert "need --saliency" in capsys.readouterr().err


def test_read_boxes_in_nihs_layout(tmp_path):
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                    "00013118_008.png,Atelectasis,225.0847457627119,547.0192837465565,86.77966101694915,79.1864406779\n"
                    "00014716_007.png,Infiltrate,10,20,30,40\n")
    boxes = read_boxes(path)
    assert list(boxes.columns) == ["image", "finding", "x", "y", "w", "h"]
    assert boxes["finding"].tolist() == ["Atelectasis", "Infiltration"]  # NIH's own spelling of Infiltration
    assert boxes.iloc[0][["x", "y", "w", "h"]].tolist() == pytest.approx([225.0847, 547.0193, 86.7797, 79.1864], abs=1e-4)


@pytest.mark.parametrize(("network", "side", "layer", "feature"), [("resnet18", 64, "layer4", (2, 2)),
                                                                  ("resnet18", 256, "layer4", (8, 8)),
                                                                  ("densenet121", 64, "class_layers.relu", (2, 2))])
def test_dry_forward_gives_the_map_size(network, side, layer, feature):
    from mai_aug.analyses.saliency.resolution import check_saliency_map, dry_map_size, needed_side
    from mai_aug.settings.config import TrainConfig

    config = TrainConfig(out="unused", network=network, image_size=side)
    assert dry_map_size(config) == (layer, feature)
    assert needed_side(feature, side) == 256
    check_saliency_map(config, force=True)  # forced: never refused
    if feature == (2, 2):
        with pytest.raises(MaiAugError, match=f"is 2x2 at `image_size` {side}.*`image_size` 256 gives 8x8"):
            check_saliency_map(config)
    else:
        check_saliency_map(config)


def test_saliency_warns_in_one_line_when_the_map_is_below_8x8(run, caplog):
    with caplog.at_level(logging.WARNING, logger="mai_aug"):
        assert main(["saliency", "--run", str(run), "--bootstrap", "200", "--max-images", "4"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Grad-CAM's map" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "(class_layers.relu of densenet121) is 2x2 at `image_size` 64" in warned[0]
    assert "`image_size` 256 gives 8x8" in warned[0]
