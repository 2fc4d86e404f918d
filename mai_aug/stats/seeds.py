"""Two-level uncertainty of a seed-averaged score: the test patients (bootstrap) and the training seeds.

A study's score for one regime is the mean over k seeds of each seed's score on the whole test set. Its error has
two parts: the test patients (what the patient bootstrap of the seed mean measures, including each run's own
per-image noise, averaged over the seeds) and the training seeds beyond that noise. The spread of the k whole-test
scores holds both the seed variance and each run's own test-set noise again; subtracting that noise (estimated from
the bootstrap, which has many resamples) leaves the net seed variance, so the noise is not counted twice (which made
intervals with 2-5 seeds over-cover and 2-3 seeds less powerful than one).

The net seed variance is pooled over a set of columns (the scored findings of one comparison) as one shared ratio
to each column's own test-set noise: a finding-specific scale on a shared variance, with (k-1) x columns degrees of
freedom instead of k-1 per finding. Critical values come from a parametric simulation of the studentised statistic
that includes the uncertainty of the pooled ratio (a chi-square on its degrees of freedom), the patient parts'
correlation (estimated from the resamples, never from the seeds) and independent seed parts; a correlation
between the comparisons is never estimated from 2-5 seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Values within this fraction of a range's edge are moved to it before the logit (a perfect AUC of 1 with a
#: non-zero bootstrap SD would otherwise get a lower bound of 0).
EDGE = 1e-3
#: Draws of the critical-value simulation (fixed seed: the same study gives the same intervals).
DRAWS = 20_000


@dataclass(frozen=True)
class Runs:
    """Per-seed scores of a set of columns: ``point`` (k, C) on the whole test set, ``boot`` (k, B, C) on the shared
    patient resamples. Linear, so a paired difference or a weighted sum of Runs is a Runs."""

    point: np.ndarray
    boot: np.ndarray

    def __sub__(self, other: Runs) -> Runs:
        return Runs(self.point - other.point, self.boot - other.boot)

    def weighted(self, weight: float) -> Runs:
        return Runs(self.point * weight, self.boot * weight)

    def __add__(self, other: Runs) -> Runs:
        return Runs(self.point + other.point, self.boot + other.boot)

    def column(self, j: int | Sequence[int]) -> Runs:
        cols = np.atleast_1d(j)
        return Runs(self.point[:, cols], self.boot[:, :, cols])

    @property
    def seeds(self) -> int:
        return self.point.shape[0]

    @property
    def value(self) -> np.ndarray:
        """(C,) the seed mean of the whole-test scores."""
        return self.point.mean(0)

    @property
    def patient_part(self) -> np.ndarray:
        """(B, C) each resample's seed mean minus the whole-test seed mean."""
        return self.boot.mean(0) - self.value

    def patient_variance(self) -> np.ndarray:
        """(C,) the patient bootstrap variance of the seed mean."""
        return _var(self.patient_part)

    def run_noise(self) -> np.ndarray:
        """(C,) one run's own test-set noise variance (its whole-test score's spread over patient resamples beyond
        the other seeds'): k/(k-1) x the mean over seeds of the bootstrap variance of (seed minus seed mean)."""
        k = self.seeds
        if k < 2:
            return np.zeros(self.point.shape[1])
        own = self.boot - self.boot.mean(0, keepdims=True)
        return k / (k - 1) * np.mean([_var(own[s]) for s in range(k)], axis=0)

    def between_seeds(self) -> np.ndarray:
        """(C,) the variance (ddof 1) of the k whole-test scores; 0 with one seed."""
        return self.point.var(0, ddof=1) if self.seeds > 1 else np.zeros(self.point.shape[1])


def _var(x: np.ndarray) -> np.ndarray:
    return x.var(0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1:])


@dataclass(frozen=True)
class SeedVariance:
    """The net seed variance of some columns, pooled as one ratio to each column's own test-set noise.

    Attributes:
        spread: the pooled ratio of the seeds' spread to the run noise: (seed variance + noise) / noise, observed
            (NaN with one seed); its sampling law is that ratio's true value x chi2(df) / df.
        noise: (C,) each column's run noise.
        df: the ratio's degrees of freedom, (k-1) x columns.
    """

    spread: float
    noise: np.ndarray
    df: int

    @property
    def ratio(self) -> float:
        """The seed variance over the run noise, median-unbiased (right as often too high as too low), before
        truncation at 0: with few seeds the spread falls below its mean most of the time."""
        return self.spread / (stats.chi2.median(self.df) / self.df) - 1.0 if self.df else np.nan

    @property
    def variance(self) -> np.ndarray:
        """(C,) the net seed variance of each column (0 where the ratio is not positive)."""
        return np.nan_to_num(max(self.ratio, 0.0)) * self.noise

    def fiducial(self, rng: np.random.Generator, draws: int) -> np.ndarray:
        """(draws, 1) draws of the true seed variance / run noise given the observed spread, at least 0
        (the generalized pivot spread x df / chi2(df) - 1, truncated where it would be negative)."""
        return np.clip(self.spread * self.df / rng.chisquare(self.df, (draws, 1)) - 1.0, 0.0, None)


def pooled_seed_variance(runs: Runs) -> SeedVariance:
    """The net seed variance of ``runs``' columns: the pooled ratio of their seed spreads to their run noises."""
    if runs.seeds < 2:
        return SeedVariance(np.nan, np.zeros(runs.point.shape[1]), 0)
    noise, spread = runs.run_noise(), runs.between_seeds()
    df = (runs.seeds - 1) * len(noise)
    total = noise.sum()
    if total <= 0:  # no resampling noise to measure the seeds against (one resample): no seed part, no interval
        return SeedVariance(np.nan, np.zeros(len(noise)), 0)
    return SeedVariance(float(spread.sum() / total), noise, df)


@dataclass(frozen=True)
class Uncertainty:
    """Standard errors and simulated studentised deviations of some columns under the two-level model.

    Attributes:
        se: (C,) sqrt(patient variance + net seed variance / k).
        draws: (draws, C) |studentised deviation| of each column (NaN columns where se = 0).
    """

    se: np.ndarray
    draws: np.ndarray
    seeded: bool = True

    def marginal_c(self, level: float = 0.95) -> np.ndarray:
        """(C,) each column's own two-sided critical value (NaN where se = 0): the normal quantile exactly without a
        seed part (one seed: the same interval as ``evaluate``'s), else the simulated one."""
        if not self.seeded:
            return np.where(self.se > 0, normal_quantile(level), np.nan)
        return np.quantile(self.draws, level, axis=0)

    def max_c(self, level: float = 0.95) -> float:
        """The critical value of the maximum over the live columns (simultaneous intervals); NaN if none is live."""
        live = self.se > 0
        return float(np.quantile(self.draws[:, live].max(1), level)) if live.any() else np.nan


def uncertainty(groups: Sequence[Runs], draws: int = DRAWS) -> Uncertainty:
    """The two-level uncertainty of the columns of ``groups`` (each pooled on its own), taken together.

    Critical values simulate the studentised statistic: the patient parts normal with their resampled covariance,
    independent normal seed parts, and each group's pooled ratio re-estimated from a chi-square on its degrees of
    freedom; never below the patient-only normal values (k = 1).
    """
    pooled = [pooled_seed_variance(g) for g in groups]
    k = groups[0].seeds
    patient = np.concatenate([g.patient_part for g in groups], axis=1)
    se = np.sqrt(_var(patient) + np.concatenate([p.variance for p in pooled]) / k)
    live = se > 0
    out = np.full((draws, len(se)), np.nan)
    if live.any():
        by_group = [np.flatnonzero(live[part]) for part in _slices(groups)]
        out[:, live] = np.abs(_simulate(patient[:, live], pooled, by_group, k, draws))
    return Uncertainty(se, out, seeded=any(p.df > 0 for p in pooled))


def _slices(groups: Sequence[Runs]) -> list[slice]:
    edges = np.cumsum([0, *[g.point.shape[1] for g in groups]])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _simulate(patient: np.ndarray, pooled: list[SeedVariance], live_by_group: list[np.ndarray], k: int,
              draws: int) -> np.ndarray:
    """(draws, live columns) deviations over their standard errors: a generalized-pivot simulation.

    Each draw takes the patient parts normal with their resampled covariance, and a seed part per column normal with
    a seed variance drawn from its fiducial law given the observed pooled spread (:meth:`SeedVariance.fiducial`),
    which carries the uncertainty of a variance seen through few seeds without a plug-in that, cut to 0, covers
    too little. Hand-written: no library draws a max-statistic with such a variance component.
    """
    rng = np.random.default_rng(0)
    cov = np.atleast_2d(np.cov(patient, rowvar=False))
    vals, vecs = np.linalg.eigh(cov)
    deviation = rng.standard_normal((draws, len(cov))) @ (vecs * np.sqrt(np.clip(vals, 0, None))).T
    se = np.diag(cov).copy()
    start = 0
    for sv, live in zip(pooled, live_by_group):
        cols = slice(start, start + len(live))
        start += len(live)
        if sv.df == 0 or not len(live):
            continue
        seed_var = sv.fiducial(rng, draws) * sv.noise[live] / k
        deviation[:, cols] += rng.standard_normal((draws, len(live))) * np.sqrt(seed_var)
        se[cols] += sv.variance[live] / k
    return deviation / np.sqrt(np.where(se > 0, se, 1.0))


def logit_interval(value: np.ndarray, se: np.ndarray, c: np.ndarray | float,
                   bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """``value +/- c x se`` on the logit scale of ``bounds`` (delta method): inside the range without clipping, and
    asymmetric near an edge, where a symmetric interval under-covers (5 positive patients at AUC 0.95: 72%)."""
    lo, hi = bounds
    if not (np.isfinite(lo) and np.isfinite(hi)):  # an unbounded metric (a user's): the symmetric interval
        half = np.asarray(c) * np.asarray(se, float)
        return np.asarray(value, float) - half, np.asarray(value, float) + half
    width = hi - lo
    frac = np.clip((np.asarray(value, float) - lo) / width, EDGE, 1 - EDGE)
    half = np.asarray(c) * np.asarray(se, float) / width / (frac * (1 - frac))
    centre = np.log(frac / (1 - frac))
    value = np.asarray(value, float)  # a value at the very edge (AUC 1) stays inside its own interval
    return (np.minimum(lo + width * _expit(centre - half), value),
            np.maximum(lo + width * _expit(centre + half), value))


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def normal_quantile(level: float) -> float:
    """z of a two-sided ``level`` interval."""
    return float(stats.norm.ppf(1 - (1 - level) / 2))
