"""report.md's opening "What this study shows": sentences generated from the study's own tables, never hand-written.

Each piece of evidence is one paired difference of a regime against the baseline (in distribution, under the
strongest level of each shift, in the pointing game, at the smallest training size) with its interval and whether
it survives the correction that interval carries. The text says which correction that is and adds the plain caveats
(seeds, test patients, synthetic or real data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mai_aug.reports.words import TIMES, plural

SYNTHETIC = "synthetic phantom"  # how compare names phantom data (study/compare.py), for the caveat


@dataclass(frozen=True)
class Evidence:
    """One paired difference of ``regime`` against the baseline.

    Attributes:
        regime: the regime compared with the baseline.
        what: what was compared, e.g. "in distribution (macro AUC)".
        diff: the point difference (regime minus baseline).
        low: the interval's lower bound.
        high: the interval's upper bound.
        survives: whether the interval excludes 0.
        correction: the family the interval is simultaneous over, in words.
    """

    regime: str
    what: str
    diff: float
    low: float
    high: float
    survives: bool
    correction: str


def macro_differences(summary: pd.DataFrame, baseline: str, what: str, family: str) -> list[Evidence]:
    """The macro difference of every regime against ``baseline`` in a ``summary_table`` (AUC, hit rate, ...)."""
    key = f"diff_vs_{baseline}"
    rows = summary[(summary["finding"] == "macro") & (summary["regime"] != baseline)]
    return [Evidence(r["regime"], what, r[key], r["diff_ci_low"], r["diff_ci_high"], bool(r["ci_excludes_0"]), family)
            for r in rows.to_dict("records") if key in r and np.isfinite(r.get("diff_ci_low", np.nan))]


def macro_family(summary: pd.DataFrame) -> str:
    """In words, the family a ``summary_table``'s macro differences are starred over: the regimes' macro comparisons."""
    sizes = summary.loc[summary["finding"] == "macro", "family_size"].dropna() if "family_size" in summary else []
    n = int(sizes.iloc[0]) if len(sizes) else 1
    return f"marginal 95% interval; starred over the regimes' {plural(n, 'macro comparison')}"


def in_distribution(summary: pd.DataFrame, baseline: str, primary: str = "macro") -> list[Evidence]:
    """The primary difference (macro AUC unless a finding is named) of every regime against ``baseline``."""
    if primary == "macro":
        return macro_differences(summary, baseline, "primary: in distribution (macro AUC)", macro_family(summary))
    rows = summary[summary["finding"] == primary].assign(finding="macro")
    return macro_differences(rows, baseline, f"primary: in distribution ({primary} AUC)", macro_family(rows))


def _strongest_rows(table: pd.DataFrame, baseline: str, identity: dict[str, float]) -> list[tuple[str, dict]]:
    """Per shift type, the non-baseline rows with an interval at the level(s) furthest from the identity (zoom: both
    ends), as (shift, row)."""
    found = []
    for shift, rows in table.groupby("shift", sort=False):
        distance = (rows["level"] - identity.get(shift, 0.0)).abs()
        strongest = rows[np.isclose(distance, distance.max()) & (rows["regime"] != baseline)]
        found += [(shift, r) for r in strongest.to_dict("records") if np.isfinite(r.get("diff_ci_low", np.nan))]
    return found


def strongest_shifts(curve: pd.DataFrame, baseline: str, identity: dict[str, float]) -> list[Evidence]:
    """Per shift type, the macro AUC difference at the level(s) furthest from the identity (``robustness.csv``)."""
    key = f"diff_vs_{baseline}"
    return [Evidence(r["regime"], f"under {shift} {r['level']:g} (macro AUC)", r[key], r["diff_ci_low"],
                     r["diff_ci_high"], bool(r["ci_excludes_0"]),
                     f"the regimes' macro comparisons at {shift} {r['level']:g} (marginal interval)")
            for shift, r in _strongest_rows(curve, baseline, identity)]


def strongest_losses(loss: pd.DataFrame, baseline: str, identity: dict[str, float]) -> list[Evidence]:
    """Per shift type, the difference of AUC lost (shifted minus unshifted) at the level(s) furthest from the
    identity (``robustness_loss.csv``): does a regime lose less to the shift than the baseline?"""
    key = f"diff_vs_{baseline}"
    return [Evidence(r["regime"], f"AUC lost to {shift} {r['level']:g} (shifted minus unshifted)", r[key],
                     r["diff_ci_low"], r["diff_ci_high"], bool(r["ci_excludes_0"]),
                     f"the {plural(int(r['family_size']), f'other-regime {TIMES} level comparison')} of {shift} "
                     f"(Bonferroni)")
            for shift, r in _strongest_rows(loss, baseline, identity)]


def smallest_size(curve: pd.DataFrame, baseline: str) -> list[Evidence]:
    """The macro AUC difference at the smallest training size of the learning curve (``learning_curve.csv``)."""
    key, smallest = f"diff_vs_{baseline}", curve["fraction"].min()
    if smallest == 1.0:  # only the full size: the in-distribution line already says it
        return []
    rows = curve[(curve["fraction"] == smallest) & (curve["regime"] != baseline)]
    return [Evidence(r["regime"], f"trained on {r['fraction']:g} of the training patients ({int(r['n_train_patients'])}) "
                                  f"(macro AUC)", r[key], r["diff_ci_low"], r["diff_ci_high"],
                     bool(r["ci_excludes_0"]), "the regimes' macro comparisons at that size (marginal interval)")
            for r in rows.to_dict("records") if np.isfinite(r.get("diff_ci_low", np.nan))]


def _sentence(e: Evidence) -> str:
    verdict = ("starred: the difference holds" if e.survives else "no difference shown")
    return f"{e.what}: {e.diff:+.3f} [{e.low:+.3f}, {e.high:+.3f}], {verdict}; {e.correction}"


def caveats(seeds: int, patients: int, data: str) -> list[str]:
    """The plain caveats every reading of the findings needs."""
    lines = [f"{patients} test patients; {plural(seeds, 'seed')} per regime"
             + ("" if seeds > 1 else ": seed variance is NOT in any interval, so differences look surer than they are"),
             f"data: {data}" + (": effects on the phantom need not transfer to real radiographs"
                                if data.startswith(SYNTHETIC) else "")]
    return [f"- {line}." for line in lines]


def findings_section(evidence: Iterable[Evidence], baseline: str, seeds: int, patients: int, data: str,
                     regimes: Sequence[str]) -> list[str]:
    """report.md's "What this study shows" lines: per regime, each difference against ``baseline``, then caveats."""
    evidence = list(evidence)
    lines = ["## What this study shows", "",
             f"Generated from the tables below: each line is a paired difference against `{baseline}` "
             f"(regime minus baseline) with its 95% interval and the family that interval is corrected over.", ""]
    for regime in regimes:
        mine = [e for e in evidence if e.regime == regime]
        if regime == baseline or not mine:
            continue
        lines += [f"`{regime}` against `{baseline}`:", "", *[f"- {_sentence(e)}." for e in mine], ""]
    if len(lines) == 4:
        lines += ["No paired difference to report (one regime, or no scored finding).", ""]
    return [*lines, "Caveats:", "", *caveats(seeds, patients, data), ""]
