"""Power and planning from a study's own variances: how many seeds (or test patients) a difference needs.

A paired difference averaged over k seeds on n test patients has variance V_common(n) + (noise(n) + seed) / k:
the patient part shared by the seeds, each run's own test-set noise, and the net seed variance
(:mod:`mai_aug.stats.seeds`); both test parts shrink as 1/n. Detecting a true difference ``detect`` with power
``power`` at a two-sided ``level`` needs (c + z_power) x SE <= detect, c the family's critical value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mai_aug.stats.paired import StudyScores, primary_column, regime_runs
from mai_aug.stats.seeds import Runs, pooled_seed_variance, side_by_side, uncertainty

#: Planning looks no further than this many seeds (beyond it: "more test patients").
MAX_SEEDS = 1000
DEFAULT_DETECT = 0.01
DEFAULT_POWER = 0.8


def seeds_needed(common: float, per_seed: float, c: float, detect: float, power: float) -> int | None:
    """Fewest seeds k with (c + z_power) sqrt(common + per_seed / k) <= detect; None if no k up to MAX_SEEDS does."""
    target = (detect / (c + stats.norm.ppf(power))) ** 2
    if not np.isfinite(target) or target <= common:  # no interval (identical predictions): nothing to plan
        return None
    k = math.ceil(per_seed / (target - common)) if per_seed > 0 else 1
    return max(k, 1) if k <= MAX_SEEDS else None


def patients_needed(n: int, test_part: float, seed_part: float, c: float, detect: float, power: float) -> int | None:
    """Test patients at the current seeds for (c + z_power) sqrt(test_part n / n' + seed_part) <= detect."""
    target = (detect / (c + stats.norm.ppf(power))) ** 2
    if not np.isfinite(target) or target <= seed_part:
        return None
    return math.ceil(n * test_part / (target - seed_part))


def _components(diff: Runs) -> tuple[float, float, float, float]:
    """(patient variance now, common patient part, run noise, net seed variance) of a one-column difference."""
    patient = float(diff.patient_variance()[0])
    if diff.seeds < 2:
        return patient, patient, 0.0, 0.0
    pooled = pooled_seed_variance(diff)
    noise = float(pooled.noise[0])
    return patient, max(patient - noise / diff.seeds, 0.0), noise, float(pooled.variance[0])


def _plan_row(diff: Runs, c: float, n: int, detect: float, power: float) -> dict[str, object]:
    """Half-width now, and the seeds / test patients a difference of ``detect`` needs, for one column."""
    k = diff.seeds
    patient, common, noise, seed = _components(diff)
    se = math.sqrt(patient + seed / k)
    row: dict[str, object] = {"half_width": c * se, "detect": detect, "power": power}
    row["seeds_needed"] = seeds_needed(common, noise + seed, c, detect, power) if k > 1 else None
    row["test_patients_needed"] = patients_needed(n, patient, seed / k, c, detect, power)
    return row


def plan_table(scores: StudyScores, names: Sequence[str], baseline: str, n_patients: int,
               detect: float = DEFAULT_DETECT, power: float = DEFAULT_POWER, level: float = 0.95,
               primary: str = "macro") -> pd.DataFrame:
    """Per other regime: the primary's half-width and the seeds / test patients to detect ``detect``; and the same
    for a typical finding of the secondary family (the median over scored findings, at the family's c).

    The critical values are the study's own (at its seed count); with more seeds they shrink a little, so the
    counts are slightly pessimistic. Seeds needed is blank with one seed (no seed variance can be estimated) and where seeds alone cannot reach it
    (then more test patients are needed); test patients needed is blank where the seed variance alone is too large.
    """
    scored = np.concatenate([[0], 1 + np.flatnonzero(scores.scored)]) if scores.scored.any() else np.array([0])
    target = primary_column(primary, names, scored)
    others = [r for r in scores.point if r != baseline]
    diffs = {r: regime_runs(scores, r) - regime_runs(scores, baseline) for r in others}
    primary_unc = uncertainty([side_by_side([diffs[r].column(target) for r in others])])
    secondary = [int(c) for c in scored if c != target]
    c_family = uncertainty([diffs[o].column(secondary) for o in others]).max_c(level) if secondary else np.nan
    rows = []
    for i, r in enumerate(others):
        c = float(primary_unc.marginal_c(level)[i])
        rows.append({"regime": r, "comparison": f"primary ({primary})",
                     **_plan_row(diffs[r].column(target), c, n_patients, detect, power)})
        if secondary:
            per = pd.DataFrame([_plan_row(diffs[r].column(j), c_family, n_patients, detect, power) for j in secondary])
            rows.append({"regime": r, "comparison": "secondary (median finding)",
                         **{col: per[col].median() if per[col].notna().any() else None for col in per}})
    table = pd.DataFrame(rows)
    for col in ("seeds_needed", "test_patients_needed"):
        table[col] = pd.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else math.ceil(v)
                               for v in table[col]], dtype="Int64")
    return table
