"""Figures of a robustness sweep: macro AUC against shift level, one curve (with its interval) per run or regime."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mai_aug.core.errors import MaiAugError, first_line  # noqa: E402
from mai_aug.core.layout import RunLayout, StudyLayout  # noqa: E402
from mai_aug.reports import compare as report  # noqa: E402
from mai_aug.reports.compare import interval_text  # noqa: E402
from mai_aug.reports.intervals import interval_plot  # noqa: E402
from mai_aug.reports.words import TIMES  # noqa: E402
from mai_aug.stats import paired as pairedstats  # noqa: E402
from mai_aug.stats.seeds import Runs, logit_interval, uncertainty  # noqa: E402


def shift_figure(curves: dict[str, pd.DataFrame], shift: str, unit: str,
                 categories: dict[float, str] | None = None) -> plt.Figure:
    """Macro AUC against level for one shift type: per label its points with 95% intervals as dodged error bars.

    Args:
        curves: label (a regime) -> that run's rows of ``robustness/table.csv`` for this shift.
        shift: the shift type (the title).
        unit: what the level means (the x label).
        categories: level -> name for a categorical shift (``site``): ticks at its levels alone, no line.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4))
    series = {}
    for label, rows in curves.items():
        macro = rows[rows["finding"] == "macro"].sort_values("level")
        series[label] = [macro[c].to_numpy(float) for c in ("level", "auc", "ci_low", "ci_high")]
    interval_plot(ax, series, connect=categories is None)
    levels = sorted({float(v) for s in series.values() for v in s[0]})
    ax.set_xticks(levels, [categories.get(v, f"{v:g}") for v in levels] if categories else [f"{v:g}" for v in levels])
    if categories:
        ax.set_xlim(levels[0] - 0.5, levels[-1] + 0.5)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(shift if categories else f"{shift} level ({unit})")
    ax.set_ylabel("test macro ROC AUC (95% CI)")
    ax.set_title(f"Robustness to {shift}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(max(0.0, np.nanmin([ax.get_ylim()[0], 0.45])), min(1.0, ax.get_ylim()[1] + 0.02))
    fig.tight_layout()
    return fig


#: The site shift's two levels by name: a category, not a dose.
SITE_LEVELS = {0.0: "the study's own site", 1.0: "the shifted site (site phantom)"}


#: The arrays of a run's ``predictions.npz`` that every run of a study must share (the paired images and levels).
SHARED = ("images", "patients", "shifts", "levels")


class SweepReader(Mapping):
    """Per (shift, level), each regime's per-seed predictions, read from the runs' ``predictions.npz`` when asked:
    the comparison holds one level of every run at a time, so its memory does not grow with the levels."""

    def __init__(self, files: dict[str, list[Path]], keys: list[tuple[str, float]]) -> None:
        self.files, self.keys = files, keys

    def __getitem__(self, key: tuple[str, float]) -> dict[str, list[np.ndarray]]:
        name = f"level_{self.keys.index(key)}"
        return {regime: [_array(path, name) for path in paths] for regime, paths in self.files.items()}

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _array(path: Path, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as arrays:
        return arrays[name]


def load_sweeps(out: Path, regimes: list[str], seeds: Sequence[int], names: list[str]
                ) -> tuple[np.ndarray, np.ndarray, SweepReader]:
    """Labels, patients and, per (shift, level), each regime's per-seed predictions (read a level at a time).

    Raises MaiAugError naming the run when its file is missing or unreadable, or covers other shifts, levels or test
    images than the first run's (paired statistics need the same shifted images for every regime).
    """
    files: dict[str, list[Path]] = {}
    first, reference = None, None
    for regime in regimes:
        for seed in seeds:
            run = StudyLayout(out).run_dir(regime, seed)
            header = _sweep_header(run, names)
            if reference is None:
                first, reference = run, header
            elif not all(np.array_equal(header[k], reference[k]) for k in SHARED):
                raise MaiAugError(f"{run}: its robustness sweep covers other shifts, levels or images than {first}'s; "
                                  f"re-run it (`mai-aug robustness --run {run}`) with the same `shifts` and `levels`")
            files.setdefault(regime, []).append(RunLayout(run).robustness_predictions)
    keys = list(zip(reference["shifts"].tolist(), (float(v) for v in reference["levels"])))
    return reference["labels"], reference["patients"], SweepReader(files, keys)


def _sweep_header(run: Path, names: list[str]) -> dict[str, np.ndarray]:
    """A run's sweep without its predictions: images, patients, labels, findings, shifts, levels."""
    path = RunLayout(run).robustness_predictions
    try:
        with np.load(path, allow_pickle=False) as arrays:
            header = {k: arrays[k] for k in (*SHARED, "labels", "findings")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise MaiAugError(f"{run}: cannot read {path.relative_to(run)} ({first_line(e)})") from None
    if header["findings"].tolist() != list(names):
        raise MaiAugError(f"{run}: {path.relative_to(run)} holds other findings than the study's")
    return header


def sweep_statistics(labels: np.ndarray, patients: np.ndarray, sweeps: dict[tuple[str, float], dict[str, list]],
                     names: list[str], n_boot: int, baseline: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per (shift, level, regime) the macro AUC and its paired difference against ``baseline``; per (shift, regime)
    the mean macro AUC over the levels (the normalised area under the curve) and its paired difference.

    Each level is scored as ``compare`` scores the unshifted test set (``reports.compare.summary_table``: the same
    patient and seed resamples at every level, so the identity level's rows equal ``summary.csv``'s macro rows);
    the area's deviations are the same weighted sums of each level's deviations.
    """
    curves, parts = [], {}
    for (shift, level), predictions in sweeps.items():
        scores = pairedstats.score_regimes(labels, patients, predictions, n_boot=n_boot, seed=0)
        summary = pairedstats.summary_table(scores, names, baseline=baseline)
        macro = summary[summary["finding"] == "macro"]
        keep = [c for c in ("regime", "auc", "ci_low", "ci_high", f"diff_vs_{baseline}", "diff_ci_low",
                            "diff_ci_high", "ci_excludes_0") if c in macro]
        curves.append(macro[keep].assign(shift=shift, level=level))
        for regime in predictions:
            macro = pairedstats.regime_runs(scores, regime).column(0)
            parts.setdefault(shift, {}).setdefault(regime, []).append((level, macro))
    curve = pd.concat(curves, ignore_index=True)
    curve = curve[["shift", "level", *[c for c in curve if c not in ("shift", "level")]]]
    return curve, area_table(parts, baseline), loss_table(parts, baseline)


def level_weights(levels: np.ndarray) -> np.ndarray:
    """Weights that turn a curve's values at ``levels`` into its trapezoid mean over the level range (1 level: 1)."""
    if len(levels) < 2:
        return np.ones(len(levels))
    return np.trapezoid(np.eye(len(levels)), levels, axis=1) / (levels[-1] - levels[0])


def area_table(parts: dict[str, dict[str, list[tuple[float, Runs]]]], baseline: str,
               level: float = 0.95) -> pd.DataFrame:
    """Per shift and regime: the mean macro AUC over the levels with a marginal interval, and its paired difference
    against ``baseline`` with a marginal interval (one comparison per regime and shift, not corrected for several)."""
    rows = []
    for shift, by_regime in parts.items():
        summed = {}
        for regime, entries in by_regime.items():
            entries = sorted(entries, key=lambda e: e[0])
            w = level_weights(np.array([e[0] for e in entries], float))
            summed[regime] = sum((e[1].weighted(wi) for wi, e in zip(w[1:], entries[1:])), entries[0][1].weighted(w[0]))
        base = summed.get(baseline)
        for regime, runs in summed.items():
            unc = uncertainty([runs])
            low, high = logit_interval(runs.value, unc.se, unc.marginal_c(level))
            row = {"shift": shift, "regime": regime, "mean_auc": runs.value[0], "ci_low": float(low[0]),
                   "ci_high": float(high[0])}
            if base is not None and regime != baseline:
                row.update(_difference(runs - base, baseline, level))
            rows.append(row)
    return pd.DataFrame(rows)


def _difference(diff: Runs, baseline: str, level: float) -> dict[str, object]:
    """A paired difference's columns: value, interval at ``level`` (two-level uncertainty), star."""
    unc = uncertainty([diff])
    value, half = diff.value[0], float(np.nan_to_num(unc.marginal_c(level)[0]) * unc.se[0])
    low, high = max(value - half, -1.0), min(value + half, 1.0)
    return {f"diff_vs_{baseline}": value, "diff_ci_low": low, "diff_ci_high": high,
            "ci_excludes_0": bool(unc.se[0] > 0 and (low > 0 or high < 0))}


def loss_table(parts: dict[str, dict[str, list[tuple[float, Runs]]]], baseline: str,
               level: float = 0.95) -> pd.DataFrame:
    """Per shift, level and regime: the macro AUC the shift costs (shifted minus unshifted, the same run's networks
    on the same patients) and, against ``baseline``, the difference of those losses (a difference in differences).

    Within one run a seed's luck moves the shifted and the unshifted AUC together, so the loss is far less noisy than
    either AUC; its per-seed scores are the two levels' subtracted, as the area's are their weighted sum.
    The difference's intervals are Bonferroni-corrected over every other regime x non-identity level of the shift.
    """
    from mai_aug.transforms.shift_levels import SHIFT_TYPES

    rows = []
    for shift, by_regime in parts.items():
        identity = SHIFT_TYPES[shift].identity if shift in SHIFT_TYPES else 0.0
        losses = {r: _losses(entries, identity) for r, entries in by_regime.items()}
        family = sum(len(v) for r, v in losses.items() if r != baseline)
        strict = 1 - (1 - level) / max(family, 1)
        base = losses.get(baseline, {})
        for regime, by_level in losses.items():
            for lv, runs in by_level.items():
                row = {"shift": shift, "level": lv, "regime": regime, "auc_loss": runs.value[0]}
                if regime != baseline and lv in base:
                    row.update({**_difference(runs - base[lv], baseline, strict), "family_size": family})
                rows.append(row)
    return pd.DataFrame(rows)


def _losses(entries: list[tuple[float, Runs]], identity: float) -> dict[float, Runs]:
    """``{level: per-seed loss}`` of each non-identity level against the identity."""
    by_level = {float(lv): runs for lv, runs in entries}
    if identity not in by_level:
        return {}
    return {lv: runs - by_level[identity] for lv, runs in sorted(by_level.items()) if lv != identity}


def shift_categories(shift: str) -> dict[float, str] | None:
    """The names of a categorical shift's levels (``site``: the test images or the site phantom's); None for a graded
    shift (rotation, zoom, ...)."""
    from mai_aug.transforms.shift_levels import SHIFT_TYPES

    return None if shift in SHIFT_TYPES else SITE_LEVELS


def shift_unit(shift: str) -> str:
    """What a level of ``shift`` means, for axis labels."""
    from mai_aug.transforms.shift_levels import SHIFT_TYPES

    return SHIFT_TYPES[shift].unit if shift in SHIFT_TYPES else "0: the test images, 1: the site phantom's"


def write_sweep_report(out: Path, curve: pd.DataFrame, area: pd.DataFrame, loss: pd.DataFrame, baseline: str,
                       seeds: int, n_boot: int) -> list[str]:
    """``robustness.csv``, ``robustness_area.csv``, ``robustness_loss.csv`` and ``robustness_<shift>.png`` in ``out``;
    returns report.md's section (a table per shift: macro AUC and paired difference per level, the mean over levels,
    then the AUC each level costs and its difference against the baseline's)."""
    curve.to_csv(out / "robustness.csv", index=False, float_format="%.6f")
    area.to_csv(out / "robustness_area.csv", index=False, float_format="%.6f")
    loss.to_csv(out / "robustness_loss.csv", index=False, float_format="%.6f")
    lines = ["## Robustness to test-time shifts", "",
             f"Every run's test images under graded shifts (`mai-aug robustness`; each level's shifted images are the "
             f"same for every regime). Macro AUC [marginal 95% interval] per level; against `{baseline}`, the paired "
             f"macro difference [marginal 95% interval, {n_boot} resamples of patients{' and seeds' if seeds > 1 else ''}"
             f"], `*` where its interval corrected over the regimes' macro comparisons at that level excludes 0 (not "
             f"corrected across levels or shifts). Mean over levels: the area under the macro AUC curve divided by the level "
             f"range, with marginal 95% intervals.", ""]
    for shift in dict.fromkeys(curve["shift"]):
        rows = curve[curve["shift"] == shift]
        fig = shift_figure({r: g.assign(finding="macro") for r, g in rows.groupby("regime", sort=False)}, shift,
                           shift_unit(shift), shift_categories(shift))
        fig.savefig(out / f"robustness_{shift}.png", dpi=110)
        plt.close(fig)
        frame = shift_table(rows, area[area["shift"] == shift], baseline)
        lines += [f"### {shift} ({shift_unit(shift)})", "", report.markdown_table(frame), "",
                  f"![{shift}](robustness_{shift}.png)", "", *loss_lines(loss[loss["shift"] == shift], baseline)]
    return lines


def loss_lines(loss: pd.DataFrame, baseline: str) -> list[str]:
    """report.md's table of the macro AUC each level costs, per regime, with the paired difference in losses."""
    if loss.empty:
        return []
    key, rows = f"diff_vs_{baseline}", []
    for lv, group in loss.groupby("level", sort=True):
        row = {"level": f"{lv:g}"}
        for r in group.to_dict("records"):
            row[r["regime"]] = f"{r['auc_loss']:+.3f}"
            if r["regime"] != baseline and np.isfinite(r.get("diff_ci_low", np.nan)):
                row[f"{r['regime']} - {baseline}"] = interval_text(r[key], r["diff_ci_low"], r["diff_ci_high"],
                                                                   star=bool(r["ci_excludes_0"]))
        rows.append(row)
    family = int(loss["family_size"].dropna().iloc[0]) if "family_size" in loss and loss["family_size"].notna().any() else 0
    return [f"AUC lost to the shift (macro AUC at the level minus unshifted, the same networks and patients); against "
            f"`{baseline}`, the difference of losses [95% interval, Bonferroni over the {family} other-regime {TIMES} "
            f"level comparisons of this shift], `*` where it excludes 0:", "", report.markdown_table(pd.DataFrame(rows)), ""]


def shift_table(curve: pd.DataFrame, area: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One shift's report table: a row per level and one for the mean over levels; per regime its macro AUC
    [CI], and for the others their difference against ``baseline`` [CI]."""
    key = f"diff_vs_{baseline}"

    def cells(d: dict, auc: str) -> dict[str, str]:
        out = {d["regime"]: interval_text(d[auc], d["ci_low"], d["ci_high"], signed=False)}
        if d["regime"] != baseline and key in d:
            out[f"{d['regime']} vs {baseline}"] = interval_text(d[key], d["diff_ci_low"], d["diff_ci_high"],
                                                                star=bool(d.get("ci_excludes_0")))
        return out

    table: dict[str, dict[str, str]] = {}
    for d in curve.to_dict("records"):
        table.setdefault(f"{d['level']:g}", {}).update(cells(d, "auc"))
    for d in area.to_dict("records"):
        table.setdefault("mean over levels", {}).update(cells(d, "mean_auc"))
    return pd.DataFrame([{"level": level, **row} for level, row in table.items()])
