"""The external section of ``compare --external``: per regime the external macro AUC, its paired difference against
the baseline, and the generalisation gap (internal minus external macro AUC over the same findings and networks).

Both macros are over the findings the two datasets share and both test sets score (enough positive and negative
patients in each), so the gap compares like with like. The external set's patient resamples and the internal test
set's are independent (different patients), so a resample of the gap is one of each; seeds pair the regimes as in
every other comparison (:mod:`mai_aug.stats.paired`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mai_aug.analyses.external.run import PREDICTIONS_FILE
from mai_aug.analyses.outputs import load_predictions, read_paired
from mai_aug.core.layout import StudyLayout
from mai_aug.data.label_map import Matching
from mai_aug.reports.compare import interval_text, markdown_table
from mai_aug.reports.findings import Evidence, macro_differences, macro_family
from mai_aug.reports.words import plural
from mai_aug.stats import paired as pairedstats
from mai_aug.stats.auc import scored_findings

#: The gap's range: a difference of two AUCs.
GAP_BOUNDS = (-1.0, 1.0)


@dataclass
class ExternalScores:
    """The study's external statistics: the findings compared and the three summary tables."""

    findings: list[str]
    internal: pd.DataFrame  # summary_table of the internal test set over ``findings``
    external: pd.DataFrame  # summary_table of the external set over ``findings``
    gap: pd.DataFrame  # summary_table of internal minus external macro AUC ("finding" is "macro")
    external_patients: int
    internal_patients: int


def load_external(out: Path, regimes: Sequence[str], seeds: Sequence[int], folder: str, names: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    """Labels, patients and per-regime, per-seed scores of every run's ``external/<folder>/predictions.csv``."""
    truth = [f"true_{n}" for n in names]
    tables, reference = read_paired(
        out, regimes, seeds, lambda run: run.external_file(folder, PREDICTIONS_FILE),
        lambda frame: frame[["image", "patient", *truth]],
        lambda run, first: f"{run}: its external predictions ({folder}) do not cover the images of {first}",
        columns=["image", "patient", *names, *truth])
    scores = {r: [f[list(names)].to_numpy(dtype=np.float64, copy=True) for f in frames] for r, frames in tables.items()}
    return reference[truth].to_numpy(dtype=np.float64), reference["patient"].astype(str).to_numpy(), scores


def external_statistics(out: Path, regimes: list[str], seeds: Sequence[int], run_names: list[str], folder: str,
                        matching: Matching, n_boot: int, baseline: str) -> ExternalScores:
    """Score every regime on the external set and on its own test set over the findings both score, and the gap."""
    ext_labels, ext_patients, ext_scores = load_external(out, regimes, seeds, folder, matching.names)
    int_labels, int_patients, int_probs = load_predictions(out, regimes, seeds, run_names)
    internal = (matching.run_labels(int_labels), int_patients,
                {r: [matching.scores(p) for p in runs] for r, runs in int_probs.items()})
    names, tables = gap_tables(internal, (ext_labels, ext_patients, ext_scores), matching.names, n_boot, baseline)
    return ExternalScores(names, *tables, len(np.unique(ext_patients)), len(np.unique(int_patients)))


#: One test set's labels (n, findings), patients (n,) and per-regime, per-seed scores (n, findings).
TestSet = tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]


def gap_tables(internal: TestSet, external: TestSet, names: Sequence[str], n_boot: int, baseline: str
               ) -> tuple[list[str], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """The findings both sets score and the internal, external and gap ``summary_table``s over them (the gap's one
    row per regime); the internal set's patients resampled with seed 0, the external set's with seed 1."""
    both = scored_findings(*internal[:2]) & scored_findings(*external[:2])
    kept = [n for n, keep in zip(names, both) if keep]
    inside, outside = (pairedstats.score_regimes(labels[:, both], patients, _columns(scores, both), n_boot, seed=seed)
                       for (labels, patients, scores), seed in ((internal, 0), (external, 1)))
    if not kept:
        return kept, (pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    gap = pairedstats.summary_table(_gap_scores(inside, outside), ["gap"], baseline, value_name="gap")
    gap = gap[gap["finding"] == "macro"].reset_index(drop=True)  # its "gap" row repeats the macro (its only column)
    return kept, (pairedstats.summary_table(inside, kept, baseline), pairedstats.summary_table(outside, kept, baseline),
                  gap)


def _columns(scores: dict[str, list[np.ndarray]], keep: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Every run's scores of the ``keep`` findings only."""
    return {r: [p[:, keep] for p in runs] for r, runs in scores.items()}


def _gap_scores(internal: pairedstats.StudyScores, external: pairedstats.StudyScores) -> pairedstats.StudyScores:
    """Internal minus external macro AUC of every run, on independent resamples of the two test sets' patients."""
    point, boot = {}, {}
    for regime in internal.point:
        inside, outside = pairedstats.regime_runs(internal, regime), pairedstats.regime_runs(external, regime)
        point[regime] = inside.point[:, :1] - outside.point[:, :1]
        boot[regime] = inside.boot[:, :, :1] - outside.boot[:, :, :1]
    return pairedstats.StudyScores(point, boot, np.array([True]), np.array([np.nan]), GAP_BOUNDS)


def write_external_section(out: Path, scores: ExternalScores, matching: Matching, description: str, baseline: str,
                           seeds: int, n_boot: int) -> tuple[list[str], list[Evidence]]:
    """``external.csv`` (every table's rows) and report.md's lines; the external and gap differences as evidence."""
    frames = [t.assign(table=name) for name, t in (("internal", scores.internal), ("external", scores.external),
                                                    ("gap", scores.gap)) if len(t)]
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(StudyLayout(out).root / "external.csv", index=False,
                                                    float_format="%.6f")
    lines = _intro(scores, matching, description, seeds, n_boot)
    if not scores.findings:
        return [*lines, "No finding is scored in both test sets: no external comparison.", ""], []
    lines += [markdown_table(_rows(scores, baseline)), "", *_family_note(scores, baseline), ""]
    shared = f"{len(scores.findings)} shared findings, {scores.external_patients} patients"
    evidence = [*macro_differences(scores.external, baseline, f"external test set (macro AUC over {shared})",
                                   macro_family(scores.external)),
                *macro_differences(scores.gap, baseline,
                                   "generalisation gap (internal minus external macro AUC)", macro_family(scores.gap))]
    return lines, evidence


def _intro(scores: ExternalScores, matching: Matching, description: str, seeds: int, n_boot: int) -> list[str]:
    left = [f"without a counterpart: {', '.join(matching.run_only)} (the run's), "
            f"{', '.join(matching.external_only)} (the external set's)"] if matching.run_only or matching.external_only else []
    unscored = [n for n in matching.names if n not in scores.findings]
    return ["## External test set", "",
            f"Every run scored on {description} of {scores.external_patients} patients) through its own deterministic "
            f"part and network (`evaluate --external`), over the findings matched by name ({matching.source}) that "
            f"both test sets score: {', '.join(scores.findings) or 'none'}"
            + (f"; matched but too few positive patients in one test set: {', '.join(unscored)}" if unscored else "")
            + (f"; {left[0]}" if left else "") + ".",
            "",
            f"Macro AUC [marginal 95% interval] over these findings, internal ({scores.internal_patients} test "
            f"patients) and external; the gap is internal minus external (larger: more lost at the other site). "
            f"Intervals cover the test patients of each set ({n_boot} resamples, independent between the sets)"
            + (f" and the {seeds} seeds (paired by seed)." if seeds > 1 else "; one seed: seed variance is in none."),
            ""]


def _rows(scores: ExternalScores, baseline: str) -> pd.DataFrame:
    """One row per regime: internal and external macro AUC, the gap, and their differences against ``baseline``."""
    rows = []
    macro = {name: t[t["finding"] == "macro"].set_index("regime") for name, t in
             (("internal", scores.internal), ("external", scores.external), ("gap", scores.gap))}
    for regime, ext in macro["external"].iterrows():
        gap, inside = macro["gap"].loc[regime], macro["internal"].loc[regime]
        rows.append({"regime": regime, "internal": _value(inside, "auc"), "external": _value(ext, "auc"),
                     f"external - {baseline}": _diff(ext, baseline), "gap (internal - external)": _value(gap, "gap"),
                     f"gap - {baseline}'s": _diff(gap, baseline)})
    return pd.DataFrame(rows)


def _value(row: pd.Series, key: str) -> str:
    return interval_text(row[key], row["ci_low"], row["ci_high"], signed=key == "gap")


def _diff(row: pd.Series, baseline: str) -> str:
    key = f"diff_vs_{baseline}"
    if key not in row or not np.isfinite(row[key]):
        return ""
    return interval_text(row[key], row.get("diff_ci_low", np.nan), row.get("diff_ci_high", np.nan),
                         star=bool(row.get("ci_excludes_0", False)))


def _family_note(scores: ExternalScores, baseline: str) -> list[str]:
    others = scores.external["regime"].nunique() - 1
    return [f"Differences are paired by seed against {baseline}; `*`: the interval simultaneous over the "
            f"{plural(others, 'regime')} compared excludes 0, corrected within each family (the external macro "
            f"differences; the gap differences) and not across them or the study's other families. A negative gap "
            f"difference: the regime loses less AUC at the other site than {baseline}."]

