"""Per-image affine draws for the batched stage: MONAI's random spatial transforms as batches of 3x3 matrices.

Each draw reproduces one MONAI dictionary transform (``RandRotated``, ``RandZoomd``, ``RandAffined``): the same
probability, the same uniform ranges and the same matrix MONAI resamples with, as a ``(B, 3, 3)`` float64 matrix in
array-index coordinates (row, column; origin at pixel 0) that maps an output pixel to the input point it samples,
the convention of ``monai.networks.layers.AffineTransform(normalized=False, reverse_indexing=True)``. Matrices of
consecutive transforms compose by multiplication (first transform on the left), as MONAI's lazy resampling does.

Hand-written because MONAI draws one image's parameters at a time with numpy; here a ``torch.Generator`` draws a
whole batch, so the draws are a pure function of the generator's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import RandAffined, RandRotated, RandZoomd
from monai.utils import ensure_tuple

Shape = tuple[int, int]


def uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """``n`` draws from U[low, high) as float64."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def fired(gen: torch.Generator, n: int, prob: float) -> torch.Tensor:
    """Which of ``n`` images a transform with probability ``prob`` applies to (MONAI: ``rand() < prob``)."""
    return torch.rand(n, generator=gen, dtype=torch.float64) < prob


def centred(linear: torch.Tensor, shape: Shape) -> torch.Tensor:
    """``(B, 2, 2)`` maps about the image centre as ``(B, 3, 3)`` index-space matrices (MONAI's ``(size - 1) / 2``)."""
    c = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64)
    out = torch.eye(3, dtype=torch.float64).repeat(len(linear), 1, 1)
    out[:, :2, :2] = linear
    out[:, :2, 2] = c - linear @ c  # shift(c) @ A @ shift(-c)
    return out


def rotations(angles: torch.Tensor) -> torch.Tensor:
    """MONAI's ``create_rotate`` in 2-D: ``[[cos, -sin], [sin, cos]]`` per angle."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


@dataclass(frozen=True)
class RotateDraw:
    """``RandRotated`` in 2-D with ``keep_size``: an angle from U[low, high) with probability ``prob``."""

    prob: float
    low: float
    high: float

    def __call__(self, gen: torch.Generator, n: int, shape: Shape) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        on = fired(gen, n, self.prob)
        angle = torch.where(on, uniform(gen, n, self.low, self.high), 0.0)
        return centred(rotations(angle), shape), {"fired": on, "angle": angle}


@dataclass(frozen=True)
class ZoomDraw:
    """``RandZoomd`` with ``keep_size``: a factor per axis from U[min, max) (one for both when one is given).

    MONAI resizes to ``floor(size * zoom)`` pixels and pads or crops back to ``size``, so the map it applies has
    the scale ``size / floor(size * zoom)`` and the pad/crop offset; the matrix reproduces both.
    """

    prob: float
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __call__(self, gen: torch.Generator, n: int, shape: Shape) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        on = fired(gen, n, self.prob)
        draws = [uniform(gen, n, lo, hi) for lo, hi in zip(self.low, self.high)]
        zoom = torch.stack(draws * 2 if len(draws) == 1 else draws, -1)
        zoom = torch.where(on[:, None], zoom, 1.0)
        out = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        for axis, size in enumerate(shape):
            resized = torch.floor(size * zoom[:, axis])
            scale = size / resized
            # the zoomed image's pixel o + offset lands on output pixel o (ResizeWithPadOrCrop: centre crop or pad)
            offset = torch.where(resized >= size, resized // 2 - size // 2, -((size - resized) // 2))
            out[:, axis, axis] = scale
            out[:, axis, 2] = scale * offset + (scale - 1) / 2
        return out, {"fired": on, "zoom": zoom}


def _ranges(spec: Any) -> list[tuple[float, float]]:
    """RandAffineGrid's ranges: ``f`` is ``(-f, f)``, a pair is ``(lo, hi)``, None is skipped (MONAI skips it)."""
    out = []
    for f in ensure_tuple(spec) if spec is not None else ():
        if f is None:
            continue
        out.append((float(f[0]), float(f[1])) if isinstance(f, Sequence) else (-float(f), float(f)))
    return out


@dataclass(frozen=True)
class AffineDraw:
    """``RandAffined`` (``RandAffineGrid``) in 2-D: rotate @ shear @ translate @ scale, each drawn per image.

    Parameters are drawn in MONAI's order (rotate, shear, translate, scale, one per range entry) and padded as
    ``create_shear`` / ``create_translate`` / ``create_scale`` pad them (0, 0 and 1).
    """

    prob: float
    rotate: tuple[tuple[float, float], ...]
    shear: tuple[tuple[float, float], ...]
    translate: tuple[tuple[float, float], ...]
    scale: tuple[tuple[float, float], ...]

    def _draw(self, gen: torch.Generator, n: int, ranges: tuple, pad: float) -> torch.Tensor:
        values = [uniform(gen, n, lo, hi) for lo, hi in ranges][:2]
        values += [torch.full((n,), pad, dtype=torch.float64)] * (2 - len(values))
        return torch.stack(values, -1)

    def __call__(self, gen: torch.Generator, n: int, shape: Shape) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        on = fired(gen, n, self.prob)
        angle = self._draw(gen, n, self.rotate, 0.0)[:, 0]
        shear, shift = self._draw(gen, n, self.shear, 0.0), self._draw(gen, n, self.translate, 0.0)
        scale = self._draw(gen, n, self.scale, 0.0) + 1.0
        shear_m = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
        # MONAI >= 1.5 composes the two single-axis shears: [[1, sx], [sy, 1 + sx * sy]] (determinant 1)
        shear_m[:, 0, 1], shear_m[:, 1, 0] = shear[:, 0], shear[:, 1]
        shear_m[:, 1, 1] = 1 + shear[:, 0] * shear[:, 1]
        linear = rotations(angle) @ shear_m
        # rotate @ shear @ translate @ scale: the translation goes through rotate @ shear, the scale multiplies in
        out = centred(linear @ torch.diag_embed(scale), shape)
        out[:, :2, 2] += (linear @ shift[:, :, None])[:, :, 0]
        identity = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        out = torch.where(on[:, None, None], out, identity)
        return out, {"fired": on, "angle": angle, "shear": shear, "translate": shift, "scale": scale}


Draw = RotateDraw | ZoomDraw | AffineDraw


def compile_draw(t: Any) -> Draw | str | None:
    """The draw reproducing MONAI transform ``t``, why it cannot be compiled, or None if it is not affine."""
    if isinstance(t, RandRotated):
        r = t.rand_rotate
        if not r.keep_size or any(abs(v) > 0 for v in (*r.range_y, *r.range_z)):
            return "RandRotated without keep_size, or with 3-D ranges"
        return RotateDraw(float(t.prob), float(r.range_x[0]), float(r.range_x[1]))
    if isinstance(t, RandZoomd):
        z = t.rand_zoom
        if not z.keep_size or len(z.min_zoom) > 2:
            return "RandZoomd without keep_size, or with 3-D zoom ranges"
        return ZoomDraw(float(t.prob), tuple(map(float, z.min_zoom)), tuple(map(float, z.max_zoom)))
    if isinstance(t, RandAffined):
        a, g = t.rand_affine, t.rand_affine.rand_affine_grid
        if a.spatial_size is not None:
            return "RandAffined with a spatial_size"
        return AffineDraw(float(t.prob), *(tuple(_ranges(r)) for r in (g.rotate_range, g.shear_range,
                                                                     g.translate_range, g.scale_range)))
    return None


def mirrored(matrices: torch.Tensor) -> torch.Tensor:
    """Which ``(B, 3, 3)`` matrices mirror the image (negative determinant of the spatial part)."""
    return torch.linalg.det(matrices[:, :2, :2]) < 0

