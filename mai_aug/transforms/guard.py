"""Regime guards: no transform may mirror a chest, and the deterministic part must be deterministic.

The mirror guard measures handedness instead of reading transform names: an asymmetric probe goes through every
part of a regime (``load`` on a PNG file, then each transform of ``deterministic`` and ``random`` on its own, with
several seeded draws of the random ones) and a transform is refused when the applied spatial map has a negative
determinant or the output matches a mirror image of the probe better than any rotation of it. Flips on either
axis, transposes, negative-scale affines and custom transforms are caught alike; 180-degree rotations pass.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, RandomizableTrait
from monai.transforms.spatial.array import RandAffineGrid
from PIL import Image

from mai_aug.core.errors import MaiAugError
from mai_aug.transforms.probe import (
    DRAWS,
    PROBE_SIZE,
    always_fire,
    apply_once,
    failure,
    looks_mirrored,
    probe_item,
    probe_pattern,
    spatial_det,
)

SITUS_INVERSUS = (
    "a mirrored chest X-ray has the heart, aortic arch and gastric bubble on the wrong side (situs inversus / "
    "dextrocardia): an anatomy almost no patient has, so it teaches the network a different chest rather than the "
    "same chest seen differently (a vertical flip or a transpose is a left-right flip plus a rotation; a 180-degree "
    "rotation keeps the anatomy). Remove the transform, or set 'allow_lateral_flip: true' in the regime for "
    "data that may be mirrored"
)


def check_no_mirror(regime: str, load: Sequence[Any], deterministic: Sequence[Any], random: Sequence[Any]) -> None:
    """Raise if any part of the regime can mirror an image.

    Raises:
        MaiAugError: naming the regime, the part and the transform, with the anatomical reason.
    """
    culprit = _mirroring_load_step(regime, load)
    if culprit is not None:
        _refuse(regime, "load", culprit, "the loaded image is a mirror image of the file")
    item = probe_item()
    for part, transforms in (("deterministic", deterministic), ("random", random)):
        for t in _pieces(transforms, set()):
            how = _how_it_mirrors(t, item)
            if how:
                _refuse(regime, part, t, how)


def _pieces(transforms: Iterable[Any], seen: set[int]) -> Iterable[Any]:
    """Each transform, and each transform any Compose inside it may apply (OneOf, SomeOf, RandomOrder...).

    A container's children are checked on their own: a OneOf's weights or a RandomOrder's order then cannot hide
    a mirror among seeded draws, and two flips that cancel only when both fire are not taken for a rotation.
    """
    for t in transforms:
        if id(t) in seen:
            continue
        seen.add(id(t))
        if not isinstance(t, Compose):
            yield t
        for block in _find(t, Compose):
            yield from _pieces(block.transforms, seen)


def _refuse(regime: str, part: str, transform: Any, how: str) -> None:
    raise MaiAugError(f"regime {regime!r}, {part}: {type(transform).__name__} mirrors the image ({how}): "
                      f"{SITUS_INVERSUS}")


def _mirroring_load_step(regime: str, load: Sequence[Any]) -> Any | None:
    """The load step after which a probe PNG ends up mirrored for good, or None.

    Raises:
        MaiAugError: a load step fails on the probe PNG (named with the regime), in one line.
    """
    pattern = probe_pattern(PROBE_SIZE)
    with tempfile.TemporaryDirectory(prefix="mai_aug_probe_") as tmp:
        path = Path(tmp) / "probe.png"
        Image.fromarray((pattern.numpy() * 255).round().astype(np.uint8), mode="L").save(path)
        data: Any = {"image": str(path), "label": [0] * 14}
        culprit = None
        for t in load:
            try:
                data = t(data)
            except Exception as e:  # any error of a user's load step becomes one line naming it
                raise MaiAugError(f"regime {regime!r}, load: {type(t).__name__} fails on a PNG test image: "
                                  f"{failure(e)}") from None
            image = data.get("image") if isinstance(data, dict) else None
            mirrored = image is not None and not isinstance(image, str) and looks_mirrored(image, pattern)
            culprit = (culprit or t) if mirrored else None
    return culprit


def _how_it_mirrors(transform: Any, item: dict[str, Any]) -> str | None:
    """Why ``transform`` can mirror the probe, or None: a scale range reaching below zero, or a measured mirror."""
    if _scale_range_can_mirror(transform):
        return "its scale range reaches negative factors on one axis"
    random = isinstance(transform, RandomizableTrait)
    fired = always_fire(transform) if random else transform
    for seed in range(DRAWS if random else 1):
        out = apply_once(fired, item, seed)["image"]
        if spatial_det(out) * spatial_det(item["image"]) < 0:
            return "its spatial map has a negative determinant"
        if looks_mirrored(out, item["image"]):
            return "an asymmetric test image comes out as its own mirror image"
    return None


def _scale_range_can_mirror(transform: Any) -> bool:
    """Whether a random affine's scale factors (1 + a draw from its range) can be negative on just one axis."""
    for grid in _find(transform, RandAffineGrid):
        ranges = [_factor_range(r) for r in (tuple(grid.scale_range or ()) + (None, None))[:2]]
        for i, (low, _) in enumerate(ranges):
            if low < 0 and any(high > 0 for j, (_, high) in enumerate(ranges) if j != i):
                return True
    return False


def _factor_range(r: Any) -> tuple[float, float]:
    """RandAffineGrid's scale factor range for one axis: ``(lo, hi)`` or ``f`` meaning ``(-f, f)``, plus 1."""
    if r is None:
        return 1.0, 1.0
    low, high = (float(r[0]), float(r[1])) if isinstance(r, (tuple, list)) else (-float(r), float(r))
    return 1.0 + low, 1.0 + high


def _find(obj: Any, kind: type, depth: int = 4) -> Iterable[Any]:
    """Objects of ``kind`` inside a transform's attributes (MONAI nests array transforms in dictionary ones)."""
    if isinstance(obj, kind):
        yield obj
    if depth == 0 or not hasattr(obj, "__dict__"):
        return
    for value in vars(obj).values():
        for child in value if isinstance(value, (list, tuple)) else (value,):  # Compose/OneOf hold lists
            if type(child).__module__.startswith(("monai.", "mai_aug.")):
                yield from _find(child, kind, depth - 1)


def check_deterministic(regime: str, transforms: Sequence[Any]) -> None:
    """Raise if a transform of the ``deterministic`` part is random: evaluation must give one answer per image."""
    item = probe_item()
    for t in _flatten(transforms):
        # OneOf, SomeOf, RandomOrder are random containers; a random transform may also sit inside a wrapper
        random = any(type(r) is not Compose for r in _find(t, RandomizableTrait))
        if not random:
            a, b = (_plain(apply_once(t, item, seed)["image"]) for seed in (0, 1))
            random = not torch.equal(a, b)
        if random:
            raise MaiAugError(f"regime {regime!r}, deterministic: {type(t).__name__} is random, so evaluation would "
                              f"differ from run to run; move it to 'random'")


def _plain(image: Any) -> torch.Tensor:
    return image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)


def _flatten(transforms: Iterable[Any]) -> Iterable[Any]:
    """Transforms, with plain Compose blocks opened (OneOf, RandomOrder... are random themselves)."""
    for t in transforms:
        if type(t) is Compose:
            yield from _flatten(t.transforms)
        else:
            yield t
