"""Regime guards: handedness (no transform may mirror a chest), a deterministic ``deterministic`` part, lazy
resampling that never replaces a transform's options, and resizing without a hidden factor."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import MapTransform
from PIL import Image

from mai_aug.core.errors import MaiAugError
from mai_aug.transforms.probe import dihedral, probe_pattern
from mai_aug.transforms.regimes import available_regimes, load_regime
from mai_aug.transforms.resize import SmoothResized

SIZE = 48


def regimes_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def one_regime(tmp_path: Path, part: str, transform: str, extra: str = "") -> Path:
    return regimes_file(tmp_path, f"""
        regimes:
          mirror:
            {extra}
            {part}: [{transform}]
        """)


def test_probe_is_unlike_all_its_flips_and_rotations():
    probe = probe_pattern(SIZE)
    variants = list(dihedral(probe))
    assert [m for m, _ in variants] == [False] * 4 + [True] * 4
    for _, v in variants[1:]:
        assert abs(np.corrcoef(probe.ravel(), v.ravel())[0, 1]) < 0.25


MIRRORS = {
    "horizontal RandFlipd": ("random", "{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}", "RandFlipd"),
    "vertical RandFlipd": ("random", "{_target_: RandFlipd, keys: image, spatial_axis: 0, prob: 0.5}", "RandFlipd"),
    "vertical Flipd": ("deterministic", "{_target_: Flipd, keys: image, spatial_axis: 0}", "Flipd"),
    "RandAxisFlipd": ("random", "{_target_: RandAxisFlipd, keys: image, prob: 0.5}", "RandAxisFlipd"),
    "negative-scale Affined": ("deterministic", "{_target_: Affined, keys: image, scale_params: [1, -1]}", "Affined"),
    "RandAffined reaching negative scale": (
        "random", "{_target_: RandAffined, keys: image, prob: 0.5, scale_range: [[-2.5, 0.0], 0.1]}", "RandAffined"),
    "Transposed": ("deterministic", "{_target_: Transposed, keys: image, indices: [0, 2, 1]}", "Transposed"),
    "Flipd picked by a OneOf 1 time in 10": (
        "random", "{_target_: OneOf, weights: [0.9, 0.1], transforms: [{_target_: Identityd, keys: image}, "
                  "{_target_: Flipd, keys: image, spatial_axis: 1}]}", "Flipd"),
    "two half-probability flips in a Compose (a rotation only when both fire)": (
        "random", "{_target_: Compose, transforms: [{_target_: RandFlipd, keys: image, spatial_axis: 0, prob: 0.5}, "
                  "{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}]}", "RandFlipd"),
    "Flipd in a SomeOf inside a RandomOrder": (
        "random", "{_target_: RandomOrder, transforms: [{_target_: SomeOf, num_transforms: 1, weights: [0.95, 0.05], "
                  "transforms: [{_target_: Identityd, keys: image}, {_target_: Flipd, keys: image, spatial_axis: 0}]}]}",
        "Flipd"),
}


@pytest.mark.parametrize("case", MIRRORS)
def test_mirroring_transforms_are_refused(tmp_path, case):
    part, transform, name = MIRRORS[case]
    path = one_regime(tmp_path, part, transform)
    with pytest.raises(MaiAugError, match="situs inversus / dextrocardia") as err:
        load_regime("mirror", SIZE, [path])
    message = str(err.value)
    assert f"regime 'mirror', {part}: {name} mirrors the image" in message and "allow_lateral_flip" in message
    assert "\n" not in message


def test_flip_in_load_is_refused(tmp_path):
    path = regimes_file(tmp_path, """
        load:
          - {_target_: LoadImaged, keys: image, image_only: true, reader: {_target_: PILReader, reverse_indexing: false}}
          - {_target_: EnsureChannelFirstd, keys: image, channel_dim: no_channel}
          - {_target_: Flipd, keys: image, spatial_axis: 1}
        regimes:
          mirror: {}
        """)
    with pytest.raises(MaiAugError, match=r"'mirror', load: Flipd mirrors the image.*situs inversus"):
        load_regime("mirror", SIZE, [path])


def test_monai_default_reader_transposes_and_is_refused(tmp_path):
    # MONAI's default PILReader returns (W, H): a transpose of the file, i.e. a mirror image of the chest.
    path = regimes_file(tmp_path, """
        load:
          - {_target_: LoadImaged, keys: image, image_only: true}
          - {_target_: EnsureChannelFirstd, keys: image, channel_dim: no_channel}
        regimes:
          transposed: {}
        """)
    with pytest.raises(MaiAugError, match=r"'transposed', load: LoadImaged mirrors"):
        load_regime("transposed", SIZE, [path])


class MirrorByAnyOtherName(MapTransform):
    """A custom transform that mirrors without saying so (no flip in its name, no affine update)."""

    def __call__(self, data):
        d = dict(data)
        d["image"] = torch.as_tensor(d["image"]).as_subclass(torch.Tensor).flip(-1)
        return d


def test_custom_mirroring_transform_is_refused(tmp_path):
    path = one_regime(tmp_path, "random", "{_target_: test_guard.MirrorByAnyOtherName, keys: image}")
    with pytest.raises(MaiAugError, match=r"random: MirrorByAnyOtherName mirrors the image.*situs inversus"):
        load_regime("mirror", SIZE, [path], trust=True)  # a class outside MONAI and mai_aug needs --trust-config


@pytest.mark.parametrize("transform", [
    "{_target_: RandFlipd, keys: image, spatial_axis: [0, 1], prob: 0.5}",  # both axes: a 180-degree rotation
    "{_target_: RandRotate90d, keys: image, prob: 1.0, max_k: 3}",
    "{_target_: Rotate90d, keys: image, k: 2}",
    "{_target_: Affined, keys: image, scale_params: [-1, -1]}",
    "{_target_: RandRotated, keys: image, range_x: 0.3, prob: 1.0, padding_mode: zeros}",
])
def test_rotations_keep_handedness_and_pass(tmp_path, transform):
    regime = load_regime("mirror", SIZE, [one_regime(tmp_path, "random", transform)])
    assert len(regime.random) == 1


@pytest.mark.parametrize("name", sorted(available_regimes()))
def test_every_shipped_regime_passes_the_guards(name):
    assert load_regime(name, SIZE).name == name


@pytest.mark.parametrize("value", ['"false"', '"no"', "0", "[]"])
def test_lateral_flip_opt_in_must_be_a_real_boolean(tmp_path, value):
    path = one_regime(tmp_path, "random", "{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}",
                      extra=f"allow_lateral_flip: {value}")
    with pytest.raises(MaiAugError, match=r"regime 'mirror': allow_lateral_flip must be true or false"):
        load_regime("mirror", SIZE, [path])


def test_a_failing_load_step_is_one_line_naming_it(tmp_path):
    path = regimes_file(tmp_path, """
        load: [{_target_: LoadImaged, keys: img}]
        regimes:
          broken: {}
        """)
    with pytest.raises(MaiAugError, match=r"regime 'broken', load: LoadImaged fails on a PNG test image: KeyError"
                       ) as err:
        load_regime("broken", SIZE, [path])
    assert "\n" not in str(err.value)


def test_explicit_opt_in_allows_a_mirror(tmp_path):
    path = one_regime(tmp_path, "random", "{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}",
                      extra="allow_lateral_flip: true")
    regime = load_regime("mirror", SIZE, [path])
    assert regime.allow_lateral_flip and regime.spec["allow_lateral_flip"] is True


@pytest.mark.parametrize("transform", [
    "{_target_: RandGaussianNoised, keys: image, prob: 1.0}",
    "{_target_: RandAdjustContrastd, keys: image, prob: 1.0}",
    "{_target_: OneOf, transforms: [{_target_: Rotate90d, keys: image, k: 2}, {_target_: Identityd, keys: image}]}",
    # rarely picked: two seeded runs give the same image, the container's type still says random
    "{_target_: OneOf, weights: [0.9, 0.1], transforms: [{_target_: NormalizeIntensityd, keys: image}, "
    "{_target_: Rotate90d, keys: image, k: 2}]}",
    "{_target_: Compose, transforms: [{_target_: Identityd, keys: image}, "
    "{_target_: RandGaussianNoised, keys: image, prob: 0.1}]}",
])
def test_random_transform_in_deterministic_is_refused(tmp_path, transform):
    with pytest.raises(MaiAugError, match=r"regime 'mirror', deterministic: \w+ is random.*move it to 'random'"):
        load_regime("mirror", SIZE, [one_regime(tmp_path, "deterministic", transform)])


def test_deterministic_part_gives_one_answer(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray((probe_pattern(96).numpy() * 255).astype(np.uint8), mode="L").save(png)
    transform = load_regime("complex", SIZE).full_transform(train=False)
    a, b = (transform({"image": str(png), "label": [0] * 14})["image"] for _ in range(2))
    assert torch.equal(a, b)


def test_zero_padding_is_honoured_not_replaced_by_lazy_resampling(tmp_path):
    path = one_regime(tmp_path, "random",
                      "{_target_: RandRotated, keys: image, range_x: [0.7, 0.7], prob: 1.0, padding_mode: zeros}")
    regime = load_regime("mirror", SIZE, [path])
    cached = torch.full((1, SIZE, SIZE), 200, dtype=torch.uint8)
    out = regime.online_transform(train=True)({"image": cached, "label": torch.zeros(14)})["image"]
    assert float(out[0, 0, 0]) == 0.0 and float(out[0, -1, -1]) == 0.0  # corners rotated in from outside
    assert float(out[0, SIZE // 2, SIZE // 2]) == pytest.approx(200 / 255, abs=1e-3)


def test_complex_resamples_once(tmp_path):
    # complex's rotation, zoom and shear are fused into one lazy block: one interpolation, not three.
    regime = load_regime("complex", SIZE)
    blocks = regime.online_parts[1]
    assert len(blocks) == 1 and blocks[0].lazy is True and len(blocks[0].transforms) == 3


def blockiness(image: np.ndarray) -> float:
    """Fraction of horizontally neighbouring pixel pairs with equal values."""
    return float(np.mean(image[:, 1:] == image[:, :-1]))


def test_upsampling_is_smooth_and_shrinking_uses_area():
    rng = np.random.default_rng(0)
    small = torch.as_tensor(rng.random((1, 16, 16)), dtype=torch.float32)
    up = SmoothResized("image", (64, 64))({"image": small})["image"]
    assert up.shape == (1, 64, 64) and blockiness(up[0].numpy()) < 0.25
    assert small.min() <= up.min() and up.max() <= small.max()  # no overshoot beyond the source's range
    big = torch.as_tensor(rng.random((1, 64, 64)), dtype=torch.float32)
    down = SmoothResized("image", (16, 16))({"image": big})["image"]
    expected = torch.nn.functional.avg_pool2d(big[None], 4)[0]  # area averaging over 4 x 4 blocks
    assert torch.allclose(down, expected, atol=1e-6)


def test_load_enlarges_small_images_smoothly(tmp_path):
    png = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(png)
    out = load_regime("none", 64).full_transform(train=False)({"image": str(png), "label": [0] * 14})["image"]
    assert out.shape == (1, 64, 64) and blockiness((out[0].numpy() * 255).round()) < 0.25


def test_resample_only_is_a_small_blur_that_keeps_orientation(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray((probe_pattern(64).numpy() * 255).astype(np.uint8), mode="L").save(png)
    item = {"image": str(png), "label": [0] * 14}
    control = load_regime("resample-only", 64)
    plain = load_regime("basic", 64).full_transform(train=False)(dict(item))["image"][0].numpy()
    t = control.full_transform(train=True)
    t.set_random_state(0)
    for _ in range(3):
        out = t(dict(item))["image"][0].numpy()
        diff = np.abs(out - plain)
        assert 0 < diff.mean() < 0.1 * plain.std()  # it really resamples, and by very little
        assert np.corrcoef(out.ravel(), plain.ravel())[0, 1] > 0.99  # same orientation, same geometry
        assert np.abs(np.diff(out, axis=1)).mean() < np.abs(np.diff(plain, axis=1)).mean()  # a blur: smoother
    assert type(control.online_parts[1][0]).__name__ == "Compose" and control.online_parts[1][0].lazy is True


def test_the_guards_verdict_is_kept_only_for_the_same_data_only_spec(tmp_path, monkeypatch):
    """A data-only spec that passed is not probed again; a changed spec, a new size or a trusted spec is."""
    import mai_aug.transforms.regimes as regimes

    probed, real = [], regimes.check_no_mirror
    monkeypatch.setattr(regimes, "check_no_mirror", lambda name, *parts: probed.append(name) or real(name, *parts))
    rotate = "{_target_: RandRotated, keys: image, range_x: 0.2468, prob: 1.0}"  # a spec no other test loads
    for _ in range(3):
        load_regime("mirror", SIZE, [one_regime(tmp_path, "random", rotate)])
    load_regime("mirror", SIZE + 16, [one_regime(tmp_path, "random", rotate)])
    assert len(probed) == 2  # once per size
    flip = "{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}"
    with pytest.raises(MaiAugError, match="RandFlipd mirrors the image"):  # same name, another spec: probed
        load_regime("mirror", SIZE, [one_regime(tmp_path, "random", flip)])
    for _ in range(2):
        load_regime("mirror", SIZE, [one_regime(tmp_path, "random", rotate)], trust=True)
    assert len(probed) == 5  # a trusted spec may compute its transforms: probed every time


def test_a_spec_json_cannot_sort_is_probed_not_a_traceback(tmp_path):
    path = regimes_file(tmp_path, """
        load: [{_target_: LoadImaged, keys: image, foo: {1: a, b: c}}]
        regimes:
          odd: {}
        """)  # number and string keys in one mapping: no canonical JSON, so no kept verdict
    for _ in range(2):  # refused by the probe each time, in its one line
        with pytest.raises(MaiAugError, match=r"regime 'odd', load: LoadImaged fails on a PNG test image"):
            load_regime("odd", SIZE, [path])
