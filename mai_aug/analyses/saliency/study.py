"""``compare --saliency``: the pointing game of every run, hit rates per finding and regime with paired differences."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mai_aug.analyses.outputs import read_paired
from mai_aug.analyses.saliency.run import orientation
from mai_aug.core.layout import StudyLayout
from mai_aug.reports import compare as report
from mai_aug.reports.compare import interval_text
from mai_aug.reports.findings import Evidence, macro_differences, macro_family
from mai_aug.reports.words import TIMES
from mai_aug.stats import paired as pairedstats
from mai_aug.stats.paired import baseline_regime
from mai_aug.stats.pointing import hit_matrix, study_scores

KEYS = ["image", "patient", "finding"]


def load_pointing(out: Path, regimes: list[str], seeds: Sequence[int]) -> dict[str, list[pd.DataFrame]]:
    """Every run's ``saliency/pointing.csv``; raises naming the run whose boxes differ from the first run's."""
    frames, _ = read_paired(
        out, regimes, seeds, lambda run: run.saliency_dir / "pointing.csv",
        lambda frame: frame[KEYS].sort_values(KEYS).reset_index(drop=True),
        lambda run, first: (f"{run}: its pointing game scored other images or findings than {first}'s; re-run it "
                            f"(`mai-aug saliency --run {run}`) with the same `max_images`"))
    return frames


def saliency_summary(frames: dict[str, list[pd.DataFrame]], names: list[str], n_boot: int, baseline: str
                     ) -> pd.DataFrame:
    """``summary_table`` of hit rates: per regime and boxed finding (``macro``: the mean over scored findings) the
    rate with its marginal interval and, against ``baseline``, the paired difference with simultaneous intervals."""
    reference = next(iter(frames.values()))[0]
    images = list(dict.fromkeys(reference["image"]))
    patients = reference.drop_duplicates("image").set_index("image").loc[images, "patient"].to_numpy()
    boxed = [n for n in names if n in set(reference["finding"])]
    hits = {regime: [hit_matrix(f, images, boxed) for f in runs] for regime, runs in frames.items()}
    scores = study_scores(hits, patients, n_boot=n_boot, seed=0)
    table = pairedstats.summary_table(scores, boxed, baseline=baseline if baseline in frames else None,
                                      value_name="hit_rate")
    return table.rename(columns={"positive_patients": "boxed_patients"})


def saliency_section(out: Path, regimes: list[str], seeds: Sequence[int], names: list[str], n_boot: int
                     ) -> tuple[list[str], list[Evidence]]:
    """Write ``saliency.csv``; return report.md's lines (hit rates per regime and finding, differences against the
    baseline, where Cardiomegaly's maps sit per regime, and each regime's grid) and the macro hit-rate differences
    (for "What this study shows")."""
    meta = json.loads((StudyLayout(out).run(regimes[0], seeds[0]).saliency_dir / "meta.json").read_text())
    side, tolerance = int(meta["image_size"]), float(meta["tolerance_px"])
    baseline = baseline_regime(regimes)
    frames = load_pointing(out, regimes, seeds)
    summary = saliency_summary(frames, names, n_boot, baseline)
    summary.to_csv(out / "saliency.csv", index=False, float_format="%.6f")
    chance = next(iter(frames.values()))[0].groupby("finding")["chance"].mean()  # the same boxes for every run
    rows = []
    for (regime, finding), row in summary.set_index(["regime", "finding"]).iterrows():
        diff = row.get(f"diff_vs_{baseline}", np.nan)
        rows.append({"regime": regime, "finding": finding, "chance": chance.get(finding, np.nan),
                     "hit rate": interval_text(row["hit_rate"], row["ci_low"], row["ci_high"], signed=False),
                     f"- {baseline}": "" if regime == baseline else interval_text(
                         diff, row.get("diff_ci_low", np.nan), row.get("diff_ci_high", np.nan),
                         star=bool(row.get("ci_excludes_0", False)))})
    orient = [orientation(pd.concat(runs, ignore_index=True), side) for runs in frames.values()]
    seed_words = " and seed" if len(seeds) > 1 else ""
    return ["## Saliency: pointing game", "",
            f"Grad-CAM (`mai-aug saliency`) of every boxed finding of the test images; a hit when the map's peak lies "
            f"within {tolerance:g} px of one of the finding's boxes at the {side} px network input. Hit rate "
            f"[marginal 95% interval, patients{seed_words} resampled, {n_boot} resamples]; the difference against "
            f"`{baseline}` is paired by patient{seed_words}: per finding (5+ boxed patients) simultaneous over every other "
            f"regime {TIMES} scored finding; the macro (the mean over those) a marginal interval, starred over the "
            f"regimes' "
            f"macro comparisons; `*` where it excludes 0. `chance`: the hit rate of a peak drawn uniformly over the input. "
            "Per run: `<regime>/seed-<k>/saliency/`.", "",
            report.markdown_table(pd.DataFrame(rows)), "",
            "Orientation (pooled over seeds):", "",
            *[f"- `{r}`: {o['sentence'] if o else 'no Cardiomegaly box among the images.'}"
              for r, o in zip(frames, orient)], "",
            *[f"![Grad-CAM grid {r}]({StudyLayout.label(r, 0)}/saliency/grid.png)" for r in regimes], ""], \
        macro_differences(summary, baseline, "pointing game (macro hit rate)",
                          macro_family(summary))
