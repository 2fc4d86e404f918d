"""The report's small words: plurals counted out and the multiplication sign."""

from __future__ import annotations

TIMES = "\u00d7"  # "3 epochs × 60 steps", "32 × 32 px", "every other regime × every scored finding"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 seed``, ``2 seeds`` (``many``: an irregular plural, e.g. ``degrees of freedom``)."""
    return f"{n} {word if n == 1 else many or word + 's'}"
