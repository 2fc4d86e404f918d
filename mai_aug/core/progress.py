"""Progress lines for long work."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas and matplotlib are imported by the commands that write tables and figures
    pass


class Progress:
    """Print ``label: done/total (pct) elapsed, ETA`` at most every ``every`` seconds and at the end."""

    def __init__(self, label: str, total: int, every: float = 2.0, stream=None) -> None:
        self.label, self.total, self.every = label, max(int(total), 1), every
        self.start = self.last = time.monotonic()
        self.stream = stream or sys.stderr

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else float("nan")
        print(f"{self.label}: {done}/{total} ({100 * done / total:.0f}%) {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
              file=self.stream, flush=True)
