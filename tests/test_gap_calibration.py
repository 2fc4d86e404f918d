"""The fast version of benchmarks/gap_calibration.py: compare --external's gap differences come out null under a null."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gap_calibration import Setting, run_setting  # noqa: E402  (the benchmark's simulator, also tested here)


def test_gap_family_is_null_when_a_regime_is_better_on_both_sets_by_the_same_amount():
    """7 shared findings, 3 regimes, 200 + 200 test patients x 2 images, 5 seeds with seed effects shared by the
    findings (and by both test sets: the same network), each other regime +0.01 AUC on both sets, so its true gap
    difference is 0. 80 studies (fixed seed): any false gap star in at most 12% of them (a true 5% gives 4 +/- 1.9
    of 80; 10 or more has probability under 1%), and the marginal interval covers the true 0 in at least 88% of the
    160 comparisons."""
    null = run_setting(Setting(5, "shared", 0.0, offset=0.01, n_boot=100), 80)
    assert null["gap_any_star"] <= 0.12, null
    assert null["gap_coverage"] >= 0.88, null


def test_the_docs_quote_the_benchmarks_figures():
    """docs/analyses.md's gap-calibration sentence says what benchmarks/results/gap-calibration-2026-12-04.csv holds."""
    import pandas as pd

    frame = pd.read_csv(ROOT / "benchmarks" / "results" / "gap-calibration-2026-12-04.csv")
    text = " ".join((ROOT / "docs" / "analyses.md").read_text().split())
    null, many = frame[frame["gap_diff"] == 0], frame["seeds"] >= 3

    def span(values, scale=100, digits=1):
        return f"{round(values.min() * scale, digits):g}-{round(values.max() * scale, digits):g}%"

    assert f"starred {span(null[null['seeds'] >= 3]['gap_any_star'])} of null studies" in text
    assert f"with one seed {span(null[null['seeds'] == 1]['gap_any_star'])}" in text
    assert f"in {span(frame[many]['gap_coverage'], digits=0)} of comparisons" in text
    power = frame[frame["gap_diff"] == -0.02].groupby("seeds")["gap_power"]
    assert f"{span(power.get_group(3), digits=0)} of the regimes with 3 seeds" in text
    assert f"{span(power.get_group(5), digits=0)} with 5 and {span(power.get_group(10), digits=0)} with 10" in text
