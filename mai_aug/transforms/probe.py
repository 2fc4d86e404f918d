"""An asymmetric test image and the tools to push it through one transform: what the guards measure with."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose, RandomizableTransform

from mai_aug.core.errors import MaiAugError

COMPARE_SIZE = 48
PROBE_SEED = 14  # of 200 seeds, the pattern least like any of its flips, transposes and rotations (corr <= 0.21)
DRAWS = 8  # seeded draws of each random transform (its probabilities set to 1)
PROBE_SIZE = 48  # handedness does not depend on size; small keeps the guards fast


def probe_pattern(size: int) -> torch.Tensor:
    """A smooth (size, size) pattern in [0, 1] that no flip, transpose or rotation maps onto itself.

    A low-frequency pattern (5 x 5 random values, bicubic) survives rotations, zooms, crops and intensity
    changes, so a transform's output is still recognisable, and its mirror images all look different.
    """
    coarse = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(PROBE_SEED))
    pattern = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    return (pattern - pattern.min()) / (pattern.max() - pattern.min())


def probe_item(size: int = PROBE_SIZE) -> dict[str, Any]:
    """A datalist-like item holding the probe as a (1, size, size) MetaTensor, as the cached images are."""
    return {"image": MetaTensor(probe_pattern(size)[None]), "label": torch.zeros(14)}


def dihedral(x: torch.Tensor) -> Iterator[tuple[bool, torch.Tensor]]:
    """The 8 flips/rotations of a square image as (mirrored, image): 4 rotations, then the 4 mirror images."""
    for mirrored, base in ((False, x), (True, x.flip(-1))):
        for k in range(4):
            yield mirrored, torch.rot90(base, k, (-2, -1))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else 0.0


def as_2d(image: Any, size: int = COMPARE_SIZE) -> torch.Tensor | None:
    """The first channel of an image (2-D or channel-first) as (size, size) floats; None if it is not an image."""
    img = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    img = img.detach().float()
    if img.ndim == 3:
        img = img[0]
    if img.ndim != 2 or min(img.shape) < 2:
        return None
    if min(img.shape) >= size:
        return F.interpolate(img[None, None], size=(size, size), mode="area")[0, 0]
    return F.interpolate(img[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def looks_mirrored(output: Any, reference: torch.Tensor, margin: float = 0.1) -> bool:
    """Whether ``output`` matches a mirror image of ``reference`` clearly better than any rotation of it."""
    out = as_2d(output)
    if out is None:
        return False
    ref = as_2d(reference)
    proper, mirrored = [], []
    for is_mirror, variant in dihedral(ref):
        (mirrored if is_mirror else proper).append(_corr(out, variant))
    return max(mirrored) > 0.5 and max(mirrored) > max(proper) + margin


def spatial_det(image: Any) -> float:
    """Determinant of the spatial part of a MetaTensor's affine (1.0 for plain tensors)."""
    if not isinstance(image, MetaTensor):
        return 1.0
    n = image.ndim - 1
    return float(torch.linalg.det(torch.as_tensor(image.affine, dtype=torch.float64)[:n, :n]))


def always_fire(transform: Any) -> Any:
    """A deep copy of ``transform`` with every random part set to ``prob=1``, so every draw applies it."""
    t = copy.deepcopy(transform)
    stack, seen = [t], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, RandomizableTransform):
            obj.prob = 1.0
        children = list(vars(obj).values()) + list(getattr(obj, "transforms", None) or ())
        stack += [c for c in children if type(c).__module__.startswith(("monai.", "mai_aug."))]
    return t


def apply_once(transform: Any, item: dict[str, Any], seed: int, lazy: bool = False) -> Any:
    """``transform`` applied to a copy of ``item`` (seeded when random), pending operations resolved."""
    t = copy.deepcopy(transform)
    pipeline = Compose([t], lazy=lazy)
    pipeline.set_random_state(seed)
    data = {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in item.items()}
    try:
        return pipeline(data)
    except Exception as e:
        raise MaiAugError(f"{type(transform).__name__} fails on a {item['image'].shape[-1]} px test image: "
                          f"{failure(e)}") from None


def failure(error: BaseException) -> str:
    """An error as one short line: its cause's type and first line (MONAI wraps causes in "applying transform")."""
    cause = error.__cause__ or error
    first = str(cause).splitlines()[0][:200] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}"
