"""The training seeds of a study: ``--seeds N`` (0 to N-1), ``--seeds A-B`` (A to B) or ``--seed-list K ...``."""

from __future__ import annotations

from collections.abc import Sequence

from mai_aug.core.errors import MaiAugError
from mai_aug.core.limits import MAX_COUNTS

#: numpy's (and set_determinism's) seed range: a seed is at least 0 and below this.
SEED_END = 2**32


def parse_seeds(text: str) -> list[int]:
    """``"3"``: seeds 0, 1, 2; ``"2-4"``: seeds 2, 3, 4.

    Raises:
        MaiAugError: not a count or an ascending range of seeds, or more seeds than the limit.
    """
    first, dash, last = text.strip().partition("-")
    try:
        low, high = (int(first), int(last)) if dash else (0, int(first) - 1)
    except ValueError:
        raise MaiAugError(f"`seeds` {text!r}: expected a count (3) or a range of seeds (0-4)") from None
    if not dash and high < 0:
        raise MaiAugError(f"`seeds` {text!r}: at least 1 seed")
    if dash and not 0 <= low <= high:
        raise MaiAugError(f"`seeds` {text!r}: a range A-B needs 0 <= A <= B")
    if high - low + 1 > MAX_COUNTS["seeds"]:  # before the list is built: --seeds 10000000000 must not fill memory
        raise MaiAugError(f"`seeds` {text!r}: {high - low + 1} seeds is above {MAX_COUNTS['seeds']}, "
                          "the largest seeds accepted")
    return check_seeds(list(range(low, high + 1)), "`seeds`")


def check_seeds(seeds: Sequence[int], where: str = "`seed_list`") -> list[int]:
    """``seeds`` as a list, each in numpy's range, none repeated, at most the limit of seeds."""
    seeds = list(seeds)
    if not seeds:
        raise MaiAugError(f"{where}: at least 1 seed")
    if len(seeds) > MAX_COUNTS["seeds"]:
        raise MaiAugError(f"{where}: {len(seeds)} seeds is above {MAX_COUNTS['seeds']}, the largest seeds accepted")
    bad = [k for k in seeds if not 0 <= k < SEED_END]
    if bad:
        raise MaiAugError(f"{where}: seed {bad[0]} is not at least 0 and below 2**32 (numpy's seed range)")
    repeated = sorted({k for k in seeds if seeds.count(k) > 1})
    if repeated:
        raise MaiAugError(f"{where}: seed {repeated[0]} given more than once")
    return seeds
