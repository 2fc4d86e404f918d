"""The shift types of ``mai-aug robustness`` and their levels: plain data, read by the command line before torch loads.

The transforms themselves are in :mod:`mai_aug.transforms.shifts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mai_aug.core.errors import MaiAugError


@dataclass(frozen=True)
class ShiftType:
    """One kind of shift: its default levels, the level that changes nothing, the accepted range and its unit."""

    name: str
    levels: tuple[float, ...]
    identity: float
    low: float
    high: float
    unit: str


SHIFT_TYPES = {s.name: s for s in (
    ShiftType("rotation", (0, 5, 10, 15, 20), 0.0, -180.0, 180.0, "degrees, clockwise as displayed"),
    ShiftType("zoom", (0.85, 0.925, 1.0, 1.075, 1.15), 1.0, 0.25, 4.0, "zoom factor (image size kept)"),
    ShiftType("gamma", (0.6, 0.8, 1.0, 1.3, 1.6), 1.0, 0.1, 10.0, "gamma on the image's own min-max range"),
    ShiftType("noise", (0, 0.05, 0.1, 0.2, 0.4), 0.0, 0.0, 10.0, "Gaussian noise SD / the image's SD"),
    ShiftType("blur", (0, 0.5, 1.0, 1.5, 2.0), 0.0, 0.0, 50.0, "Gaussian blur sigma in pixels of the network input"),
    ShiftType("translation", (0, 0.025, 0.05, 0.075, 0.1), 0.0, -0.5, 0.5, "fraction of the side, down and right"),
)}


def parse_levels(entries: Sequence[str], shifts: Sequence[str], flag: str = "`levels`") -> dict[str, list[float]]:
    """The levels of each chosen shift: the defaults, or ``SHIFT=V1,V2,...`` entries; the identity level is added.

    Raises:
        MaiAugError: an unknown or unchosen shift, a value that is not a number or out of the shift's range.
    """
    unknown = [s for s in shifts if s not in SHIFT_TYPES]
    if unknown:
        raise MaiAugError(f"`shifts` {unknown[0]!r}: expected some of {', '.join(SHIFT_TYPES)}")
    levels = {s: list(SHIFT_TYPES[s].levels) for s in shifts}
    for entry in entries:
        name, _, values = entry.partition("=")
        if name not in levels:
            raise MaiAugError(f"{flag} {entry!r}: {name!r} is not among the chosen shifts ({', '.join(shifts)})")
        kind = SHIFT_TYPES[name]
        try:
            parsed = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise MaiAugError(f"{flag} {entry!r}: expected {name}=V1,V2,... with numbers") from None
        bad = [v for v in parsed if not (math.isfinite(v) and kind.low <= v <= kind.high)]
        if not parsed or bad:
            raise MaiAugError(f"{flag} {entry!r}: {name} levels must be numbers in [{kind.low:g}, {kind.high:g}] "
                              f"({kind.unit})")
        levels[name] = parsed
    return {s: sorted({*v, SHIFT_TYPES[s].identity}) for s, v in levels.items()}
