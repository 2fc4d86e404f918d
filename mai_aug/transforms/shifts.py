"""Graded test-time shifts: MONAI array transforms with fixed parameters, one per shift type and level.

A shift is applied to the network's float input (after the regime's deterministic part) of test image ``index``.
Only ``noise`` draws random numbers, from a generator seeded by the level and the image index (never the global
RNG), so every run sees the same shifted images whatever was drawn before. The identity level of each type returns
the image untouched, so that level reproduces ``mai-aug evaluate``.

:func:`build_batch_shift` applies the same shift to a whole batch on the network's device: the spatial shifts and
the blur act on each channel alike with one set of parameters per level, so the batch's images are handed to the
same MONAI transform as channels of one image (one ``grid_sample``, interpolation or convolution for the batch);
gamma uses each image's own minimum and range, as :class:`~monai.transforms.AdjustContrast` does per image; noise
keeps its per-image seeded draw.
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
BatchShiftFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def build_batch_shift(name: str, level: float) -> BatchShiftFn | None:
    """``(images (B, C, H, W), indices (B,)) -> shifted images`` on the images' device; None at the identity level."""
    if level == SHIFT_TYPES[name].identity:
        return None
    if name == "gamma":
        return lambda images, indices: _batch_gamma(images, level)
    if name == "noise":
        return lambda images, indices: torch.stack([_noise(img, level, int(i)).to(images.device)
                                                    for img, i in zip(images, indices)])
    shift = BUILDERS[name](level)
    return lambda images, indices: _as_channels(shift, images)


def _as_channels(shift: ShiftFn, images: torch.Tensor) -> torch.Tensor:
    """``shift`` of one (B*C, H, W) image: the batch's channels side by side, then back to (B, C, H, W)."""
    batch, channels, *spatial = images.shape
    return shift(images.reshape(batch * channels, *spatial), -1).reshape(batch, channels, *spatial)


def _batch_gamma(images: torch.Tensor, gamma: float) -> torch.Tensor:
    """:class:`~monai.transforms.AdjustContrast` of each image on its own minimum and range, for the whole batch."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - low
    return ((images - low) / (span + 1e-7)) ** gamma * span + low
