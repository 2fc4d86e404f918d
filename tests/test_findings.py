"""report.md's "What this study shows": generated from the tables, null comparisons come out null."""

from __future__ import annotations

import pandas as pd
import pytest

from mai_aug.reports.findings import findings_section, in_distribution, strongest_shifts


def _summary(diff: float, low: float, high: float) -> pd.DataFrame:
    rows = [{"regime": "none", "finding": "macro", "auc": 0.8},
            {"regime": "complex", "finding": "macro", "auc": 0.8 + diff, "diff_vs_none": diff, "diff_ci_low": low,
             "diff_ci_high": high, "ci_excludes_0": low > 0 or high < 0},
            {"regime": "complex", "finding": "Mass", "auc": 0.9, "diff_vs_none": 0.3, "diff_ci_low": 0.2,
             "diff_ci_high": 0.4, "ci_excludes_0": True}]
    return pd.DataFrame(rows)


def test_null_difference_reads_as_null_and_planted_one_as_shown():
    null = findings_section(in_distribution(_summary(0.01, -0.03, 0.05), "none"), "none", 3, 120, "synthetic phantom (/p)",
                            ["none", "complex"])
    text = "\n".join(null)
    assert "in distribution (macro AUC): +0.010 [-0.030, +0.050], no difference shown" in text
    assert "Mass" not in text  # the macro row speaks for the regime, per-finding rows stay in their table
    shown = "\n".join(findings_section(in_distribution(_summary(0.08, 0.02, 0.14), "none"), "none", 3, 120,
                                       "synthetic phantom (/p)", ["none", "complex"]))
    assert "primary: in distribution (macro AUC): +0.080 [+0.020, +0.140], starred: the difference holds" in shown
    assert "120 test patients; 3 seeds per regime." in shown and "need not transfer to real radiographs" in shown


def test_one_seed_and_real_data_caveats():
    text = "\n".join(findings_section([], "none", 1, 50, "NIH data /d", ["none"]))
    assert "No paired difference to report" in text
    assert "seed variance is NOT in any interval" in text and "need not transfer" not in text


def test_strongest_shift_levels_are_the_furthest_from_identity():
    rows = [{"shift": s, "level": lv, "regime": r, "diff_vs_none": 0.01 * lv, "diff_ci_low": -1.0,
             "diff_ci_high": 1.0, "ci_excludes_0": False}
            for s, levels in (("rotation", (0, 10, 20)), ("zoom", (0.85, 1.0, 1.15)))
            for lv in levels for r in ("none", "complex")]
    found = strongest_shifts(pd.DataFrame(rows), "none", {"rotation": 0.0, "zoom": 1.0})
    assert sorted(e.what for e in found) == ["under rotation 20 (macro AUC)", "under zoom 0.85 (macro AUC)",
                                             "under zoom 1.15 (macro AUC)"]
    assert all(e.regime == "complex" and not e.survives for e in found)


def _parts(rng, offsets: dict[str, float], slope: dict[str, float], seeds: int = 3, resamples: int = 400) -> dict:
    """Per-seed sweep scores of two regimes whose seed luck (large) moves every level of a run together."""
    from mai_aug.stats.seeds import Runs

    patient = rng.normal(0, 0.005, resamples)  # the patients' part: the same resamples for every run
    parts = {}
    for r in offsets:
        luck = rng.normal(0, 0.05, seeds)
        parts[r] = []
        for lv in (0.0, 10.0, 20.0):
            point = 0.8 + offsets[r] + slope[r] * lv + luck
            boot = point[:, None] + patient + rng.normal(0, 0.002, (seeds, resamples))
            parts[r].append((lv, Runs(point[:, None], boot[:, :, None])))
    return {"rotation": parts}


def test_auc_loss_cancels_the_runs_own_luck_and_finds_a_real_robustness_gain():
    import numpy as np

    from mai_aug.analyses.robustness.section import loss_table
    from mai_aug.reports.findings import strongest_losses

    rng = np.random.default_rng(0)
    same = loss_table(_parts(rng, {"none": 0.0, "wide": 0.05}, {"none": -0.003, "wide": -0.003}), "none")
    row = same[(same["regime"] == "wide") & (same["level"] == 20.0)].iloc[0]
    assert row["auc_loss"] == pytest.approx(-0.06) and row["diff_vs_none"] == pytest.approx(0.0)
    assert not row["ci_excludes_0"] and row["family_size"] == 2  # 1 other regime x 2 shifted levels
    gain = loss_table(_parts(rng, {"none": 0.0, "wide": -0.03}, {"none": -0.003, "wide": 0.0}), "none")
    found = strongest_losses(gain, "none", {"rotation": 0.0})
    assert len(found) == 1 and found[0].what == "AUC lost to rotation 20 (shifted minus unshifted)"
    assert found[0].diff == pytest.approx(0.06) and found[0].survives  # the seed part cancels within each run
    assert "Bonferroni" in found[0].correction
