"""Calibration of compare's statistics at the real problem's size, through the project's own functions.

Simulates studies with 14 findings and 3 regimes (``none`` the baseline, two others), 200 test patients with 2
images each (prevalence 0.25), paired patient effects (shared by every regime and seed), each run's own per-image
noise, and training-seed effects on each run's signal that are absent, independent across findings, or shared by all
findings of a run. Each study is scored by ``score_regimes`` + ``summary_table`` exactly as ``compare`` scores its
runs, and the script prints per setting:

- the familywise false-star rate of the primary family (the regimes' macro differences) and of the per-finding
  family, under no true difference;
- the coverage of the true macro difference by the primary's marginal 95% interval;
- the power of the primary (its star) at true macro differences of 0.01-0.05;
- each with its Monte Carlo standard error.

The true difference is the population's: with k >= 2 seeds, averaged over training seeds; with one seed, that of the
networks trained (one seed's interval covers the test patients only, as the report says).

    python benchmarks/stats_calibration.py                      # the grid quoted in README (about an hour here)
    python benchmarks/stats_calibration.py --studies 40 --seeds 3 --seed-effect shared --diff 0
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from mai_aug.stats.paired import score_regimes, summary_table

FINDINGS = 14
NAMES = [f"F{j}" for j in range(FINDINGS)]
#: The per-run signal (in units of the score's noise) that gives a population AUC of about 0.8.
SIGNAL = 1.2
PATIENT_SD = 0.6  # patient effect: shared by every regime and seed (the pairing)
IMAGE_SD = 0.6  # each run's own per-image noise
SEED_SD = 0.03  # training-seed effect on a run's signal, when present: about 0.005 AUC per run and finding


@dataclass(frozen=True)
class Setting:
    """One simulated design: seeds per regime, how seed effects act, the true macro difference of each regime."""

    seeds: int
    seed_effect: str  # none | independent | shared
    diff: float
    patients: int = 200
    n_boot: int = 200


def population_auc(signal: float, seed_sd: float) -> float:
    """AUC over infinitely many patients (and seeds, averaged) of a run with ``signal`` +/- ``seed_sd``."""
    scale = np.sqrt(2 * (PATIENT_SD**2 + IMAGE_SD**2))
    return float(stats.norm.cdf(signal / np.sqrt(scale**2 + seed_sd**2)))


def signal_for(diff: float, seed_sd: float) -> float:
    """The signal of a regime whose seed-averaged population AUC is ``diff`` above the baseline's."""
    target = population_auc(SIGNAL, seed_sd) + diff
    return SIGNAL if diff == 0 else optimize.brentq(lambda s: population_auc(s, seed_sd) - target, 0.0, 10.0)


def simulate(rng: np.random.Generator, setting: Setting) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """One study: labels, patients, per-regime per-seed predictions, and each regime's true macro difference."""
    n, k = setting.patients, setting.seeds
    sd = 0.0 if setting.seed_effect == "none" else SEED_SD
    labels = np.repeat((rng.random((n, FINDINGS)) < 0.25).astype(float), 2, axis=0)
    patient = np.repeat(rng.normal(0, PATIENT_SD, (n, FINDINGS)), 2, axis=0)
    signals = {"none": SIGNAL, "basic": signal_for(setting.diff, sd), "complex": signal_for(setting.diff, sd)}
    preds, truth = {}, {}
    for regime, signal in signals.items():
        runs, realised = [], []
        for _ in range(k):
            effect = (np.full(FINDINGS, rng.normal(0, sd)) if setting.seed_effect == "shared"
                      else rng.normal(0, sd, FINDINGS))
            runs.append(labels * (signal + effect) + patient + rng.normal(0, IMAGE_SD, labels.shape))
            realised.append(np.mean([population_auc(signal + e, 0.0) for e in effect]))
        preds[regime] = runs
        truth[regime] = population_auc(signal, sd) if k > 1 else realised[0]
    return labels, np.repeat(np.arange(n), 2), preds, {r: truth[r] - truth["none"] for r in ("basic", "complex")}


def score_study(rng: np.random.Generator, setting: Setting, index: int) -> dict[str, float]:
    """The outcomes of one simulated study: any false star per family, primary coverage and stars."""
    labels, patients, preds, truth = simulate(rng, setting)
    table = summary_table(score_regimes(labels, patients, preds, n_boot=setting.n_boot, seed=index), NAMES, "none")
    others = table[table["regime"] != "none"]
    macro = others[others["finding"] == "macro"].set_index("regime")
    findings = others[others["finding"] != "macro"]
    covered = [macro.loc[r, "diff_ci_low"] <= truth[r] <= macro.loc[r, "diff_ci_high"] for r in truth]
    return {"primary_any_star": float(macro["ci_excludes_0"].any()),
            "finding_any_star": float(findings["ci_excludes_0"].any()),
            "primary_coverage": float(np.mean(covered)),
            "primary_power": float(macro["ci_excludes_0"].mean()),
            "primary_half_width": float((macro["diff_ci_high"] - macro["diff_ci_low"]).mean() / 2)}


def run_setting(setting: Setting, studies: int, seed: int = 0) -> dict[str, float]:
    """Mean outcomes over ``studies`` simulated studies, with Monte Carlo standard errors (``*_mcse``)."""
    rng = np.random.default_rng([seed, setting.seeds, int(setting.diff * 1000),
                                 ("none", "independent", "shared").index(setting.seed_effect)])
    outcomes = pd.DataFrame([score_study(rng, setting, i) for i in range(studies)])
    row = {"seeds": setting.seeds, "seed_effect": setting.seed_effect, "diff": setting.diff, "studies": studies}
    for column in outcomes:
        row[column] = outcomes[column].mean()
        row[f"{column}_mcse"] = outcomes[column].std(ddof=1) / np.sqrt(studies)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per setting")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--seed-effect", nargs="+", default=["none", "independent", "shared"])
    parser.add_argument("--diff", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.05])
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--out", help="also write the table as CSV")
    args = parser.parse_args()
    rows = []
    for k, effect, diff in itertools.product(args.seeds, args.seed_effect, args.diff):
        start = time.monotonic()
        rows.append(run_setting(Setting(k, effect, diff, n_boot=args.n_boot), args.studies))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.3f}",
                                                header=len(rows) == 1),
              f" ({time.monotonic() - start:.0f}s)", flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
