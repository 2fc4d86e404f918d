"""The test-time augmentation section of ``compare --tta``: each regime's macro AUC with and without TTA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mai_aug.analyses.outputs import load_predictions
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.reports import compare as report
from mai_aug.reports.compare import interval_text
from mai_aug.stats import paired as pairedstats


def tta_summary(out: Path, regimes: list[str], seeds: Sequence[int], names: list[str], n_boot: int) -> pd.DataFrame:
    """Per regime, the ``summary_table`` rows of its plain and its TTA predictions (``prediction``: plain or tta),
    the difference paired by patient and seed; simultaneous intervals over that regime's scored findings."""
    labels, patients, plain = load_predictions(out, regimes, seeds, names)
    _, _, averaged = load_predictions(out, regimes, seeds, names, pick=RunLayout.tta_predictions)
    tables = []
    for regime in regimes:
        scores = pairedstats.score_regimes(labels, patients, {"plain": plain[regime], "tta": averaged[regime]},
                                      n_boot=n_boot, seed=0)
        table = pairedstats.summary_table(scores, names, baseline="plain").rename(columns={"regime": "prediction"})
        tables.append(table.assign(regime=regime))
    frame = pd.concat(tables, ignore_index=True)
    return frame[["regime", *[c for c in frame if c != "regime"]]]


def tta_section(out: Path, regimes: list[str], seeds: Sequence[int], names: list[str], n_boot: int, draws: int) -> list[str]:
    """Write ``tta.csv``; return report.md's lines: per regime, macro AUC without and with TTA and the difference."""
    summary = tta_summary(out, regimes, seeds, names, n_boot)
    summary.to_csv(StudyLayout(out).tta, index=False, float_format="%.6f")
    macro = summary[summary["finding"] == "macro"]
    rows = []
    for regime, group in macro.groupby("regime", sort=False):
        plain, tta = (group[group["prediction"] == p].iloc[0] for p in ("plain", "tta"))
        rows.append({"regime": regime, "without TTA": _auc(plain), f"with TTA ({draws} draws)": _auc(tta),
                     "TTA - without": interval_text(tta["diff_vs_plain"], tta.get("diff_ci_low", float("nan")),
                                                    tta.get("diff_ci_high", float("nan")),
                                                    star=bool(tta.get("ci_excludes_0", False)))})
    return ["## Test-time augmentation", "",
            f"Each run's test predictions averaged over {draws} draws of its regime's random part (`evaluate --tta "
            f"{draws}`; a regime without a random part is unchanged). Macro AUC [marginal 95% interval]; the "
            f"difference is paired by patient{' and seed' if len(seeds) > 1 else ''} ({n_boot} resamples), its interval "
            f"marginal for the macro, simultaneous over the regime's scored findings per finding, `*` where it "
            f"excludes 0.", "",
            report.markdown_table(pd.DataFrame(rows)), ""]


def _auc(row: pd.Series) -> str:
    return interval_text(row["auc"], row["ci_low"], row["ci_high"], signed=False)
