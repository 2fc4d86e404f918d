"""Two-level uncertainty of a seed-averaged score: the test patients (bootstrap) and the training seeds.

A study's score for one regime is the mean over k seeds of each seed's score on the whole test set. Its error has
two parts: the test patients (what the patient bootstrap of the seed mean measures, including each run's own
per-image noise, averaged over the seeds) and the training seeds beyond that noise. The spread of the k whole-test
scores holds both the seed variance and each run's own test-set noise again; subtracting that noise (estimated from
the bootstrap, which has many resamples) leaves the net seed variance, so the noise is not counted twice (which made
intervals with 2-5 seeds over-cover and 2-3 seeds less powerful than one).

The net seed variance is pooled over a set of columns (the scored findings of one comparison) as one shared ratio
to each column's own test-set noise: a finding-specific scale on a shared variance, with (k-1) x columns degrees of
freedom instead of k-1 per finding. Critical values are Satterthwaite's: the standard error adds the estimated seed
part to the patient part, and its degrees of freedom follow from how much of it the seeds estimate (infinite, so
the normal quantile, when the seeds spread no more than their own test noise); a family's max-statistic is the
normal one (the patient parts' correlation estimated from the resamples, never from the seeds) moved to the t scale
of its fewest degrees of freedom. A correlation between the comparisons is never estimated from 2-5 seeds.

Why Satterthwaite and not a generalized pivot (the fiducial law of the seed variance): with 3 seeds the pivot's
heavy tail (2 degrees of freedom) made 3 seeds less powerful than one when the seeds did not vary at all
(benchmarks/stats_calibration.py: power 8% against 27% at a true +0.01), and over-covered (98-99%) with 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

#: Values within this fraction of a range's edge are moved to it before the logit (a perfect AUC of 1 with a
#: non-zero bootstrap SD would otherwise get a lower bound of 0).
EDGE = 1e-3
#: From this many degrees of freedom of the seeds' spread, a spread below the run noise gives the normal quantile.
#: Chosen by simulation (benchmarks/stats_calibration.py, 14 findings, 3 regimes: the primary's pooled spread has
#: 1.6 degrees of freedom with 2 seeds, 3.2 with 3): with 2 seeds that cut covered 90% and starred 8.7% of null
#: studies with seed effects shared by the findings; keeping the spread's own degrees of freedom there covers 94%.
#: From 3 seeds on the cut keeps 3 seeds more powerful than one when the seeds do not vary (keeping the degrees
#: of freedom there made them less powerful than one).
NORMAL_FROM_DF = 3
#: Draws of the critical-value simulation (fixed seed: the same study gives the same intervals).
DRAWS = 20_000


@dataclass(frozen=True)
class Runs:
    """Per-seed scores of a set of columns: ``point`` (k, C) on the whole test set, ``boot`` (k, B, C) on the shared
    patient resamples. Linear, so a paired difference or a weighted sum of Runs is a Runs."""

    point: np.ndarray
    boot: np.ndarray
    #: the seed spread's degrees of freedom per seed and column beyond the first seed (1; less where the columns'
    #: seed parts correlate, as differences against one baseline do)
    df_per_column: float = 1.0

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


def side_by_side(runs: Sequence[Runs]) -> Runs:
    """The differences of several regimes against one baseline as one Runs, so that their seed variance is pooled
    together (the regimes' primary differences).

    Their seed parts share the baseline's seeds (correlation 1/2 between two of them), so m of them carry
    m / (1 + (m - 1) / 4) columns' worth of degrees of freedom per seed (the chi-square matching the sum's variance),
    not m.
    """
    m = len(runs)
    return Runs(np.concatenate([r.point for r in runs], axis=1), np.concatenate([r.boot for r in runs], axis=2),
                df_per_column=1.0 / (1.0 + (m - 1) / 4.0))


def _var(x: np.ndarray) -> np.ndarray:
    return x.var(0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1:])


@dataclass(frozen=True)
class SeedVariance:
    """The net seed variance of some columns, pooled as one ratio to each column's own test-set noise.

    Attributes:
        spread: the pooled ratio of the seeds' spread to the run noise: (seed variance + noise) / noise, observed
            (NaN with one seed); its sampling law is that ratio's true value x chi2(df) / df.
        noise: (C,) each column's run noise.
        df: the ratio's degrees of freedom, (k-1) x columns (fewer where the columns' seed parts correlate).
    """

    spread: float
    noise: np.ndarray
    df: float

    @property
    def ratio(self) -> float:
        """The seed variance over the run noise (the moment estimate ``spread - 1``, unbiased before truncation)."""
        return self.spread - 1.0 if self.df else np.nan

    @property
    def variance(self) -> np.ndarray:
        """(C,) the net seed variance of each column (0 where the ratio is not positive)."""
        return np.nan_to_num(max(self.ratio, 0.0)) * self.noise

    def satterthwaite_df(self, se2: np.ndarray, k: int) -> np.ndarray:
        """(C,) the degrees of freedom of each column's squared standard error ``se2`` (patient part + seed part):
        the seeds' spread over k has ``df``. Where the spread falls below the noise (no seed variance found) they
        are infinite (the normal quantile) once the spread has :data:`NORMAL_FROM_DF` degrees of freedom; below
        that a low spread is too often luck, so its own degrees of freedom still widen the interval."""
        if self.df >= NORMAL_FROM_DF and self.ratio <= 0:
            return np.full(len(self.noise), np.inf)
        estimated = (self.spread if self.df else 0.0) * self.noise / k
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(estimated > 0, se2**2 * self.df / estimated**2, np.inf)


def pooled_seed_variance(runs: Runs) -> SeedVariance:
    """The net seed variance of ``runs``' columns: the pooled ratio of their seed spreads to their run noises."""
    if runs.seeds < 2:
        return SeedVariance(np.nan, np.zeros(runs.point.shape[1]), 0)
    noise, spread = runs.run_noise(), runs.between_seeds()
    df = (runs.seeds - 1) * len(noise) * runs.df_per_column
    total = noise.sum()
    if total <= 0:  # no resampling noise to measure the seeds against (one resample): no seed part, no interval
        return SeedVariance(np.nan, np.zeros(len(noise)), 0)
    return SeedVariance(float(spread.sum() / total), noise, df)


@dataclass(frozen=True)
class Uncertainty:
    """Standard errors, degrees of freedom and simulated normal deviations of some columns (two-level model).

    Attributes:
        se: (C,) sqrt(patient variance + net seed variance / k).
        draws: (draws, C) |deviation| / se of each column under normal parts (NaN columns where se = 0).
        df: (C,) Satterthwaite's degrees of freedom of each se (inf: the normal quantile).
    """

    se: np.ndarray
    draws: np.ndarray
    df: np.ndarray

    def marginal_c(self, level: float = 0.95) -> np.ndarray:
        """(C,) each column's own two-sided critical value, t on its degrees of freedom (NaN where se = 0): the
        normal quantile exactly without a seed part (one seed: the same interval as ``evaluate``'s)."""
        return np.where(self.se > 0, stats.t.ppf(1 - (1 - level) / 2, self.df), np.nan)

    def max_c(self, level: float = 0.95) -> float:
        """The critical value of the maximum over the live columns (simultaneous intervals): the normal
        max-statistic's quantile moved to the t scale of the fewest degrees of freedom; NaN if none is live."""
        live = self.se > 0
        if not live.any():
            return np.nan
        normal = float(np.quantile(self.draws[:, live].max(1), level))
        return float(stats.t.ppf(stats.norm.cdf(normal), self.df[live].min()))


def uncertainty(groups: Sequence[Runs], draws: int = DRAWS) -> Uncertainty:
    """The two-level uncertainty of the columns of ``groups`` (each pooled on its own), taken together.

    The max-statistic's draws take the patient parts normal with their resampled covariance and independent normal
    seed parts of the estimated seed variance; never below the patient-only normal values (k = 1).
    """
    pooled = [pooled_seed_variance(g) for g in groups]
    k = groups[0].seeds
    patient = np.concatenate([g.patient_part for g in groups], axis=1)
    patient_var = _var(patient)
    seed_var = np.concatenate([p.variance for p in pooled]) / k
    se2 = patient_var + seed_var
    df = np.concatenate([p.satterthwaite_df(se2[part], k) for p, part in zip(pooled, _slices(groups))])
    live = se2 > 0
    out = np.full((draws, len(se2)), np.nan)
    if live.any():
        out[:, live] = np.abs(_simulate(patient[:, live], seed_var[live]))
    return Uncertainty(np.sqrt(se2), out, df)


def _slices(groups: Sequence[Runs]) -> list[slice]:
    edges = np.cumsum([0, *[g.point.shape[1] for g in groups]])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _simulate(patient: np.ndarray, seed_var: np.ndarray, draws: int = DRAWS) -> np.ndarray:
    """(draws, live columns) deviations over their standard errors: the patient parts normal with their resampled
    covariance plus independent normal seed parts of variance ``seed_var``. Hand-written: no library draws a
    max-statistic with a per-column variance component added to a resampled covariance."""
    rng = np.random.default_rng(0)
    cov = np.atleast_2d(np.cov(patient, rowvar=False))
    vals, vecs = np.linalg.eigh(cov)
    deviation = rng.standard_normal((draws, len(cov))) @ (vecs * np.sqrt(np.clip(vals, 0, None))).T
    deviation += rng.standard_normal(deviation.shape) * np.sqrt(seed_var)
    se = np.diag(cov) + seed_var
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
    return (np.minimum(lo + width * special.expit(centre - half), value),
            np.maximum(lo + width * special.expit(centre + half), value))


def normal_quantile(level: float) -> float:
    """z of a two-sided ``level`` interval."""
    return float(stats.norm.ppf(1 - (1 - level) / 2))
