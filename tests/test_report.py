"""report.md for a paper's supplement: the methods paragraph, the trimmed configuration, the compute cost, the
split in patients and images, ``--export-tables`` (CSV and LaTeX), and figures that read on their own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from test_metrics_config import fake_study, patient_case

from mai_aug.analyses.curves.section import curve_figure
from mai_aug.analyses.robustness.section import SITE_LEVELS, shift_categories, shift_figure
from mai_aug.analyses.saliency.section import grid_figure
from mai_aug.engine.train import device_text
from mai_aug.reports.export import latex_escape, latex_table, markdown_tables, write_tables
from mai_aug.reports.methods import config_table, cost_table, duration_text, regime_lines
from mai_aug.reports.reliability import reliability_figure
from mai_aug.reports.words import plural
from mai_aug.study.report import write_report

LOAD = [{"_target_": "LoadImaged", "keys": "image", "reader": {"_target_": "PILReader", "reverse_indexing": False}},
        {"_target_": "mai_aug.transforms.resize.SmoothResized", "keys": "image", "spatial_size": [32, 32]}]
CONFIG = {
    "preset": "demo", "preset_values": {"data": {"split": "patient", "val_frac": 0.1, "test_frac": 0.2, "seed": 0}},
    "data": "synthetic phantom (n3000-256px-f232476a13, generated into mai_aug's cache)", "regimes": ["none", "sharp"],
    "seeds": 1, "bootstrap": 200, "metrics": ["auc", "ap"],
    "train": {"image_size": 32, "batch_size": 8, "epochs": 3, "steps_per_epoch": 60, "lr": 0.001,
              "weight_decay": 0.0, "weighted_loss": True, "pretrained": "none", "network": "densenet121",
              "network_args": {}, "in_channels": 1, "amp": None, "augment_on": "auto", "early_stop": 0,
              "new_setting": 7},
    "regime_specs": {"none": {"description": "load,\n  resize", "load": LOAD, "deterministic": [], "random": []},
                     "sharp": {"description": "none + rotation", "load": LOAD, "deterministic": [],
                               "random": [{"_target_": "RandRotated", "keys": "image", "range_x": 0.0872665}]}},
    "device": "cpu", "versions": {"python": "3.11", "torch": "2.13", "monai": "1.6.1", "mai_aug": "0.1.0"},
    "robustness": {"levels": {"rotation": [0, 10]}}, "primary": "macro", "detect": 0.01,
}


def test_configuration_table_names_each_setting_once_in_words():
    table = config_table(CONFIG).set_index("setting")["value"]
    assert table["image size"] == "32 \u00d7 32 px" and table["loss"] == "class-balanced binary cross-entropy"
    assert table["initial weights"] == "random (trained from scratch)" and table["new setting"] == "7"
    assert table["robustness"] == "levels: rotation: 0, 10" and table["software"].startswith("python 3.11, torch")
    assert table["split"].startswith("patient-wise, validation 0.1 and test 0.2")
    assert not any("&id" in v or "\n" in v for v in table)


def test_regime_table_states_the_shared_loading_once():
    lines = regime_lines(CONFIG["regime_specs"])
    assert lines[0].startswith("Every regime loads each image by LoadImaged(reader=PILReader) \u2192 "
                               "SmoothResized(spatial_size=32 \u00d7 32)")
    assert "| `sharp` | none + rotation | - | RandRotated(range_x=0.0872665) |" in lines[2]
    assert "| `none` | load, resize |" in lines[2] and "_target_" not in "\n".join(lines)
    specs = {**CONFIG["regime_specs"], "other": {"load": LOAD[:1], "deterministic": [], "random": []}}
    assert "| loading |" in regime_lines(specs)[0]  # loading differs: one column per regime


def test_cost_table_and_words():
    costs = [{"run": "none/seed-0", "device": "cpu (2 threads)", "epochs": 3, "seconds": 65.4},
             {"run": "none/seed-1", "device": "cpu (2 threads)", "epochs": 3, "seconds": 3725, "resumed": True},
             {"run": "old/seed-0"}]
    table = cost_table(costs)
    assert table["training wall time"].tolist() == ["1 min 05 s", "1 h 02 min (the last session: it was resumed)",
                                                    "-", "1 h 03 min (2 of 3 runs timed)"]
    assert duration_text(42.4) == "42 s" and plural(1, "seed") == "1 seed" and plural(2, "seed") == "2 seeds"
    assert device_text(torch.device("cpu")).startswith("cpu (") and "DDP" in device_text(torch.device("cpu"), 2)


def test_tables_parse_back_and_escape_for_latex(tmp_path):
    lines = ["## Robustness", "", "### rotation (degrees)", "", "| level | a_b |", "|---|---|", "| 0 | 50% & up |",
             "", "| x | y |", "|---|---|", "| `r` | 1 \u00d7 2 |", "", "## Split", "", "| | test |", "|---|---|",
             "| images | 3 |"]
    tables = markdown_tables(lines)
    assert [name for name, _ in tables] == ["01-robustness-rotation-degrees", "02-robustness-rotation-degrees-2",
                                            "03-split"]
    assert tables[0][1].to_dict("records") == [{"level": "0", "a_b": "50% & up"}]
    tex = latex_table(tables[0][1])
    assert r"a\_b" in tex and r"50\% \& up \\" in tex and tex.startswith(r"\begin{tabular}{ll}")
    assert latex_escape("1 \u00d7 2") == r"1 $\times$ 2"
    (tmp_path / "99-stale.csv").write_text("old")
    written = write_tables(lines, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in written] + [p.with_suffix(".tex").name for p in written])
    assert pd.read_csv(tmp_path / "02-robustness-rotation-degrees-2.csv").iloc[0].tolist() == ["r", "1 \u00d7 2"]


def test_report_reads_as_a_supplement(tmp_path):
    labels, probs, pid = patient_case(2, patients=60)
    datalist = fake_study(tmp_path, {"none": probs, "sharp": probs}, labels, pid, ["A", "B"])
    done = tmp_path / "none" / "seed-0" / "DONE"
    done.write_text(json.dumps({"epochs": 3, "train_seconds": 75.0, "resumed": False, "device": "cpu (2 threads)"}))
    write_report(tmp_path, ["none", "sharp"], [0], datalist, 200, CONFIG, export_tables=True)
    report = (tmp_path / "report.md").read_text()
    assert "seed(s)" not in report and "1 seed per regime" in report and " x " not in report
    assert "&id" not in report and "_target_" not in report and "```yaml" not in report
    assert "## Methods" in report and "60 test patients (120 images)" in report and "3 epochs \u00d7 60 steps" in report
    assert report.count("need not transfer to real radiographs") == 1
    assert "not the tables' macro ECE" in report and "one panel per finding" in report
    assert "| `none/seed-0` | cpu (2 threads) | 3 | 1 min 15 s |" in report and "| `sharp/seed-0` | - | - | - |" in report
    split = report.split("## Split", 1)[1]
    assert "| patients | 0 | 0 | 60 |" in split
    positive = {(it["patient"]) for it, row in zip(datalist["test"], labels) if row[0]}
    assert f"| A | 0 (0) | 0 (0) | {len(positive)} ({int(labels[:, 0].sum())}) |" in split
    names = sorted(p.name for p in (tmp_path / "tables").glob("*.csv"))
    assert "05-split.csv" in names and any(n.endswith("configuration.csv") for n in names)
    assert (tmp_path / "tables" / "05-split.tex").read_text().count(r"\\") == 5


def _sweep(levels: list[float], base: float) -> pd.DataFrame:
    auc = base - 0.01 * np.arange(len(levels))
    return pd.DataFrame({"finding": "macro", "level": levels, "auc": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05})


def test_robustness_intervals_stay_apart_and_site_is_a_category():
    regimes = {"none": 0.70, "basic": 0.71, "complex": 0.72}
    fig = shift_figure({r: _sweep([0, 10, 20], b) for r, b in regimes.items()}, "rotation", "degrees")
    ax = fig.axes[0]
    points = [bars.lines[0].get_xdata() for bars in ax.containers]  # each regime's error bars
    assert len(points) == 3 and len({tuple(np.round(p, 6)) for p in points}) == 3  # dodged: no bar covers another
    assert not ax.collections or all(c.get_alpha() in (None, 1) for c in ax.collections)  # error bars, no bands
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "10", "20"]
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # the legend beside the curves
    site = shift_figure({r: _sweep([0, 1], b) for r, b in regimes.items()}, "site", "", shift_categories("site"))
    ax = site.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [SITE_LEVELS[0.0], SITE_LEVELS[1.0]]
    assert all(bars.lines[0].get_linestyle() == "None" for bars in ax.containers)  # points, no line between sites
    assert shift_categories("rotation") is None


def test_reliability_says_its_pooled_ece_is_not_the_tables_macro():
    labels, probs, _ = patient_case(1, patients=40)
    legend = reliability_figure(labels, probs).axes[0].get_legend()
    assert "not the tables' macro ECE" in legend.get_title().get_text()
    assert legend.get_texts()[1].get_text().startswith("pooled ECE ")


def test_saliency_grid_has_a_colour_bar():
    rng = np.random.default_rng(0)
    panels = [{"finding": "Mass", "image": rng.random((16, 16)), "map": rng.random((16, 16)), "boxes": [(2, 2, 4, 4)],
               "peak": (3, 3), "hit": True}]
    fig = grid_figure(panels, "grid")
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("Grad-CAM / the map's peak")]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)


def test_learning_curve_intervals_are_dodged_on_the_log_axis():
    curve = pd.DataFrame({"fraction": [0.5, 1.0] * 2, "n_train_patients": [40, 80] * 2, "regime": ["a", "a", "b", "b"],
                          "auc": [0.6, 0.7, 0.62, 0.72], "ci_low": [0.5, 0.6, 0.52, 0.62],
                          "ci_high": [0.7, 0.8, 0.72, 0.82]})
    ax = curve_figure(curve).axes[0]
    a, b = (bars.lines[0].get_xdata() for bars in ax.containers)
    assert np.allclose(a * b, [40**2, 80**2]) and (a < [40, 80]).all()  # symmetric on the log axis
    assert [t.get_text() for t in ax.get_xticklabels()] == ["40\n(0.5)", "80\n(1)"]
