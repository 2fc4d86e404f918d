"""Upper bounds of every count a user sets (command line, presets, settings files): one table, one check.

A count far beyond any real study (``--bootstrap 10000000000``) would otherwise try to allocate hundreds of GiB
or run for years before failing; it is refused at once with one line instead.
"""

from __future__ import annotations

from typing import Any

from mai_aug.core.errors import MaiAugError

#: The largest value of each count, by setting name (the command line's flag with ``_`` for ``-``).
MAX_COUNTS: dict[str, int] = {
    "bootstrap": 100_000,
    "n": 1_000_000,  # phantom images, preview images
    "samples": 1_000,
    "seeds": 1_000,
    "epochs": 100_000,
    "steps_per_epoch": 10_000_000,
    "batch_size": 65_536,
    "workers": 1_024,
    "threads": 4_096,
    "tta": 1_000,
    "max_images": 10_000_000,
    "saliency_max_images": 10_000_000,
    "image_size": 8_192,
    "size": 8_192,  # phantom and preview image size
    "early_stop": 100_000,
    "checkpoint_every": 1_000_000_000,
    "images_per_patient": 10_000,
    "slurm_time": 525_600,  # minutes: a year
}


def limit_problem(key: str, value: Any) -> str | None:
    """Why ``value`` of count ``key`` is too large (``"is above 100000, the limit"``), or None."""
    limit = MAX_COUNTS.get(key)
    if limit is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= limit:
        return None
    return f"{value!r} is above {limit}, the largest {key} accepted"


def check_limit(key: str, value: Any, where: str) -> None:
    """Raise one line naming ``where`` unless ``value`` of count ``key`` is within :data:`MAX_COUNTS`."""
    problem = limit_problem(key, value)
    if problem:
        raise MaiAugError(f"{where}: {problem}")
