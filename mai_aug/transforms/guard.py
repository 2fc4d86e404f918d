"""The flip guard: chest X-rays are not left-right symmetric, so a lateral flip is refused by default."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from monai.data import PILReader
from monai.transforms import Flipd, LoadImaged, RandAxisFlipd, RandFlipd

from mai_aug.errors import MaiAugError

SITUS_INVERSUS = (
    "a left-right flip of a chest X-ray puts the heart, aortic arch and gastric bubble on the wrong side "
    "(situs inversus / dextrocardia): an anatomy almost no patient has, so it teaches the network a different "
    "chest rather than the same chest seen differently. Remove the transform, flip another axis, or set "
    "'allow_lateral_flip: true' in the regime if you really mean it"
)


def lateral_axis(load: Sequence[Any]) -> int:
    """The spatial axis that is left-right after ``load``.

    MONAI's PILReader reverses indexing by default, giving (C, W, H): axis 0 is left-right. mai_aug's regimes
    load with ``reverse_indexing: false``, giving (C, H, W) as stored: axis 1 is left-right.
    """
    for t in _flatten(load):
        if isinstance(t, LoadImaged):
            for reader in getattr(t._loader, "readers", []):
                if isinstance(reader, PILReader) and not reader.reverse_indexing:
                    return 1
    return 0


def _flatten(transforms: Iterable[Any]) -> Iterable[Any]:
    for t in transforms:
        yield t
        inner = getattr(t, "transforms", None)
        if isinstance(inner, (list, tuple)):
            yield from _flatten(inner)


def _flip_axes(t: Any) -> tuple[int, ...] | None:
    """The axes a flip transform may flip (None: every axis), or () for anything else."""
    if isinstance(t, RandAxisFlipd):
        return None
    if isinstance(t, (Flipd, RandFlipd)):
        axes = t.flipper.spatial_axis
        if axes is None:
            return None
        return (axes,) if isinstance(axes, int) else tuple(axes)
    return ()


def check_lateral_flip(regime: str, transforms: Sequence[Any], axis: int) -> None:
    """Raise if any transform in ``transforms`` may flip spatial axis ``axis`` (left-right)."""
    for t in _flatten(transforms):
        axes = _flip_axes(t)
        if axes is None or axis in axes or (axis - 2) in axes:  # negative indices count from the end of 2 axes
            what = "every axis" if axes is None else f"spatial_axis={axes[0] if len(axes) == 1 else list(axes)}"
            raise MaiAugError(
                f"regime {regime!r}: {type(t).__name__} ({what}) flips left-right (spatial axis {axis} as loaded): "
                f"{SITUS_INVERSUS}"
            )
