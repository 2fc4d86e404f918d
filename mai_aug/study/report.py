"""The study report of ``mai-aug compare``: tables, figures and report.md from the runs' test predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.data.split import split_table
from mai_aug.engine.layout import RunLayout, StudyLayout
from mai_aug.reports import compare as report
from mai_aug.reports.reliability import reliability_figure
from mai_aug.reports.roc import roc_figure
from mai_aug.stats import paired as stats
from mai_aug.stats.auc import MIN_POSITIVE_PATIENTS
from mai_aug.stats.paired import baseline_regime
from mai_aug.stats.scores import Metric, resolve_metrics
from mai_aug.study.findings import Evidence, findings_section, in_distribution
from mai_aug.study.runs import read_paired
from mai_aug.utils import dump_yaml


def load_predictions(out: Path, regimes: list[str], seeds: int, names: list[str],
                     pick: Callable[[RunLayout, str], Path] = RunLayout.predictions
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    """Labels, patients and per-regime, per-seed predictions of every run's test predictions (``pick``: which file of
    that layout, e.g. ``RunLayout.tta_predictions``).

    Raises MaiAugError naming the run folder when a file is missing or unreadable, or when a run's predictions do not
    cover the same images in the same order as the first run's (paired statistics need one test set).
    """
    truth = [f"true_{n}" for n in names]
    tables, reference = read_paired(
        out, regimes, seeds, lambda run: pick(run, "test"), lambda frame: frame[["image", "patient", *truth]],
        lambda run, first: (f"{run}: its test predictions do not cover the same images in the same order as {first}; "
                            f"re-run its evaluation (mai-aug evaluate --run {run})"),
        columns=["image", "patient", *names, *truth])
    predictions = {regime: [frame[names].to_numpy(dtype=np.float64, copy=True) for frame in frames]
                   for regime, frames in tables.items()}
    labels = reference[[f"true_{n}" for n in names]].to_numpy(dtype=np.float64)  # NaN: unknown (left out per finding)
    return labels, reference["patient"].to_numpy(), predictions


#: Familywise false-star rates measured in 1000 simulated null studies each (``simulated_study`` of
#: tests/test_stats.py: 80 patients, 2 findings, seed SD 0.3; 0 for the first one-seed figure), printed next to the
#: 5% claim: with one seed and no seed variance, the patient bootstrap of 80 patients is slightly too narrow.
MEASURED_FALSE_STARS = {
    "one seed": "6.6% without seed variance, 73% with it (one seed cannot include it)",
    "seeds": "with seed variance, 4.7%, 3.8% and 4.2% with 2, 3 and 5 seeds",
}


def false_star_text(seeds: int) -> str:
    """The measured familywise false-star rates that apply to a study with ``seeds`` seeds per regime."""
    return (f"measured in 1000 simulated studies with no real difference: "
            f"{MEASURED_FALSE_STARS['seeds' if seeds > 1 else 'one seed']}")


def statistics_text(summary: pd.DataFrame, seeds: int, n_boot: int, baseline: str) -> list[str]:
    """report.md's words: what the intervals contain, what a star means, what was corrected for, unscored findings."""
    k_text = (f"and the training seeds ({seeds} per regime, seed j of every regime drawn together), so **seed variance "
              f"is included**; the seed part is widened as Student's t with {seeds - 1} degree{'s' if seeds > 2 else ''} of freedom"
              if seeds > 1 else "only: **seed variance is not included** (one seed per regime), so a difference may be "
              "one seed's luck; run `--seeds 3` or more before believing it")
    lines = [f"Intervals come from {n_boot} bootstrap resamples of the test patients (the same patients for every "
             f"regime: paired) {k_text}." + (" With 2 seeds the intervals are wide; 3 to 5 seeds are advised." if seeds == 2 else "")]
    fam = summary["family_size"].dropna() if "family_size" in summary else pd.Series(dtype=float)
    c_values = summary["simultaneous_c"].dropna() if "simultaneous_c" in summary else pd.Series(dtype=float)
    if len(fam) and not len(c_values):  # no spread at all: regimes with identical predictions
        lines.append(f"Every paired difference against `{baseline}` is the same in every resample (identical "
                     f"predictions): no interval and no star.")
    elif len(fam):
        c = c_values.iloc[0]
        lines.append(f"`*`: the simultaneous 95% interval of the paired difference against `{baseline}` excludes 0. "
                     f"Corrected for: the number of comparisons, all {int(fam.iloc[0])} of them (every other regime x "
                     f"every scored finding, plus each regime's macro difference), by max-statistic intervals of "
                     f"{c:.2f} standard errors instead of 1.96 for one comparison ({c:.2f} from the correlation "
                     f"between comparisons of the {'patient and seed parts together' if seeds > 1 else 'patient part'})"
                     f"{', and the seed variance' if seeds > 1 else ''}. Over all comparisons together, the "
                     f"chance of any false star is at most 5% if the bootstrap deviations are normal; "
                     f"{false_star_text(seeds)}. "
                     f"The AUC intervals of single regimes are marginal 95% intervals (AUC +/- 1.96 SD of the "
                     f"resamples, as `mai-aug evaluate` writes them), not corrected for the number of comparisons.")
    few = summary[(summary["finding"] != "macro") & ~summary["scored"].astype(bool)].drop_duplicates("finding")
    lines.append(f"A finding is scored when at least {MIN_POSITIVE_PATIENTS} test patients have a positive image (and "
                 f"{MIN_POSITIVE_PATIENTS} a negative one): others get their AUC but no interval and no star. The macro "
                 f"mean is over the scored findings, the same set in every resample (a resample that misses a scored "
                 f"finding's positive or negative patients is drawn again). Findings above chance: scored findings "
                 f"whose interval lies above 0.5.")
    lines.append("Too few positive patients: " + (", ".join(f"{f} ({int(n)})" for f, n in
                                                           zip(few["finding"], few["positive_patients"])) or "none") + ".")
    return [part for line in lines for part in (line, "")][:-1]


def write_figures(out: Path, summary: pd.DataFrame, labels: np.ndarray, predictions: dict[str, list[np.ndarray]],
                  names: list[str]) -> None:
    """auc_by_regime.png, one roc_<regime>.png per regime (each seed's curve, the table's AUC in the legend) and one
    reliability_<regime>.png (pooled over findings and seeds)."""
    study = StudyLayout(out)
    report.auc_plot(summary, study.auc_by_regime.with_suffix(".png"))
    for regime, runs in predictions.items():
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        fig = roc_figure(labels, runs, names, title=f"{regime}: test ROC{seeds}")
        fig.savefig(study.roc(regime), dpi=110)
        plt.close(fig)
        fig = reliability_figure(labels, runs, title=f"{regime}: test reliability{seeds}")
        fig.savefig(study.reliability(regime), dpi=110)
        plt.close(fig)


def metric_sections(out: Path, labels: np.ndarray, patients: np.ndarray, predictions: dict[str, list[np.ndarray]],
                    names: list[str], metrics: list[Metric], n_boot: int, baseline: str) -> list[str]:
    """report.md's sections of the metrics beside AUC; writes summary_<key>.csv for each.

    Each metric is scored on the same patient and seed resamples as AUC (``score_regimes`` with the same seed), and
    its paired differences get simultaneous intervals over its own family (every other regime x every scored
    finding, plus each regime's macro difference, of that metric alone).
    """
    if not metrics:
        return []
    lines = ["## Other metrics", "",
             f"Each metric below uses the same {n_boot} patient (and seed) resamples as AUC. Its paired differences "
             f"against `{baseline}` are corrected **within that metric's own family** (every other regime x every "
             f"scored finding, plus each regime's macro difference, of that metric), with its own multiplier c; the "
             f"AUC family above does not include them, so over all metrics together the chance of some false star "
             f"is above 5%. For a lower-is-better metric a negative difference is an improvement.", ""]
    for metric in metrics:
        scores = stats.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0, metric=metric.name)
        summary = stats.summary_table(scores, names, baseline=baseline, value_name=metric.key)
        summary.to_csv(StudyLayout(out).metric_summary(metric.key), index=False, float_format="%.6f")
        paired = report.paired_table(summary, baseline)
        better = "higher" if metric.higher_is_better else "lower"
        c = summary["simultaneous_c"].dropna() if "simultaneous_c" in summary else pd.Series(dtype=float)
        family = (f" ({int(summary['family_size'].dropna().iloc[0])} comparisons, {c.iloc[0]:.2f} standard errors)"
                  if len(c) else "")
        lines += [f"### `{metric.name}`: {metric.description}; {better} is better", "",
                  report.markdown_table(report.metric_headline(summary, metric.key, metric.name, baseline)), "",
                  f"{metric.name} per finding (marginal 95% intervals):", "",
                  report.markdown_table(report.finding_table(summary, metric.key)), "",
                  f"Paired {metric.name} difference against `{baseline}`, per finding (simultaneous 95% intervals "
                  f"within the {metric.name} family{family}):", "",
                  report.markdown_table(paired) if len(paired) else "(no other regime)", ""]
    return lines


def write_report(out: Path, regimes: list[str], seeds: int, datalist: dict, n_boot: int, config: dict,
                 metrics: list[str] | None = None, sections: Sequence[str] = (),
                 evidence: Sequence[Evidence] = ()) -> pd.DataFrame:
    """auc_by_regime.csv/.png, roc_<regime>.png, reliability_<regime>.png, summary.csv/.md, summary_<metric>.csv
    for each metric of ``metrics`` beside AUC, and report.md from the runs' test predictions; ``sections``: more
    report.md lines (``compare --robustness``, ``--tta``), placed before the figures; ``evidence``: paired
    differences beside the in-distribution ones for report.md's opening "What this study shows"."""
    extra = resolve_metrics(metrics)[1:]
    names = list(datalist["labels"])
    labels, patients, predictions = load_predictions(out, regimes, seeds, names)
    scores = stats.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0)
    baseline = baseline_regime(regimes)
    summary = stats.summary_table(scores, names, baseline=baseline)
    study = StudyLayout(out)
    summary.to_csv(study.summary, index=False, float_format="%.6f")
    report.auc_by_regime_wide(summary).to_csv(study.auc_by_regime, index=False, float_format="%.6f")
    write_figures(out, summary, labels, predictions, names)
    paired = report.paired_table(summary, baseline)
    md = [
        "# Regime comparison: summary", "",
        f"Test split: {len(labels)} images of {len(np.unique(patients))} patients; {seeds} seed(s) per regime, "
        f"seed variance {'included' if seeds > 1 else 'NOT included'}.", "",
        *statistics_text(summary, seeds, n_boot, baseline), "",
        report.markdown_table(report.headline_table(summary, baseline)), "",
        "## AUC per finding (marginal 95% intervals)", "", report.markdown_table(report.finding_table(summary)), "",
        f"## Paired difference against `{baseline}`, per finding (simultaneous 95% intervals)", "",
        report.markdown_table(paired) if len(paired) else "(no other regime)", "",
        *metric_sections(out, labels, patients, predictions, names, extra, n_boot, baseline),
    ]
    study.summary_md.write_text("\n".join(md))
    sizes = split_table(datalist)
    shows = findings_section([*in_distribution(summary, baseline), *evidence], baseline, seeds,
                             len(np.unique(patients)), str(config["data"]), regimes)
    full = [
        "# mai_aug regime comparison", "",
        f"Data: {config['data']}. Preset: `{config['preset']}`. Regimes: {', '.join(regimes)}. Seeds: {seeds}.", "",
        *shows,
        *md[2:],
        *sections,
        "## Figures", "", f"![AUC by regime]({study.auc_by_regime.with_suffix('.png').name})", "",
        *[f"![ROC {r}]({study.roc(r).name})" for r in regimes], "",
        "Reliability diagrams (test predictions of every finding and seed pooled; bins of `ece`, counts below):", "",
        *[f"![Reliability {r}]({study.reliability(r).name})" for r in regimes], "",
        "## Split (images, patients, positives per finding)", "", report.markdown_table(sizes.reset_index().rename(columns={"index": ""}), "{}"), "",
        "## Runs", "", *[f"- `{StudyLayout.label(r, k)}/`: run folder (config.yaml, metrics.csv, checkpoints, eval/)" for r in regimes for k in range(seeds)],
        "", f"TensorBoard: `tensorboard --logdir {study.tensorboard}` overlays the runs (HParams tab: regime, seed, image size).", "",
        "## Exact configuration", "", "```yaml", dump_yaml(config).rstrip(), "```", "",
    ]
    study.report.write_text("\n".join(full))
    study.config.write_text(dump_yaml(config))
    return summary
