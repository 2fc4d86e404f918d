"""Calibration of ``compare --external``'s generalisation-gap statistics at the real problem's size.

Simulates studies with 3 regimes (``none`` the baseline, two others), the 7 findings NIH and CheXpert share, an
internal test set and an external test set of 200 patients x 2 images each (independent patients, prevalence 0.25),
with benchmarks/stats_calibration.py's model: paired patient effects (shared by every regime and seed within a test
set), each run's own per-image noise, and training-seed effects on a run's signal that are absent, independent
across findings, or shared by all findings of a run. A seed's effect is the network's, so it is added to the run's
signal on BOTH test sets (the correlation the gap's seed part cancels). The external set is shifted: its signal is
``SHIFT`` x the internal one for the baseline.

Each regime is set by population AUC targets: internally ``offset`` above the baseline, externally ``offset - gap``
above it, so its population gap (internal minus external macro AUC) differs from the baseline's by ``gap`` (negative:
it loses less at the other site). Under the null (``gap`` 0) a regime may still be better in distribution by
``offset`` on both sets; its gap difference is then still 0.

Each study is scored as ``external_statistics`` scores a study's runs: ``score_regimes`` on each set (``seed=0`` the
internal, ``seed=1`` the external), the gap's and the external set's ``summary_table``: the study's own
``mai_aug.analyses.external.section.gap_tables``. Per setting:

- ``gap_any_star``: any of the 2 regimes' gap differences starred (the familywise false-star rate under the null);
- ``gap_coverage``: the true gap difference inside the macro row's marginal interval (``diff_ci_low``/``high``);
- ``gap_power``: the share of regimes starred in the true direction (the power, at a non-zero ``gap``);
- the same three for the external macro AUC differences (``ext_*``; null only when ``gap`` and ``offset`` are 0);
- each with its Monte Carlo standard error (``*_mcse``), and the mean marginal half-widths.

The truths are the population's: with k >= 2 seeds, averaged over training seeds; with one seed, those of the
networks trained (one seed's interval covers the test patients only, as the report says).

    python benchmarks/gap_calibration.py --out benchmarks/results/gap-calibration-2026-12-04.csv
    python benchmarks/gap_calibration.py --studies 40 --seeds 5 --seed-effect shared --gap-diff 0 --offset 0.01
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from mai_aug.analyses.external.section import gap_tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats_calibration import IMAGE_SD, PATIENT_SD, SEED_SD, SIGNAL, population_auc  # noqa: E402

FINDINGS = 7  # the findings NIH and CheXpert share
NAMES = [f"F{j}" for j in range(FINDINGS)]
SHIFT = 0.8  # the external set's signal over the internal one (the baseline's: about 0.79 against 0.84 AUC)
PREVALENCE = 0.25
REGIMES = ("none", "basic", "complex")
OTHERS = REGIMES[1:]


@dataclass(frozen=True)
class Setting:
    """One simulated design: seeds per regime, how seed effects act, each other regime's true gap difference and
    in-distribution difference (common to both sets)."""

    seeds: int
    seed_effect: str  # none | independent | shared
    gap_diff: float
    offset: float = 0.0
    patients: int = 200  # per test set
    external_patients: int = 200
    n_boot: int = 200


def signal_at(target: float, seed_sd: float) -> float:
    """The signal whose seed-averaged population AUC is ``target``."""
    return optimize.brentq(lambda s: population_auc(s, seed_sd) - target, 0.0, 10.0)


def regime_signals(setting: Setting, seed_sd: float) -> dict[str, tuple[float, float]]:
    """(internal, external) signal of every regime: the baseline's SIGNAL and SHIFT x SIGNAL; the others' at AUC
    targets ``offset`` and ``offset - gap_diff`` above the baseline's."""
    base_int, base_ext = SIGNAL, SHIFT * SIGNAL
    if setting.offset == 0 and setting.gap_diff == 0:
        other = (base_int, base_ext)
    else:
        other = (signal_at(population_auc(base_int, seed_sd) + setting.offset, seed_sd),
                 signal_at(population_auc(base_ext, seed_sd) + setting.offset - setting.gap_diff, seed_sd))
    return {"none": (base_int, base_ext), **{r: other for r in OTHERS}}


def _test_set(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (2 images per patient), the patients' effects (shared by every run: the pairing) and patient ids."""
    labels = np.repeat((rng.random((n, FINDINGS)) < PREVALENCE).astype(float), 2, axis=0)
    patient = np.repeat(rng.normal(0, PATIENT_SD, (n, FINDINGS)), 2, axis=0)
    return labels, patient, np.repeat(np.arange(n), 2).astype(str)


def simulate(rng: np.random.Generator, setting: Setting) -> dict:
    """One study: both test sets, per-regime per-seed predictions on each, and the true differences."""
    k = setting.seeds
    sd = 0.0 if setting.seed_effect == "none" else SEED_SD
    int_labels, int_patient, int_ids = _test_set(rng, setting.patients)
    ext_labels, ext_patient, ext_ids = _test_set(rng, setting.external_patients)
    int_preds, ext_preds, gap, ext = {}, {}, {}, {}
    for regime, (s_int, s_ext) in regime_signals(setting, sd).items():
        int_preds[regime], ext_preds[regime], gaps, exts = [], [], [], []
        for _ in range(k):
            effect = (np.full(FINDINGS, rng.normal(0, sd)) if setting.seed_effect == "shared"
                      else rng.normal(0, sd, FINDINGS))  # the network's: on both test sets
            int_preds[regime].append(int_labels * (s_int + effect) + int_patient
                                     + rng.normal(0, IMAGE_SD, int_labels.shape))
            ext_preds[regime].append(ext_labels * (s_ext + effect) + ext_patient
                                     + rng.normal(0, IMAGE_SD, ext_labels.shape))
            inside = np.mean([population_auc(s_int + e, 0.0) for e in effect])
            outside = np.mean([population_auc(s_ext + e, 0.0) for e in effect])
            gaps.append(inside - outside)
            exts.append(outside)
        if k > 1:
            gap[regime] = population_auc(s_int, sd) - population_auc(s_ext, sd)
            ext[regime] = population_auc(s_ext, sd)
        else:
            gap[regime], ext[regime] = gaps[0], exts[0]
    return {"internal": (int_labels, int_ids, int_preds), "external": (ext_labels, ext_ids, ext_preds),
            "gap_truth": {r: gap[r] - gap["none"] for r in OTHERS},
            "ext_truth": {r: ext[r] - ext["none"] for r in OTHERS}}


def score_study(study: dict, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gap and external summary tables of one study, built by ``external_statistics``' own ``gap_tables``."""
    _, (_, external, gap) = gap_tables(study["internal"], study["external"], NAMES, n_boot, "none")
    return gap, external


def _family_outcomes(table: pd.DataFrame, truth: dict[str, float], prefix: str) -> dict[str, float]:
    macro = table[(table["finding"] == "macro") & (table["regime"] != "none")].set_index("regime")
    covered = [macro.loc[r, "diff_ci_low"] <= truth[r] <= macro.loc[r, "diff_ci_high"] for r in OTHERS]
    right_way = [bool(macro.loc[r, "ci_excludes_0"]) and np.sign(macro.loc[r, "diff_vs_none"]) == np.sign(truth[r])
                 for r in OTHERS]
    return {f"{prefix}_any_star": float(macro["ci_excludes_0"].any()),
            f"{prefix}_coverage": float(np.mean(covered)),
            f"{prefix}_power": float(np.mean(right_way)),
            f"{prefix}_half_width": float((macro["diff_ci_high"] - macro["diff_ci_low"]).mean() / 2)}


def study_outcomes(rng: np.random.Generator, setting: Setting) -> dict[str, float]:
    """One simulated study's outcomes in both families."""
    study = simulate(rng, setting)
    gap, external = score_study(study, setting.n_boot)
    return {**_family_outcomes(gap, study["gap_truth"], "gap"), **_family_outcomes(external, study["ext_truth"], "ext")}


def run_setting(setting: Setting, studies: int, seed: int = 0) -> dict[str, float]:
    """Mean outcomes over ``studies`` simulated studies, with Monte Carlo standard errors (``*_mcse``)."""
    rng = np.random.default_rng([seed, setting.seeds, int(round(abs(setting.gap_diff) * 1000)),
                                 int(round(setting.offset * 1000)),
                                 ("none", "independent", "shared").index(setting.seed_effect)])
    outcomes = pd.DataFrame([study_outcomes(rng, setting) for _ in range(studies)])
    row = {"seeds": setting.seeds, "seed_effect": setting.seed_effect, "gap_diff": setting.gap_diff,
           "offset": setting.offset, "ext_diff": setting.offset - setting.gap_diff, "studies": studies}
    for column in outcomes:
        row[column] = outcomes[column].mean()
        row[f"{column}_mcse"] = outcomes[column].std(ddof=1) / np.sqrt(studies)
    return row


def settings(seeds: list[int], effects: list[str], gap_diffs: list[float], offsets: list[float],
             n_boot: int) -> list[Setting]:
    """The grid: every seed count x seed effect x gap difference; the offsets at the null gap only (the
    alternatives are at offset 0)."""
    scenarios = [(g, o) for g in gap_diffs for o in (offsets if g == 0 else [0.0])]
    return [Setting(k, e, g, o, n_boot=n_boot) for k, e, (g, o) in itertools.product(seeds, effects, scenarios)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100, help="simulated studies per setting")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--seed-effect", nargs="+", default=["none", "independent", "shared"])
    parser.add_argument("--gap-diff", type=float, nargs="+", default=[0.0, -0.02, -0.04],
                        help="each other regime's true gap minus the baseline's (negative: loses less externally)")
    parser.add_argument("--offset", type=float, nargs="+", default=[0.0, 0.01],
                        help="in-distribution AUC difference common to both sets, at the null gap (gap-diff 0)")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args()
    rows, begin = [], time.monotonic()
    grid = settings(args.seeds, args.seed_effect, args.gap_diff, args.offset, args.n_boot)
    keys = ["seeds", "seed_effect", "gap_diff", "offset", "gap_any_star", "gap_coverage", "gap_power",
            "ext_any_star", "ext_coverage", "ext_power"]
    for i, setting in enumerate(grid, 1):
        start = time.monotonic()
        rows.append(run_setting(setting, args.studies))
        print(f"[{i}/{len(grid)}]", pd.DataFrame(rows[-1:])[keys].to_string(
            index=False, float_format=lambda v: f"{v:.3f}", header=i == 1),
              f" ({time.monotonic() - start:.0f}s)", file=sys.stderr, flush=True)
        if args.out:  # after every setting: an interrupted run keeps what it measured
            pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4f")
    print(f"total {time.monotonic() - begin:.0f}s", file=sys.stderr, flush=True)
    if not args.out:
        print(pd.DataFrame(rows).to_csv(index=False, float_format="%.4f"), end="")


if __name__ == "__main__":
    main()
