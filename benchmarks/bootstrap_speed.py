"""Time the patient bootstrap of AUCs at full NIH test-set scale: 25,596 images x 14 findings x 1000 resamples.

    python benchmarks/bootstrap_speed.py [--images 25596] [--patients 8000] [--resamples 1000] [--metrics ap ece]

Synthetic predictions with NIH-like prevalences and several images per patient; prints seconds and peak memory
(resident set size, from the operating system).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from mai_aug.stats.auc import auc_table
from mai_aug.stats.scores import metric_table, resolve_metrics

# NIH ChestX-ray14 prevalences in FINDINGS order (Atelectasis ... Pneumothorax), as in split_speed.py
NIH_PREVALENCE = [0.103, 0.025, 0.042, 0.021, 0.119, 0.022, 0.015, 0.002, 0.177, 0.052, 0.056, 0.030, 0.013, 0.047]


def synthetic(images: int, patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, float64 probabilities (rounded to 6 decimals: ties, as sigmoid outputs have) and patient ids."""
    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(0, patients, images))
    labels = (rng.random((images, len(NIH_PREVALENCE))) < NIH_PREVALENCE).astype(np.int64)
    logits = labels * 1.2 + rng.normal(0, 1, labels.shape)
    return labels, np.round(1 / (1 + np.exp(-logits)), 6), patient


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=25_596)
    p.add_argument("--patients", type=int, default=8_000)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--metrics", nargs="*", default=[], help="also time these metrics' tables (same resamples)")
    args = p.parse_args()
    labels, scores, patients = synthetic(args.images, args.patients)
    before = peak_rss_mb()
    start = time.perf_counter()
    table = auc_table(labels, scores, patients, [f"f{j}" for j in range(labels.shape[1])], n_boot=args.resamples)
    seconds = time.perf_counter() - start
    print(f"{args.images} images x {labels.shape[1]} findings x {args.resamples} resamples "
          f"({len(np.unique(patients))} patients, {int(table['scored'].iloc[:-1].sum())} findings scored): "
          f"{seconds:.1f} s, peak memory {peak_rss_mb():.0f} MB (process; {before:.0f} MB before the bootstrap)")
    for metric in resolve_metrics(args.metrics)[1:]:
        start = time.perf_counter()
        metric_table(metric, labels, scores, patients, [f"f{j}" for j in range(labels.shape[1])], n_boot=args.resamples)
        print(f"  {metric.name}: {time.perf_counter() - start:.1f} s, peak memory {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
