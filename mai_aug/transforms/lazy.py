"""Lazy resampling only where it changes nothing but the number of interpolations.

MONAI's lazy resampling fuses consecutive spatial transforms into one interpolation, but resamples with its own
settings: a transform's ``padding_mode="zeros"`` or ``mode="area"`` is silently replaced (pending operations do
not carry them, and Compose ``overrides`` do not restore zero padding in MONAI 1.6). So each spatial transform
is tried on a probe, lazily and not: only transforms whose lazy result equals their own result are fused, in
runs of consecutive ones; every other transform runs on its own with its own options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import Compose, Randomizable
from monai.transforms.traits import LazyTrait

from mai_aug.transforms.probe import always_fire, apply_once, probe_item

TOLERANCE = 0.01  # of the probe's [0, 1] range: float64 vs float32 resampling differs by about 1e-6
SEEDS = (0, 1)


def lazy_safe(transform: Any) -> bool:
    """Whether ``transform`` gives the same image lazily as on its own (several draws when random)."""
    if not isinstance(transform, LazyTrait) or isinstance(transform, Compose):
        return False
    item = probe_item()
    t = always_fire(transform) if isinstance(transform, Randomizable) else transform
    for seed in SEEDS:
        eager, lazy = (apply_once(t, item, seed, lazy=mode)["image"] for mode in (False, True))
        eager, lazy = torch.as_tensor(eager).as_subclass(torch.Tensor), torch.as_tensor(lazy).as_subclass(torch.Tensor)
        if eager.shape != lazy.shape or float((eager.float() - lazy.float()).abs().max()) > TOLERANCE:
            return False
    return True


def fused(transforms: Sequence[Any]) -> list[Any]:
    """``transforms`` with each run of consecutive lazy-safe ones wrapped in one lazy Compose (one resampling)."""
    out: list[Any] = []
    block: list[Any] = []
    for t in transforms:
        if lazy_safe(t):
            block.append(t)
            continue
        if block:
            out.append(_block(block))
            block = []
        out.append(t)
    if block:
        out.append(_block(block))
    return out


def _block(transforms: list[Any]) -> Compose:
    """A lazy block: even a single transform, so every regime resamples through the same path."""
    return Compose(transforms, lazy=True)
