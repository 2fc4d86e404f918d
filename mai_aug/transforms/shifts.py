"""Graded test-time shifts: MONAI array transforms with fixed parameters, one per shift type and level.

A shift is applied to the network's float input (after the regime's deterministic part) of test image ``index``.
Only ``noise`` draws random numbers, from a generator seeded by the level and the image index (never the global
RNG), so every run sees the same shifted images whatever was drawn before. The identity level of each type returns
the image untouched, so that level reproduces ``mai-aug evaluate``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import AdjustContrast, Affine, GaussianSmooth, RandGaussianNoise, Rotate, Zoom
from monai.utils import convert_to_tensor

from mai_aug.transforms.shift_levels import SHIFT_TYPES

ShiftFn = Callable[[torch.Tensor, int], torch.Tensor]


def noise_seed(level: float, index: int) -> int:
    """The noise generator's seed for test image ``index`` at ``level``: fixed, independent of any global RNG."""
    return int(np.random.SeedSequence([zlib.crc32(f"noise:{level!r}".encode()), index]).generate_state(1)[0])


def _rotation(level: float) -> ShiftFn:
    rotate = Rotate(math.radians(level), keep_size=True, mode="bilinear", padding_mode="border")
    return lambda img, index: _plain(rotate(img))


def _zoom(level: float) -> ShiftFn:
    zoom = Zoom(level, mode="bilinear", padding_mode="edge", keep_size=True)
    return lambda img, index: _plain(zoom(img))


def _gamma(level: float) -> ShiftFn:
    gamma = AdjustContrast(level)
    return lambda img, index: _plain(gamma(img))


def _blur(level: float) -> ShiftFn:
    blur = GaussianSmooth(sigma=level)
    return lambda img, index: _plain(blur(img))


def _translation(level: float) -> ShiftFn:
    # Affine moves the sampling grid: the image moves the other way, so the parameters are negated
    return lambda img, index: _plain(Affine(translate_params=[-level * s for s in img.shape[1:]],
                                            padding_mode="border", image_only=True)(img))


def _noise_shift(level: float) -> ShiftFn:
    return lambda img, index: _noise(img, level, index)


# One builder per shift type of SHIFT_TYPES: a type without its builder fails here, at import, not at a sweep.
BUILDERS: dict[str, Callable[[float], ShiftFn]] = {
    "rotation": _rotation, "zoom": _zoom, "gamma": _gamma, "blur": _blur, "translation": _translation,
    "noise": _noise_shift,
}
if set(BUILDERS) != set(SHIFT_TYPES):
    raise ImportError(f"shift types without a builder: {sorted(set(SHIFT_TYPES) ^ set(BUILDERS))}")


def build_shift(name: str, level: float) -> ShiftFn | None:
    """``(image, index) -> shifted image`` for a (C, H, W) float tensor; None at the identity level."""
    if level == SHIFT_TYPES[name].identity:
        return None
    return BUILDERS[name](level)


def _noise(img: torch.Tensor, level: float, index: int) -> torch.Tensor:
    noise = RandGaussianNoise(prob=1.0, std=level * float(img.std()), sample_std=False)
    noise.set_random_state(seed=noise_seed(level, index))
    return _plain(noise(img))


def _plain(img) -> torch.Tensor:
    """A float32 tensor without metadata, as the regime's online transform ends."""
    return convert_to_tensor(img, dtype=torch.float32, track_meta=False)
