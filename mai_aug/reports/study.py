"""The study report of ``mai-aug compare``: tables, figures and report.md from the runs' test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mai_aug.data.split import split_table
from mai_aug.reports import compare as report
from mai_aug.reports.roc import roc_figure


def write_report(out: Path, regimes: list[str], seeds: int, datalist: dict, n_boot: int, config: dict) -> pd.DataFrame:
    """auc_by_regime.csv/.png, roc_<regime>.png, summary.csv/.md and report.md from the runs' test predictions."""
    names = list(datalist["labels"])
    predictions: dict[str, list[np.ndarray]] = {}
    labels = patients = None
    for regime in regimes:
        for seed in range(seeds):
            frame = pd.read_csv(out / regime / f"seed-{seed}" / "eval" / "test_predictions.csv")
            predictions.setdefault(regime, []).append(frame[names].to_numpy(dtype=np.float64, copy=True))
            labels = frame[[f"true_{n}" for n in names]].to_numpy(dtype=np.int64, copy=True)
            patients = frame["patient"].to_numpy(copy=True)
    scores = report.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0)
    baseline = "none" if "none" in regimes else regimes[0]
    summary = report.summary_table(scores, names, baseline=baseline)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6f")
    report.auc_by_regime_wide(summary).to_csv(out / "auc_by_regime.csv", index=False, float_format="%.6f")
    report.auc_plot(summary, out / "auc_by_regime.png")
    import matplotlib.pyplot as plt

    for regime in regimes:
        mean_pred = np.mean(predictions[regime], axis=0)
        fig = roc_figure(labels, mean_pred, names, title=f"{regime}: test ROC" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        fig.savefig(out / f"roc_{regime}.png", dpi=110)
        plt.close(fig)
    headline = report.headline_table(summary, baseline)
    paired = report.paired_table(summary, baseline)
    md = [
        "# Regime comparison: summary", "",
        f"Test split: {len(labels)} images of {len(np.unique(patients))} patients; 95% CIs from {n_boot} bootstrap "
        f"resamples of test patients, the same resamples for every regime (paired). `*`: the CI excludes 0.", "",
        report.markdown_table(headline), "",
        f"## Paired difference against `{baseline}`, per finding", "",
        report.markdown_table(paired) if len(paired) else "(no other regime)", "",
    ]
    (out / "summary.md").write_text("\n".join(md))
    sizes = split_table(datalist)
    full = [
        "# mai_aug regime comparison", "",
        f"Data: {config['data']}. Preset: `{config['preset']}`. Regimes: {', '.join(regimes)}. Seeds: {seeds}.", "",
        *md[2:],
        "## Figures", "", "![AUC by regime](auc_by_regime.png)", "",
        *[f"![ROC {r}](roc_{r}.png)" for r in regimes], "",
        "## Split (images, patients, positives per finding)", "", report.markdown_table(sizes.reset_index().rename(columns={"index": ""}), "{}"), "",
        "## Runs", "", *[f"- `{r}/seed-{k}/`: run folder (config.yaml, metrics.csv, checkpoints, eval/)" for r in regimes for k in range(seeds)],
        "", f"TensorBoard: `tensorboard --logdir {out / 'tensorboard'}` overlays the runs (HParams tab: regime, seed, image size).", "",
        "## Exact configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", "",
    ]
    (out / "report.md").write_text("\n".join(full))
    (out / "compare_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return summary
