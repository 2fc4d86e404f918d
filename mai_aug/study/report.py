"""The study report of ``mai-aug compare``: tables, figures and report.md from the runs' test predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mai_aug.analyses.outputs import load_predictions
from mai_aug.core.layout import StudyLayout
from mai_aug.core.user_yaml import dump_yaml
from mai_aug.data.split import split_table
from mai_aug.reports import compare as report
from mai_aug.reports.export import write_tables
from mai_aug.reports.findings import Evidence, findings_section, in_distribution
from mai_aug.reports.methods import config_table, cost_table, methods_paragraph, regime_lines
from mai_aug.reports.reliability import reliability_figure
from mai_aug.reports.roc import roc_figure
from mai_aug.reports.words import TIMES, plural
from mai_aug.stats import paired as stats
from mai_aug.stats.auc import MIN_POSITIVE_PATIENTS
from mai_aug.stats.paired import NO_STARS_AT, baseline_regime
from mai_aug.stats.planning import DEFAULT_DETECT, plan_table
from mai_aug.stats.scores import Metric, resolve_metrics

#: What benchmarks/stats_calibration.py measured (14 findings, 3 regimes, 200 test patients, 100 simulated null
#: studies per setting: benchmarks/results/stats-calibration-2026-12-03.csv), quoted next to the 5% claims.
MEASURED = {
    "primary": "primary family 1-9% with 3-10 seeds, 5% with one (32% with one seed when seed effects are shared by "
               "the findings: one seed cannot see them)",
    "secondary": "per-finding family 2-9% (Monte Carlo SE up to 2.9 points)",
}


def false_star_text() -> str:
    """The measured familywise false-star rates of the two families."""
    return (f"Measured in simulated studies with no real difference (benchmarks/stats_calibration.py): "
            f"{MEASURED['primary']}; {MEASURED['secondary']}")


def statistics_text(summary: pd.DataFrame, seeds: int, n_boot: int, baseline: str, primary: str = "macro") -> list[str]:
    """report.md's words: what the intervals contain, the primary and secondary families, what was corrected for."""
    lines = [_coverage_text(seeds, n_boot), *_family_text(summary, seeds, baseline, primary),
             "Other families (other metrics, shift levels, training sizes, the pointing game) are corrected within "
             "themselves only: across all families together the chance of some false star is higher than 5%.",
             "AUC intervals of single regimes are marginal 95% intervals on the logit scale (no clipping at 1). AUC is "
             "computed over images, so patients with many follow-up images weigh more. Findings above chance: scored "
             "findings whose interval, Bonferroni-corrected over the scored findings, lies above 0.5."]
    few = summary[(summary["finding"] != "macro") & ~summary["scored"].astype(bool)].drop_duplicates("finding")
    lines.append(f"A finding is scored when at least {MIN_POSITIVE_PATIENTS} test patients have a positive image (and "
                 f"{MIN_POSITIVE_PATIENTS} a negative one): others get their AUC but no interval and no star. The macro "
                 f"mean is over the scored findings, the same set in every resample. Too few positive patients: "
                 + (", ".join(f"{f} ({int(n)})" for f, n in zip(few["finding"], few["positive_patients"])) or "none")
                 + ".")
    return [part for line in lines for part in (line, "")][:-1]


def _coverage_text(seeds: int, n_boot: int) -> str:
    """What every interval covers: the test patients, and the training seeds when there are several."""
    if seeds == 1:
        return (f"Intervals come from {n_boot} bootstrap resamples of the test patients (the same patients for every "
                f"regime: paired) only: **seed variance is not included** (one seed per regime), so they cover the "
                f"test patients for these networks, and a difference may be one seed's luck; run `--seeds 3` or more "
                f"before believing it.")
    return (f"Intervals cover the test patients ({n_boot} bootstrap resamples, the same for every regime and seed: "
            f"paired) and the training seeds ({seeds} per regime, seed j of every regime paired): the seed variance is "
            f"the spread of the seeds' test AUCs net of each run's own test-set noise, pooled over the scored "
            f"findings (the macro differences on their own), its uncertainty "
            f"({plural(seeds - 1, 'degree', 'degrees')} of freedom per finding) entering the critical values through "
            f"Satterthwaite's degrees of freedom.")


def _family_text(summary: pd.DataFrame, seeds: int, baseline: str, primary: str) -> list[str]:
    """The primary and the secondary family: what each holds, its critical value, whether stars are given."""
    if "family" not in summary:
        return []
    fam = summary.dropna(subset=["family"]).drop_duplicates("family").set_index("family")
    lines = []
    if "primary" in fam.index:
        p = fam.loc["primary"]
        lines.append(f"**Primary comparison** (declared before the study): each regime's {primary} AUC difference "
                     f"against `{baseline}`, with a marginal 95% interval; `*` where its interval corrected over the "
                     f"{plural(int(p['family_size']), 'primary comparison')} "
                     f"({p['simultaneous_c']:.2f} standard errors) "
                     f"excludes 0. {false_star_text()}.")
    if "secondary" in fam.index:
        q = fam.loc["secondary"]
        lines.append(f"Secondary: the per-finding differences, simultaneous 95% intervals over the "
                     f"{int(q['family_size'])} comparisons (every other regime {TIMES} every other scored finding; "
                     f"{q['simultaneous_c']:.2f} standard errors); `*` where the interval excludes 0."
                     + (" With 2 seeds no difference is starred, in either family: the seed variance is seen "
                        "through too few degrees of freedom for a 5% claim (simulated null studies starred 9% with "
                        "seed effects shared by the findings); the intervals are shown. 5 or more seeds are advised."
                        if seeds in NO_STARS_AT else ""))
    return lines


def plan_lines(plan: pd.DataFrame, detect: float) -> list[str]:
    """report.md's planning section: half-widths now and the seeds / test patients to detect ``detect``."""
    shown = plan.assign(half_width=plan["half_width"].map(lambda v: f"{v:.4f}"))
    shown = shown.drop(columns=["detect", "power"]).astype(object).where(shown.notna(), "-")
    return ["## Planning: seeds and test patients for a difference of " + f"{detect:g}", "",
            f"From this study's own patient and seed variances: the interval half-width now, and how many seeds (at "
            f"these test patients) or test patients (at these seeds) a true difference of {detect:g} needs for 80% "
            f"power at 95% (`mai-aug plan --study OUT --detect D` for another D). `-`: not reachable that way (seeds "
            f"alone cannot beat the test-set noise, or test patients the seed variance), or unknown with one seed.", "",
            report.markdown_table(shown, "{}"), ""]


def with_plan(summary: pd.DataFrame, plan: pd.DataFrame, primary: str) -> pd.DataFrame:
    """``summary`` with the primary rows' planning columns (half-width, seeds and test patients needed)."""
    if plan.empty:
        return summary
    rows = plan[plan["comparison"].str.startswith("primary")].set_index("regime")
    columns = ["half_width", "detect", "seeds_needed", "test_patients_needed"]
    target = summary["finding"] == primary
    merged = summary.copy()
    for column in columns:
        merged.loc[target, column] = summary.loc[target, "regime"].map(rows[column]).to_numpy()
    return merged


def write_figures(out: Path, summary: pd.DataFrame, labels: np.ndarray, patients: np.ndarray,
                  predictions: dict[str, list[np.ndarray]], names: list[str]) -> None:
    """auc_by_regime.png, one roc_<regime>.png per regime (a panel per finding: the seeds as one band, the table's
    AUC and the positive patients and images in its title) and one reliability_<regime>.png (pooled over findings
    and seeds)."""
    study = StudyLayout(out)
    report.auc_plot(summary, study.auc_by_regime.with_suffix(".png"))
    for regime, runs in predictions.items():
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""  # the ROC's title says so itself
        fig = roc_figure(labels, runs, names, title=f"{regime}: test ROC", patients=patients)
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
             f"against `{baseline}` are corrected **within that metric's own family** (every other regime "
             f"{TIMES} every "
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


def write_report(out: Path, regimes: list[str], seeds: Sequence[int], datalist: dict, n_boot: int, config: dict,
                 metrics: list[str] | None = None, sections: Sequence[str] = (),
                 evidence: Sequence[Evidence] = (), primary: str = "macro",
                 detect: float = DEFAULT_DETECT, export_tables: bool = False) -> pd.DataFrame:
    """auc_by_regime.csv/.png, roc_<regime>.png, reliability_<regime>.png, summary.csv/.md, plan.csv,
    summary_<metric>.csv for each metric of ``metrics`` beside AUC, and report.md from the runs' test predictions;
    ``sections``: more report.md lines (``compare --robustness``, ``--tta``), placed before the figures;
    ``evidence``: paired differences beside the primary ones for report.md's opening "What this study shows";
    ``primary``: the primary comparison's finding (or macro); ``detect``: the difference the planning section sizes;
    ``export_tables``: also every table of report.md as ``tables/NN-name.csv`` and ``.tex``."""
    extra = resolve_metrics(metrics)[1:]
    names = list(datalist["labels"])
    labels, patients, predictions = load_predictions(out, regimes, seeds, names)
    scores = stats.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0)
    baseline = baseline_regime(regimes)
    summary = stats.summary_table(scores, names, baseline=baseline, primary=primary)
    study = StudyLayout(out)
    plan = (plan_table(scores, names, baseline, len(np.unique(patients)), detect, primary=primary)
            if len(regimes) > 1 and scores.scored.any() else pd.DataFrame())
    summary = with_plan(summary, plan, primary)
    plan.to_csv(study.plan, index=False, float_format="%.6f")
    summary.to_csv(study.summary, index=False, float_format="%.6f")
    report.auc_by_regime_wide(summary).to_csv(study.auc_by_regime, index=False, float_format="%.6f")
    write_figures(out, summary, labels, patients, predictions, names)
    paired = report.paired_table(summary, baseline)
    n_patients, k = len(np.unique(patients)), len(seeds)
    md = [
        "# Regime comparison: summary", "",
        f"Test split: {len(labels)} images of {n_patients} patients; {plural(k, 'seed')} per regime, "
        f"seed variance {'included' if k > 1 else 'NOT included'}.", "",
        "## Statistics", "", *statistics_text(summary, k, n_boot, baseline, primary), "",
        "## Macro AUC per regime", "", report.markdown_table(report.headline_table(summary, baseline, primary)), "",
        "## AUC per finding (marginal 95% intervals)", "", report.markdown_table(report.finding_table(summary)), "",
        f"## Secondary: paired difference against `{baseline}`, per finding (simultaneous 95% intervals)", "",
        report.markdown_table(paired) if len(paired) else "(no other regime)", "",
        *(plan_lines(plan, detect) if len(plan) else []),
        *metric_sections(out, labels, patients, predictions, names, extra, n_boot, baseline),
    ]
    study.summary_md.write_text("\n".join(md))
    shows = findings_section([*in_distribution(summary, baseline, primary), *evidence], baseline, k,
                             n_patients, str(config["data"]), regimes)
    described = {"regimes": regimes, "seeds": k, "seed_list": list(seeds), "bootstrap": n_boot, "primary": primary, **config}
    full = [
        "# mai_aug regime comparison", "",
        f"Data: {config['data']}. Preset: `{config['preset']}`. Regimes: {', '.join(regimes)}.", "",
        *shows, "## Methods", "", methods_paragraph(described, patient_split_table(datalist), baseline), "",
        *md[4:], *sections, *figure_lines(study, regimes), *split_lines(datalist),
        *cost_lines(out, regimes, seeds), *configuration_lines(described, study), *run_lines(study, regimes, seeds),
    ]
    study.report.write_text("\n".join(full))
    study.config.write_text(dump_yaml(config))
    if export_tables:
        write_tables(full, study.tables)
    return summary


def figure_lines(study: StudyLayout, regimes: list[str]) -> list[str]:
    """report.md's figures: AUC by regime, each regime's ROC panels and its reliability diagram."""
    return ["## Figures", "", f"![AUC by regime]({study.auc_by_regime.with_suffix('.png').name})", "",
            "ROC curves: one panel per finding, the seeds' curves as one band (their range) around their mean; each "
            "panel's AUC is the tables' (the mean of the seeds') and its positives are counted in patients, the "
            "tables' unit, and in images.", "",
            *[f"![ROC {r}]({study.roc(r).name})" for r in regimes], "",
            "Reliability diagrams: the test predictions of every finding and seed pooled into the bins of `ece` "
            "(counts below). Their pooled ECE is of all those pairs together, so it is not the tables' macro ECE "
            "(`--metrics ece`: the mean of the scored findings' own ECEs).", "",
            *[f"![Reliability {r}]({study.reliability(r).name})" for r in regimes], ""]


def patient_split_table(datalist: dict) -> pd.DataFrame:
    """``split_table`` with each finding's positives as patients with a positive image, then images: ``12 (30)``."""
    sizes = split_table(datalist).astype(object)
    for split in sizes.columns:
        items = datalist[split]
        labels = np.asarray([it["label"] for it in items], dtype=np.float64).reshape(-1, len(datalist["labels"]))
        people = np.asarray([str(it["patient"]) for it in items])
        for j, name in enumerate(datalist["labels"]):
            sizes.loc[name, split] = f"{len(set(people[labels[:, j] == 1]))} ({int(sizes.loc[name, split])})"
    return sizes


def split_lines(datalist: dict) -> list[str]:
    """report.md's split table: images and patients per split, each finding's positive patients (images)."""
    sizes = patient_split_table(datalist)
    return ["## Split", "", "Images and patients per split; per finding, the patients with a positive image and, in "
            "brackets, the positive images (the tables above count positive test patients).", "",
            report.markdown_table(sizes.reset_index().rename(columns={"index": ""}), "{}"), ""]


def run_costs(out: Path, regimes: list[str], seeds: Sequence[int]) -> list[dict]:
    """Each run's device, epochs and training wall time, from its ``DONE`` (none for runs of older code)."""
    costs = []
    for regime in regimes:
        for seed in seeds:
            layout = StudyLayout(out).run(regime, seed)
            done = json.loads(layout.done.read_text()) if layout.done.is_file() else {}
            costs.append({"run": StudyLayout.label(regime, seed), "device": done.get("device"),
                          "epochs": done.get("epochs", "-"), "seconds": done.get("train_seconds"),
                          "resumed": bool(done.get("resumed"))})
    return costs


def cost_lines(out: Path, regimes: list[str], seeds: Sequence[int]) -> list[str]:
    """report.md's compute cost: each run's device and training wall time (training and validation)."""
    return ["## Compute cost", "", "Each run's training wall time (training steps and every validation pass; the test "
            "evaluation and the analyses are not included) and the device it ran on.", "",
            report.markdown_table(cost_table(run_costs(out, regimes, seeds)), "{}"), ""]


def configuration_lines(config: dict, study: StudyLayout) -> list[str]:
    """report.md's trimmed configuration and regime tables; the full one is ``compare_config.yaml``."""
    return ["## Configuration", "", f"The settings that change results (all of them, each regime fully resolved: "
            f"`{study.config.name}`).", "", report.markdown_table(config_table(config), "{}"), "",
            "### Regimes", "", *regime_lines(config.get("regime_specs") or {})]


def run_lines(study: StudyLayout, regimes: list[str], seeds: Sequence[int]) -> list[str]:
    """report.md's list of run folders and the TensorBoard command."""
    return ["## Runs", "", *[f"- `{StudyLayout.label(r, k)}/`: run folder (config.yaml, metrics.csv, checkpoints, "
                             f"eval/)" for r in regimes for k in seeds], "",
            f"TensorBoard: `tensorboard --logdir {study.tensorboard.name}` from this folder overlays the runs (HParams "
            f"tab: regime, seed, image size).", ""]
