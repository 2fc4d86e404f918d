"""The batched device stage against MONAI's own per-sample transforms: outputs, draws, orientation, training.

Tolerance: for fixed parameters the stage's output and MONAI's differ by at most 1e-4 (max abs) on [0, 1]
images (measured: under 1e-6; MONAI's RandAffine resamples in float64, the stage in float32). Eager zooms are
compared on the interior (2 px from the edge), where MONAI's pad-after-zoom and grid_sample's border agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import (
    AdjustContrast,
    Affine,
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandRotated,
    RandZoomd,
    Rotate,
    Zoom,
)
from scipy.stats import binomtest, ks_2samp

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.loader import build_dataset
from mai_aug.engine import train as train_module
from mai_aug.transforms.batched import BatchedStage, Resample, choose_stage, compile_regime, compile_transforms
from mai_aug.transforms.batched_affine import AffineDraw, RotateDraw, ZoomDraw
from mai_aug.transforms.probe import looks_mirrored, probe_pattern
from mai_aug.transforms.regimes import load_regime

TOL = 1e-4
SIZE = 32
DRAWS = 2000


def image(size: int = SIZE) -> torch.Tensor:
    """An asymmetric smooth (1, size, size) image in [0, 1]."""
    return probe_pattern(size)[None]


def resample_one(draw, seed: int, img: torch.Tensor, mode: str = "bilinear", padding: str = "border"):
    """The stage's resampling of ``img`` with one draw, and the parameters it drew."""
    _, params = draw(torch.Generator().manual_seed(seed), 1, tuple(img.shape[-2:]))
    out = Resample([draw], ["t"], mode, padding)(img[None], torch.Generator().manual_seed(seed), None)[0]
    return out, {k: v[0] for k, v in params.items()}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("mode,padding", [("bilinear", "border"), ("bilinear", "zeros"), ("nearest", "reflection")])
def test_fixed_rotation_and_affine_equal_monai(size, mode, padding):
    img = image(size)
    for seed in range(3):
        ours, p = resample_one(RotateDraw(1.0, -0.4, 0.4), seed, img, mode, padding)
        theirs = Rotate(float(p["angle"]), mode=mode, padding_mode=padding)(MetaTensor(img))
        assert max_diff(ours, theirs) < TOL
        draw = AffineDraw(1.0, ((-0.4, 0.4),), ((-0.1, 0.1), (-0.1, 0.1)), ((-3, 3), (-3, 3)), ((-0.1, 0.1),) * 2)
        ours, p = resample_one(draw, seed, img, mode, padding)
        theirs = Affine(rotate_params=[float(p["angle"])], shear_params=p["shear"].tolist(),
                        translate_params=p["translate"].tolist(), scale_params=p["scale"].tolist(), mode=mode,
                        padding_mode=padding, image_only=True)(MetaTensor(img))
        assert max_diff(ours, theirs) < TOL


@pytest.mark.parametrize("size", [32, 33])
def test_fixed_zoom_equals_monai(size):
    img = image(size)
    for seed in range(4):
        ours, p = resample_one(ZoomDraw(1.0, (0.85,), (1.15,)), seed, img)
        zoom = Zoom(float(p["zoom"][0]), mode="bilinear", padding_mode="edge")
        lazy = Compose([zoom], lazy=True)(MetaTensor(img))  # the loader path's (lazy) resampling
        assert max_diff(ours, lazy) < TOL
        eager = zoom(MetaTensor(img))
        assert max_diff(ours[:, 2:-2, 2:-2], eager[:, 2:-2, 2:-2]) < TOL


def test_complex_regime_block_equals_monai_lazy_composition():
    """The shipped ``complex`` regime: NormalizeIntensityd, then rotate + zoom + shear as one resampling."""
    stage = compile_regime(load_regime("complex", SIZE))
    assert isinstance(stage, BatchedStage) and [type(s).__name__ for s in stage.steps] == ["Normalize", "Resample"]
    block = stage.steps[1]
    batch = (torch.stack([image(), image().flip(-2)]) * 255).round().to(torch.uint8)
    seed, shape = 5, (SIZE, SIZE)
    gen = torch.Generator().manual_seed(seed)
    rot, zoom, aff = (draw(gen, 2, shape)[1] for draw in block.draws)  # the draws Resample.matrices makes
    ours = block(stage.steps[0](batch.float() / 255, None, None), torch.Generator().manual_seed(seed), None)
    for i in range(2):
        normalized = load_regime("basic", SIZE).online_transform(train=False)({"image": batch[i]})["image"]
        theirs = Compose([
            Rotate(float(rot["angle"][i]), padding_mode="border"),
            Zoom(float(zoom["zoom"][i, 0]), mode="bilinear", padding_mode="edge"),
            Affine(shear_params=aff["shear"][i].tolist(), padding_mode="border", image_only=True),
        ], lazy=True)(MetaTensor(normalized))
        assert max_diff(ours[i], theirs) < TOL * 10  # normalised images span about [-2, 2], not [0, 1]


def monai_draws(transform, n: int) -> dict[str, np.ndarray]:
    """``n`` consecutive draws of a MONAI dictionary transform (lazily applied: nothing is resampled)."""
    transform.set_random_state(0)
    item = {"image": MetaTensor(torch.zeros(1, 8, 8))}
    rows: dict[str, list] = {"fired": [], "values": []}
    for _ in range(n):
        transform(item, lazy=True)
        rows["fired"].append(transform._do_transform)
        if isinstance(transform, RandRotated):
            rows["values"].append([transform.rand_rotate.x])
        elif isinstance(transform, RandZoomd):
            rows["values"].append([transform.rand_zoom._zoom[0]])
        else:
            g = transform.rand_affine.rand_affine_grid
            rows["values"].append([*g.rotate_params, *g.shear_params, *g.translate_params, *g.scale_params])
    return {k: np.asarray(v) for k, v in rows.items()}


def our_draws(draw, n: int) -> dict[str, np.ndarray]:
    _, p = draw(torch.Generator().manual_seed(1), n, (SIZE, SIZE))
    if isinstance(draw, RotateDraw):
        values = [p["angle"][:, None]]
    elif isinstance(draw, ZoomDraw):
        values = [p["zoom"][:, :1]]
    else:
        values = [p["angle"][:, None], p["shear"], p["translate"], p["scale"]]
    return {"fired": p["fired"].numpy(), "values": torch.cat(values, 1).numpy()}


@pytest.mark.parametrize("transform", [
    RandRotated("image", range_x=0.3, prob=0.4),
    RandZoomd("image", min_zoom=0.9, max_zoom=1.1, prob=0.7, mode="bilinear", padding_mode="edge"),
    RandAffined("image", prob=0.5, rotate_range=0.2, shear_range=(0.05, (0.0, 0.1)), translate_range=(3, 2),
                scale_range=((-0.1, 0.05), 0.1)),
], ids=["rotate", "zoom", "affine"])
def test_parameter_distributions_match_monai(transform):
    steps, _ = compile_transforms([transform])
    draw = steps[0].draws[0]
    theirs, ours = monai_draws(transform, DRAWS), our_draws(draw, DRAWS)
    for fired in (theirs["fired"], ours["fired"]):
        assert binomtest(int(fired.sum()), DRAWS, transform.prob).pvalue > 0.01
    a, b = theirs["values"][theirs["fired"]], ours["values"][ours["fired"]]
    assert a.shape[1] == b.shape[1] > 0
    for j in range(a.shape[1]):
        assert ks_2samp(a[:, j], b[:, j]).pvalue > 0.01, f"parameter {j}"


def test_intensity_steps_equal_monai():
    img = torch.stack([image(), 0.5 * image() + 0.2])
    steps, _ = compile_transforms([RandAdjustContrastd("image", prob=1.0, gamma=(0.7, 1.5)),
                                   RandGaussianNoised("image", prob=1.0, mean=0.1, std=0.2, sample_std=False)])
    contrast, noise = steps
    gen = torch.Generator().manual_seed(3)
    gammas = 0.7 + 0.8 * torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[2:]
    out = contrast(img, gen, None)
    for i in range(2):
        assert max_diff(out[i], AdjustContrast(float(gammas[i]))(img[i])) < TOL
    big = torch.zeros(2, 1, 128, 128)
    added = noise(big, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    assert abs(float(added.mean()) - 0.1) < 0.01 and abs(float(added.std()) - 0.2) < 0.01


def test_orientation_kept_and_mirrors_refused():
    stage = compile_regime(load_regime("complex", SIZE), seed=7)
    batch = (image()[None].repeat(16, 1, 1, 1) * 255).round().to(torch.uint8)
    out = stage(batch, epoch=1, iteration=3)
    assert not any(looks_mirrored(o, image()[0]) for o in out)
    assert all(looks_mirrored(o.flip(-1), image()[0]) for o in out)  # the check can fail
    mirror = compile_transforms([RandAffined("image", prob=1.0, scale_range=((-2.2, -2.1), 0))])[0]
    with pytest.raises(MaiAugError, match="negative determinant"):
        BatchedStage(mirror, ["RandAffined"])(batch, 1, 1)
    allowed = compile_transforms([RandAffined("image", prob=1.0, scale_range=((-2.2, -2.1), 0))], allow_mirror=True)
    assert BatchedStage(*allowed)(batch, 1, 1).shape == batch.shape


def test_draws_are_a_pure_function_of_the_position():
    stage = compile_regime(load_regime("complex", SIZE), seed=2)
    batch = (torch.rand(4, 1, SIZE, SIZE) * 255).to(torch.uint8)
    first = stage(batch, 1, 5)
    assert torch.equal(first, stage(batch, 1, 5))
    assert not torch.equal(first, stage(batch, 1, 6))
    assert not torch.equal(first, compile_regime(load_regime("complex", SIZE), seed=3)(batch, 1, 5))


def test_uncompilable_regime_keeps_the_loader_path(caplog):
    caplog.set_level(logging.INFO, logger="mai_aug")
    regime = load_regime("complex-crop", SIZE)
    assert choose_stage("device", regime, torch.device("cpu")) is None
    assert "per-sample loader path" in caplog.text and "RandScaleCropd" in caplog.text
    assert isinstance(choose_stage("auto", load_regime("complex", SIZE), torch.device("cpu")), BatchedStage)
    assert choose_stage("loader", load_regime("complex", SIZE), torch.device("cpu")) is None
    with pytest.raises(MaiAugError, match="`augment_on`"):
        choose_stage("gpu", regime, torch.device("cpu"))


def test_cached_uint8_batches_equal_the_loader_path(phantom_dir):
    """Deterministic regime: the stage on gathered uint8 batches gives the loader path's float images."""
    items = [{"image": str(p), "label": [0] * 14} for p in sorted((phantom_dir / "images").glob("*.png"))[:8]]
    regime = load_regime("basic", SIZE)
    raw = next(iter(DataLoader(build_dataset(items, regime, True, progress=False, online=False), batch_size=8)))
    assert raw["image"].dtype == torch.uint8
    ours = compile_regime(regime)(raw["image"], 1, 1)
    theirs = next(iter(DataLoader(build_dataset(items, regime, True, progress=False), batch_size=8)))["image"]
    assert ours.dtype == torch.float32 and max_diff(ours, theirs) < 1e-5


@pytest.fixture(scope="module")
def tiny_datalist(phantom_dir, tmp_path_factory) -> Path:
    return cut_datalist(phantom_dir, tmp_path_factory.mktemp("batched"), training=32, validation=16)


@pytest.mark.parametrize("where", ["device", "loader"])
def test_tiny_training_on_either_path(where, tiny_datalist, tmp_path, monkeypatch):
    """1 epoch of 2 steps: the stage runs once per training step and never for validation."""
    stages: list[BatchedStage] = []

    def spy(*args, **kwargs):
        stage = choose_stage(*args, **kwargs)
        stages.append(stage)
        return stage

    monkeypatch.setattr(train_module, "choose_stage", spy)
    run = tmp_path / where
    assert main(["train", "--datalist", str(tiny_datalist), "--out", str(run), "--regime", "complex", "--epochs", "1",
                 "--steps-per-epoch", "2", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--quiet",
                 "--augment-on", where]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + the validated epoch
    assert f"augment_on: {where}" in (run / "config.yaml").read_text()
    if where == "device":
        assert stages[0].calls == 2
        assert "batched on cpu" in (run / "train.log").read_text()
    else:
        assert stages == [None] and "per-sample loader path" in (run / "train.log").read_text()
