"""``compare --export-tables``: every table of report.md as CSV and as a LaTeX (booktabs) tabular."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mai_aug.core.files import write_text_atomic

#: LaTeX's special characters and the report's own symbols, as LaTeX writes them.
LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\u00d7": r"$\times$",
         "\u2192": r"$\rightarrow$", "\u2212": "$-$", "`": ""}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_tables(lines: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """The pipe tables among report.md's ``lines`` (as :func:`reports.compare.markdown_table` writes them), each
    named after the headings above it (``section-subsection``, numbered where a section holds several)."""
    text = "\n".join(lines).split("\n")
    headings: dict[int, str] = {}
    found, i = [], 0
    while i < len(text):
        match = re.match(r"^(#{2,4}) (.+)", text[i])
        if match:
            level = len(match.group(1))
            headings = {k: v for k, v in headings.items() if k < level} | {level: _slug(match.group(2))}
        if text[i].startswith("|") and i + 1 < len(text) and text[i + 1].startswith("|---"):
            head, rows, i = _cells(text[i]), [], i + 2
            while i < len(text) and text[i].startswith("|"):
                rows.append(_cells(text[i]))
                i += 1
            found.append(("-".join(headings[k] for k in sorted(headings)) or "table", pd.DataFrame(rows, columns=head)))
            continue
        i += 1
    return _numbered(found)


def _numbered(found: list[tuple[str, pd.DataFrame]]) -> list[tuple[str, pd.DataFrame]]:
    """``NN-name``, with ``-2``, ``-3`` after a name already used."""
    seen: dict[str, int] = {}
    out = []
    for k, (name, frame) in enumerate(found, 1):
        seen[name] = seen.get(name, 0) + 1
        out.append((f"{k:02d}-{name}" + (f"-{seen[name]}" if seen[name] > 1 else ""), frame))
    return out


#: Words a table's file name leaves out.
STOP_WORDS = {"a", "against", "and", "as", "by", "for", "of", "per", "the", "to"}


def _slug(heading: str) -> str:
    """A heading's first three words that carry meaning, lower-case and dash-joined."""
    words = re.sub(r"[^a-z0-9]+", " ", heading.lower().replace("`", "")).split()
    return "-".join([w for w in words if w not in STOP_WORDS][:3]) or "section"


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``*``, brackets and ``±`` are kept)."""
    return "".join(LATEX.get(ch, ch) for ch in str(text))


def latex_table(frame: pd.DataFrame) -> str:
    """A booktabs ``tabular``: the first column left-aligned, the others too (cells hold intervals as text)."""
    head = " & ".join(latex_escape(c) for c in frame.columns) + r" \\"
    body = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.astype(str).itertuples(index=False)]
    return "\n".join([r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", ""])


def write_tables(lines: Sequence[str], folder: Path) -> list[Path]:
    """Every table of ``lines`` as ``folder/NN-name.csv`` and ``.tex``, the folder's older tables removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.csv"), *folder.glob("*.tex")]:
        old.unlink()
    written = []
    for name, frame in markdown_tables(lines):
        frame = frame.replace(to_replace=r"`", value="", regex=True)
        write_text_atomic(folder / f"{name}.csv", frame.to_csv(index=False))
        write_text_atomic(folder / f"{name}.tex", latex_table(frame))
        written.append(folder / f"{name}.csv")
    return written
