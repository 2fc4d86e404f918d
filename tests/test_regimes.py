"""Regimes: transform lists, the flip guard, orientation, PNG modes, YAML-only regimes and the cache."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_nih
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.loader import build_dataset
from mai_aug.transforms.regimes import available_regimes, load_regime

EXPECTED = {
    "none": ([], []),
    "basic": (["NormalizeIntensityd"], []),
    "complex": (["NormalizeIntensityd"], ["RandRotated", "RandZoomd", "RandAffined"]),
}
LOAD = ["LoadImaged", "EnsureChannelFirstd", "SmoothResized", "ScaleIntensityd"]


@pytest.mark.parametrize("name", EXPECTED)
def test_default_regime_transform_lists(name):
    regime = load_regime(name, 64)
    assert [type(t).__name__ for t in regime.load] == LOAD
    deterministic, random = EXPECTED[name]
    assert [type(t).__name__ for t in regime.deterministic] == deterministic
    assert [type(t).__name__ for t in regime.random] == random
    assert regime.load[2].spatial_size == (64, 64)


def test_complex_values_and_reference_shear():
    rotate, zoom, affine = load_regime("complex", 64).random
    assert rotate.rand_rotate.range_x == pytest.approx((-np.deg2rad(5), np.deg2rad(5)), abs=1e-6)
    assert (zoom.rand_zoom.min_zoom, zoom.rand_zoom.max_zoom) == ((0.98,), (1.02,))
    assert affine.rand_affine.rand_affine_grid.shear_range == pytest.approx((0.05, 0.05))  # each factor in [-0.05, 0.05]
    reference = load_regime("complex-reference", 64).random[2]
    assert reference.rand_affine.rand_affine_grid.shear_range[1] == pytest.approx(np.tan(np.deg2rad(0.02)), rel=1e-2)


def regimes_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_flip_guard_allows_explicit_opt_in(tmp_path):
    # the handedness checks themselves are in test_guard.py
    path = regimes_file(tmp_path, """
        regimes:
          upside:
            random: [{_target_: RandFlipd, keys: image, spatial_axis: 0, prob: 0.5}]
          mirrored:
            allow_lateral_flip: true
            random: [{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}]
        """)
    with pytest.raises(MaiAugError, match="situs inversus"):  # a vertical flip is a mirror image too
        load_regime("upside", 64, [path])
    assert load_regime("mirrored", 64, [path]).allow_lateral_flip


def asymmetric_png(path: Path, size: int = 96, mode: str = "L") -> Path:
    """Dark image with a bright block at the top of the image right (where the side marker 'L' sits)."""
    a = np.full((size, size), 30, np.uint8)
    a[8:40, size - 40 : size - 8] = 230
    a[size - 20 :, : size // 3] = 120  # a dimmer block bottom left, so top-bottom is asymmetric too
    Image.fromarray(a, mode="L").convert(mode).save(path)
    return path


def bright_quadrant(image: np.ndarray) -> tuple[int, int]:
    img = np.asarray(image, dtype=float).squeeze()
    h, w = img.shape
    r, c = np.unravel_index(np.argmax(np.convolve(img.ravel(), np.ones(1), "same").reshape(h, w)), (h, w))
    return int(r < h / 2), int(c >= w / 2)


@pytest.mark.parametrize("name", sorted(available_regimes()))
def test_orientation_is_kept_through_every_regime(tmp_path, name):
    png = asymmetric_png(tmp_path / "a.png")
    regime = load_regime(name, 64)
    for train in (False, True):
        out = regime.full_transform(train)({"image": str(png), "label": [0] * 14})["image"]
        assert out.shape == (1, 64, 64)
        img = out[0].numpy()
        assert img[5:20, 44:59].mean() > img[5:20, 5:20].mean() + 0.5 * img.std()  # bright block top right
        assert img[5:20, 44:59].mean() > img[44:59, 44:59].mean() + 0.5 * img.std()


def test_orientation_through_preview(tmp_path):
    rows = [("00000001_000.png", "Cardiomegaly", 1, "PA")]
    root = write_nih(tmp_path / "d", rows, images=False)
    asymmetric_png(root / "images" / "00000001_000.png")
    assert main(["preview", "--data", str(root), "--regime", "complex", "--n", "1", "--samples", "2",
                 "--size", "64", "--out", str(tmp_path / "p")]) == 0
    for k in range(2):
        img = np.asarray(Image.open(tmp_path / "p" / f"00000001_000_{k}.png"), dtype=float)
        assert img.shape == (64, 64)
        assert img[5:20, 44:59].mean() > img[5:20, 5:20].mean() + 50
    assert (tmp_path / "p" / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_all_png_modes_load_as_one_channel(tmp_path, mode):
    a = np.tile(np.linspace(0, 255, 48, dtype=np.float64), (48, 1))
    if mode == "I;16":
        image = Image.fromarray((a * 200).astype(np.uint16))
    else:
        image = Image.fromarray(a.astype(np.uint8), mode="L").convert(mode)
    path = tmp_path / "m.png"
    image.save(path)
    out = load_regime("none", 48).full_transform(False)({"image": str(path), "label": [0] * 14})["image"]
    assert out.shape == (1, 48, 48) and out.dtype == torch.float32
    assert np.corrcoef(out[0].numpy().ravel(), a.ravel())[0, 1] > 0.99  # left dark, right bright, as stored
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_yaml_only_regime_end_to_end(tmp_path, phantom_dir, capsys):
    path = regimes_file(tmp_path, """
        regimes:
          contrast:
            description: basic + random contrast and Gaussian noise
            deterministic: "%regimes#basic#deterministic"
            random:
              - {_target_: RandAdjustContrastd, keys: image, prob: 1.0, gamma: [0.8, 1.2]}
              - {_target_: RandGaussianNoised, keys: image, prob: 1.0, std: 0.05}
        """)
    assert "contrast" in available_regimes([path])
    assert main(["regimes", "--regimes-file", str(path)]) == 0
    assert "RandGaussianNoised" in capsys.readouterr().out
    out = tmp_path / "preview"
    assert main(["preview", "--data", str(phantom_dir), "--regime", "contrast", "--regimes-file", str(path),
                 "--n", "2", "--samples", "2", "--size", "48", "--out", str(out)]) == 0
    samples = sorted(out.glob("*_[01].png"))
    assert len(samples) == 4 and (out / "grid.png").is_file()
    a, b = (np.asarray(Image.open(p), dtype=float) for p in samples[:2])
    assert a.shape == (48, 48) and not np.array_equal(a, b)  # random part differs between samples


def test_the_image_store_returns_the_same_tensors_as_the_uncached_path(tmp_path, phantom_dir):
    assert main(["split", "--data", str(phantom_dir), "--out", str(tmp_path / "dl.json")]) == 0
    items = json.loads((tmp_path / "dl.json").read_text())["validation"][:12]
    regime = load_regime("basic", 48)
    cached = build_dataset(items, regime, train=False, cache="store", cache_dir=tmp_path / "c", progress=False)
    plain = build_dataset(items, regime, train=False, cache="none")
    for _ in range(2):  # a second pass reads the same rows
        for i in range(len(items)):
            a, b = cached[i], plain[i]
            assert type(a["image"]) is torch.Tensor and a["image"].dtype == torch.float32
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_regime_errors(tmp_path):
    with pytest.raises(MaiAugError, match="unknown regime 'fancy'"):
        load_regime("fancy", 64)
    with pytest.raises(MaiAugError, match="at least 32"):
        load_regime("none", 16)
    bad = regimes_file(tmp_path, """
        regimes:
          broken:
            random: [{_target_: RandNoSuchThingd, keys: image}]
        """)
    with pytest.raises(MaiAugError, match="broken"):
        load_regime("broken", 64, [bad])
