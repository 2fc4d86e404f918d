"""The one rule for names that become parts of paths: regimes, datasets, labels (``OUT/<regime>/seed-<k>``...).

A name from a user's file or command line is a single path component of a safe character set, so that no path
built from it can leave the run or comparison folder (``/abs``, ``..``), nor read as a MONAI ConfigParser id
(``#`` separates keys there) or as a command-line flag (a leading ``-``).
"""

from __future__ import annotations

import re
from typing import Any

from mai_aug.core.errors import MaiAugError

MAX_NAME = 64
NAME_RULE = f"letters, digits, '-', '_' and '.', not starting with '-' or '.', at most {MAX_NAME} characters"
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")


def is_safe_name(value: Any) -> bool:
    """Whether ``value`` is a string that follows :data:`NAME_RULE`."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it is a safe name, else raise one line naming ``what`` and the rule.

    Args:
        value: the name (from YAML it may be an integer or anything else).
        what: what it names, for the message (``--regimes-file mine.yaml: regime``).

    Raises:
        MaiAugError: ``value`` is not a string of :data:`NAME_RULE`.
    """
    if not is_safe_name(value):
        kind = "" if isinstance(value, str) else " (not a string)"
        raise MaiAugError(f"{what} {value!r}{kind}: not a valid name; use {NAME_RULE}")
    return value
