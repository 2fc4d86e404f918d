"""The header check every fixed-layout CSV reader shares (NIH's Data_Entry, CheXpert's train/valid CSVs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mai_aug.core.errors import MaiAugError


def require_header(path: Path, names: Sequence[str], expected: Sequence[str], layout: str) -> None:
    """Refuse a header that lacks a column of ``expected`` or holds others or another order.

    Raises:
        MaiAugError: naming the file, the missing columns (or the header seen) and ``layout`` (e.g. "CheXpert's").
    """
    missing = [n for n in expected if n not in names]
    if missing:
        raise MaiAugError(f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} of {layout} header; "
                          f"header is {','.join(names)!r}")
    if tuple(names) != tuple(expected):
        raise MaiAugError(f"{path}: unexpected header {','.join(names)!r}; expected {','.join(expected)!r}")
