"""`mai-aug compare` end to end on a tiny phantom, paired statistics, and TensorBoard over HTTP."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mai_aug.analyses.outputs import load_predictions
from mai_aug.cli import main
from mai_aug.core.layout import RunLayout
from mai_aug.data.nih import FINDINGS
from mai_aug.stats.paired import score_regimes, summary_table

ROOT = Path(__file__).resolve().parents[1]
REGIMES = ["none", "basic", "basic-copy"]


@pytest.fixture(scope="module")
def comparison(phantom_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("compare")
    copy = tmp / "copy.yaml"
    copy.write_text('regimes:\n  basic-copy: "%regimes#basic"\n')
    out = tmp / "out"
    assert main(compare_argv(phantom_dir, copy, out)) == 0
    return out


#: The demo preset's training on a small DenseNet (MONAI's class, a fraction of DenseNet121's cost): these tests are
#: about the study's files and statistics, not the network.
TINY_PRESET = """description: tiny DenseNet
data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}
train: {batch_size: 16, lr: 1.0e-3, pretrained: none, in_channels: 1, workers: 0, cache: store, network: densenet,
        network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}
"""


def tiny_preset(folder: Path) -> Path:
    preset = folder / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    return preset


def compare_argv(phantom_dir: Path, copy: Path, out: Path) -> list[str]:
    """The tiny comparison of ``REGIMES`` (``basic-copy`` is ``basic`` under another name) on a tiny DenseNet."""
    return ["compare", "--data", str(phantom_dir), "--preset", str(tiny_preset(copy.parent)), "--regimes", *REGIMES,
            "--regimes-file", str(copy),
            "--image-size", "32", "--epochs", "1", "--steps-per-epoch", "3", "--workers", "0", "--bootstrap", "200",
            "--quiet", "--out", str(out)]


def test_every_file_is_written(comparison, capsys):
    for name in ("auc_by_regime.csv", "auc_by_regime.png", "summary.md", "summary.csv", "report.md", "datalist.json",
                 *[f"roc_{r}.png" for r in REGIMES]):
        assert (comparison / name).is_file() and (comparison / name).stat().st_size > 100, name
    for r in REGIMES:
        run = comparison / r / "seed-0"
        for name in ("config.yaml", "metrics.csv", "checkpoints/best.pt", "eval/test_auc.csv", "eval/test_predictions.csv"):
            assert (run / name).is_file(), (r, name)
        assert list((comparison / "tensorboard" / f"{r}-seed0").glob("events.out.tfevents.*"))
    wide = pd.read_csv(comparison / "auc_by_regime.csv")
    assert wide["finding"].tolist() == ["macro", *FINDINGS]
    assert {f"{r}_{v}" for r in REGIMES for v in ("auc", "ci_low", "ci_high")} <= set(wide.columns)
    assert wide["positive_patients"].iloc[1:].ge(0).all()
    summary = pd.read_csv(comparison / "summary.csv")
    macro = summary[summary["finding"] == "macro"].set_index("regime")
    assert (macro["ci_low"] <= macro["auc"]).all() and (macro["auc"] <= macro["ci_high"]).all()
    assert (macro["findings_above_0.5"] <= macro["findings_scored"]).all() and (macro["findings_scored"] < 14).all()
    findings = summary[summary["finding"] != "macro"]
    few = findings[findings["positive_patients"] < 5]
    assert len(few) and not few["scored"].any() and few["ci_low"].isna().all() and not few["ci_excludes_0"].any()
    md = (comparison / "summary.md").read_text()
    assert "| regime | macro AUC |" in md and "paired difference against `none`, per finding" in md
    assert "seed variance is not included" in md and "| finding | positive patients |" in md
    few_none = few[few["regime"] == "none"]
    assert all(f"{f} ({int(n)})" in md for f, n in zip(few_none["finding"], few_none["positive_patients"]))
    report = (comparison / "report.md").read_text()
    assert "auc_by_regime.png" in report and "## Configuration" in report and "patients" in report
    assert "## Methods" in report and "## Compute cost" in report and "```yaml" not in report
    assert "Primary comparison" in report and "Too few positive patients:" in report
    assert "across all families together the chance of some false star is higher than 5%" in report
    # the multiplier of each family is printed, as README says
    for family in ("primary", "secondary"):
        c = summary.loc[summary["family"] == family, "simultaneous_c"].dropna().iloc[0]
        assert f"{c:.2f} standard errors" in report, family
    assert "## Planning: seeds and test patients" in report and (comparison / "plan.csv").is_file()
    primary = summary[summary["family"] == "primary"]
    assert len(primary) and primary["finding"].eq("macro").all()  # the primary rows carry the planning columns
    assert {"primary_ci_low", "primary_ci_high", "half_width", "seeds_needed", "test_patients_needed"} <= set(summary)
    assert primary["half_width"].notna().all()


def test_identical_copy_gives_paired_cis_covering_zero(comparison):
    frames = {r: pd.read_csv(comparison / r / "seed-0" / "eval" / "test_predictions.csv") for r in ("basic", "basic-copy")}
    labels = frames["basic"][[f"true_{n}" for n in FINDINGS]].to_numpy()
    patients = frames["basic"]["patient"].to_numpy()
    preds = {r: [f[list(FINDINGS)].to_numpy()] for r, f in frames.items()}
    summary = summary_table(score_regimes(labels, patients, preds, n_boot=300), FINDINGS, baseline="basic")
    copy = summary[(summary["regime"] == "basic-copy") & summary["scored"]]
    assert len(copy) >= 5 and (copy["diff_vs_basic"] == 0).all()
    assert ((copy["diff_ci_low"] <= 0) & (copy["diff_ci_high"] >= 0)).all()
    assert not copy["ci_excludes_0"].any()


def test_paired_ci_detects_a_real_difference():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(150), 2)
    labels = (rng.random((300, 2)) < 0.3).astype(int)
    good = labels + rng.normal(0, 0.4, labels.shape)
    bad = labels + rng.normal(0, 1.5, labels.shape)
    summary = summary_table(score_regimes(labels, patients, {"bad": [bad], "good": [good]}, n_boot=300), ["A", "B"],
                            baseline="bad")
    rows = summary[(summary["regime"] == "good") & (summary["finding"] != "macro")]
    assert (rows["diff_ci_low"] > 0).all() and rows["ci_excludes_0"].all()


def test_rerun_skips_finished_runs(comparison, phantom_dir, capsys):
    argv = ["compare", "--data", str(phantom_dir), "--preset", str(tiny_preset(comparison.parent)), "--regimes", "none",
            "--image-size", "32", "--epochs", "1",
            "--steps-per-epoch", "3", "--workers", "0", "--bootstrap", "200", "--quiet", "--out", str(comparison)]
    fingerprint = (comparison / "none" / "seed-0" / "fingerprint.json").read_text()
    start = time.monotonic()
    assert main(argv) == 0
    assert "none/seed-0: skipped" in capsys.readouterr().err
    assert time.monotonic() - start < 60
    assert (comparison / "none" / "seed-0" / "fingerprint.json").read_text() == fingerprint
    assert main([*argv[:-2], "--lr", "0.5", "--out", str(comparison)]) == 2  # another lr: refused, not skipped
    assert "none/seed-0: lr:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


def test_tensorboard_server_serves_per_finding_auc(comparison):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(comparison / "tensorboard"),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        tags: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                tags = _get(f"{base}/data/plugin/scalars/tags")
                if "basic-seed0" in tags and "val/auc/Effusion" in tags["basic-seed0"]:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert "basic-seed0" in tags, tags
        assert {f"val/auc/{f}" for f in FINDINGS} <= set(tags["basic-seed0"])
        query = urllib.parse.urlencode({"run": "basic-seed0", "tag": "val/auc/Effusion"})
        points = _get(f"{base}/data/plugin/scalars/scalars?{query}")
        expected = pd.read_csv(comparison / "basic" / "seed-0" / "metrics.csv")["Effusion"].tolist()
        assert [p[1] for p in points] == [1]
        assert points[0][2] == pytest.approx(expected[0], abs=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_seeds_give_mean_and_sd():
    rng = np.random.default_rng(1)
    patients = np.arange(200)
    labels = (rng.random((200, 2)) < 0.3).astype(int)
    seeds = [labels + rng.normal(0, s, labels.shape) for s in (0.5, 1.0)]
    summary = summary_table(score_regimes(labels, patients, {"none": seeds}, n_boot=100), ["A", "B"], baseline=None)
    macro = summary[summary["finding"] == "macro"].iloc[0]
    per_seed = [np.mean([_auc(labels[:, j], p[:, j]) for j in range(2)]) for p in seeds]
    assert macro["seeds"] == 2
    assert macro["auc"] == pytest.approx(np.mean(per_seed))
    assert macro["auc_sd_over_seeds"] == pytest.approx(np.std(per_seed, ddof=1))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def test_default_data_is_the_cached_phantom_with_a_preset_file(tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        "description: tiny\n"
        "phantom: {n: 240, size: 48, seed: 4}\n"
        "data: {split: patient, val_frac: 0.15, test_frac: 0.25, seed: 0}\n"
        "regimes: [none]\n"
        "train: {image_size: 32, batch_size: 8, epochs: 1, steps_per_epoch: 2, lr: 1.0e-3, workers: 0, cache: store,\n"
        "        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n"
        "bootstrap: 200\n"
    )
    cache = tmp_path / "cache"
    for out in ("a", "b"):
        assert main(["compare", "--preset", str(preset), "--cache-dir", str(cache), "--quiet", "--out", str(tmp_path / out)]) == 0
    err = capsys.readouterr().err
    assert err.count("generating the phantom dataset") == 1  # generated once, reused by the second comparison
    folders = list((cache / "phantom").iterdir())
    assert len(folders) == 1 and (folders[0] / "Data_Entry_2017_v2020.csv").is_file()
    assert len(list((folders[0] / "images").glob("*.png"))) == 240
    assert (tmp_path / "b" / "summary.md").is_file()
    report = (tmp_path / "b" / "report.md").read_text()
    assert "tiny" in report and str(cache) not in report  # the phantom named by its folder, not the local path
    assert f"synthetic phantom ({folders[0].name}, generated into mai_aug's cache)" in report


def test_unknown_preset_and_regime_are_clear_errors(tmp_path, capsys):
    assert main(["compare", "--preset", "huge", "--out", str(tmp_path / "o")]) == 2
    assert "--preset 'huge'" in capsys.readouterr().err
    assert main(["compare", "--regimes", "none", "fancy", "--out", str(tmp_path / "o")]) == 2
    assert "unknown regime 'fancy'" in capsys.readouterr().err


# README's demo results are generated from a compare folder by docs/readme_results.py (`make readme-results`).
_spec = importlib.util.spec_from_file_location("readme_results", ROOT / "docs" / "readme_results.py")
readme_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_results)


def test_block_is_replaced_with_the_runs_numbers(comparison, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_results.START}\nstale table\n{readme_results.END}\noutro\n")
    figure = tmp_path / "docs" / "fig.png"
    assert readme_results.main([str(comparison), "--readme", str(readme), "--figure", str(figure)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale table" not in text
    assert figure.read_bytes() == (comparison / "auc_by_regime.png").read_bytes()
    summary = pd.read_csv(comparison / "summary.csv")
    for row in summary[summary["finding"] == "macro"].to_dict("records"):
        assert f"| {row['regime']} | {row['auc']:.3f} [" in text
    findings = summary[summary["finding"] != "macro"]
    starred = "ci_excludes_0" in findings and findings["ci_excludes_0"].fillna(False).astype(bool).any()
    assert ("starred findings:" in text) == bool(starred)
    assert "seed variance is **not** included" in text  # one seed: the block says so


def test_repository_readme_has_a_generated_block():
    text = (ROOT / "README.md").read_text()
    block = text.split(readme_results.START, 1)[1].split(readme_results.END, 1)[0]
    assert "Generated by `make readme-results`" in block and "| regime | macro AUC |" in block


def test_phantom_cache_folder_follows_the_generator_code(tmp_path, monkeypatch):
    from mai_aug.study import compare

    spec = {"n": 10, "size": 64}
    before = compare.phantom_folder(spec, tmp_path)
    assert compare.phantom_folder(spec, tmp_path) == before  # stable for the same code
    other = tmp_path / "phantom.py"
    other.write_text("# another phantom generator\n")
    monkeypatch.setattr(compare.phantom_module, "__file__", str(other))
    assert compare.phantom_folder(spec, tmp_path) != before



def test_robustness_sweep_and_tta_of_the_study(comparison, phantom_dir, capsys):
    argv = [*compare_argv(phantom_dir, comparison.parent / "copy.yaml", comparison),
            "--robustness", "rotation", "noise", "--robustness-levels", "rotation=10", "noise=0.3", "--tta", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("robustness sweep of") == len(REGIMES) and err.count(": evaluated,") == len(REGIMES)
    tta = pd.read_csv(comparison / "tta.csv")
    assert set(zip(tta["regime"], tta["prediction"])) == {(r, p) for r in REGIMES for p in ("plain", "tta")}
    assert (tta["diff_vs_plain"].dropna() == 0).all()  # none and basic have no random part to draw
    assert "## Test-time augmentation" in (comparison / "report.md").read_text()
    names = json.loads((comparison / "datalist.json").read_text())["labels"]
    tta_file = comparison / "basic" / "seed-0" / "eval" / "test_tta_predictions.csv"
    doctored = pd.read_csv(tta_file)
    doctored[names] = doctored[names] * 0.5  # the TTA statistics must read this file, not the plain predictions
    doctored.to_csv(tta_file, index=False)
    _, _, averaged = load_predictions(comparison, ["basic"], [0], names, pick=RunLayout.tta_predictions)
    assert np.array_equal(averaged["basic"][0], doctored[names].to_numpy(np.float64))
    config = yaml.safe_load((comparison / "compare_config.yaml").read_text())
    assert config["tta"] == 2 and config["robustness"]["levels"] == {"rotation": [0, 10], "noise": [0, 0.3]}
    for name in ("robustness.csv", "robustness_area.csv", "robustness_rotation.png", "robustness_noise.png"):
        assert (comparison / name).stat().st_size > 100
    report = (comparison / "report.md").read_text()
    assert "## Robustness to test-time shifts" in report and "![noise](robustness_noise.png)" in report
    curve = pd.read_csv(comparison / "robustness.csv")
    assert sorted(set(zip(curve["shift"], curve["level"]))) == [("noise", 0), ("noise", 0.3), ("rotation", 0),
                                                               ("rotation", 10)]
    columns = ["level", "auc", "ci_low", "ci_high", "diff_vs_none", "diff_ci_low", "diff_ci_high"]
    basic, twin = (curve[curve["regime"] == r][columns].reset_index(drop=True) for r in ("basic", "basic-copy"))
    pd.testing.assert_frame_equal(basic, twin)  # identical regimes: identical sweep curves
    assert not np.allclose(curve[curve["regime"] == "none"]["auc"], basic["auc"])
    summary = pd.read_csv(comparison / "summary.csv")
    macro = summary[summary["finding"] == "macro"].set_index("regime")
    for shift in ("rotation", "noise"):  # the unshifted level is the comparison's own test result
        level0 = curve[(curve["shift"] == shift) & (curve["level"] == 0)].set_index("regime")
        for column in ("auc", "ci_low", "ci_high", "diff_vs_none", "diff_ci_low", "diff_ci_high"):
            assert np.allclose(level0[column], macro.loc[level0.index, column], atol=1e-6, equal_nan=True)
    area = pd.read_csv(comparison / "robustness_area.csv").set_index(["shift", "regime"])
    numbers = ["mean_auc", "ci_low", "ci_high", "diff_vs_none", "diff_ci_low", "diff_ci_high"]
    assert np.array_equal(area.loc[("rotation", "basic"), numbers], area.loc[("rotation", "basic-copy"), numbers])
    mean = curve[(curve["shift"] == "rotation") & (curve["regime"] == "none")]["auc"].mean()
    assert np.isclose(area.loc[("rotation", "none"), "mean_auc"], mean)  # two levels: the area is their mean
    shows = report.split("## What this study shows")[1].split("\n## ")[0]  # report.md opens with the findings
    assert report.index("## What this study shows") < report.index("## AUC per finding")
    for regime in ("basic", "basic-copy"):
        d = macro.loc[regime]
        assert f"in distribution (macro AUC): {d['diff_vs_none']:+.3f} [{d['diff_ci_low']:+.3f}" in shows
        row = curve[(curve["shift"] == "rotation") & (curve["level"] == 10) & (curve["regime"] == regime)].iloc[0]
        assert f"under rotation 10 (macro AUC): {row['diff_vs_none']:+.3f} [{row['diff_ci_low']:+.3f}" in shows
    assert "under noise 0.3" in shows and "test patients; 1 seed per regime: seed variance is NOT" in shows
    loss = pd.read_csv(comparison / "robustness_loss.csv")
    row = loss[(loss["shift"] == "rotation") & (loss["level"] == 10) & (loss["regime"] == "basic")].iloc[0]
    level0 = curve[(curve["shift"] == "rotation") & (curve["regime"] == "basic")].set_index("level")["auc"]
    assert row["auc_loss"] == pytest.approx(level0[10] - level0[0], abs=3e-6)  # shifted minus unshifted (CSVs: 6 decimals)
    assert f"AUC lost to rotation 10 (shifted minus unshifted): {row['diff_vs_none']:+.3f}" in shows
    assert "data: synthetic phantom (" in shows and "need not transfer to real radiographs" in shows  # --data phantom
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "robustness sweep of" not in err and err.count(": skipped,") == len(REGIMES)  # current ones are reused


_spec_r = importlib.util.spec_from_file_location("robustness_results", ROOT / "docs" / "robustness_results.py")
robustness_results = importlib.util.module_from_spec(_spec_r)
_spec_r.loader.exec_module(robustness_results)


def test_robustness_block_is_the_reports_own_findings(comparison, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    for name in ("report.md", "compare_config.yaml"):
        shutil.copyfile(comparison / name, out / name)
    (out / "robustness.csv").write_text("shift,level\n")
    shutil.copyfile(comparison / "auc_by_regime.png", out / "robustness_rotation.png")
    doc = tmp_path / "docs" / "analyses.md"
    doc.parent.mkdir()
    doc.write_text(f"intro\n{robustness_results.START}\nstale\n{robustness_results.END}\noutro\n")
    assert robustness_results.main([str(out), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    shows = (out / "report.md").read_text().split("## What this study shows", 1)[1].split("\n## ", 1)[0].strip()
    assert shows.splitlines()[-1].startswith("- data: ") and shows in text  # it ends with its caveats
    assert "Test split:" not in text.split(robustness_results.START, 1)[1]
    assert "](robustness_rotation.png)" in text  # linked beside the document
    assert (tmp_path / "docs" / "robustness_rotation.png").read_bytes() == (out / "robustness_rotation.png").read_bytes()


def test_repository_analyses_doc_has_a_generated_robustness_block():
    text = (ROOT / "docs" / "analyses.md").read_text()
    block = text.split(robustness_results.START, 1)[1].split(robustness_results.END, 1)[0]
    assert "Generated by `make robustness-results`" in block and "AUC lost to rotation 20" in block
    for figure in ("robustness_rotation.png", "robustness_zoom.png"):
        assert f"]({figure})" in block and (ROOT / "docs" / figure).stat().st_size > 1000


def test_plan_reads_a_finished_study_without_training(comparison, capsys, tmp_path):
    """``mai-aug plan`` prints plan.csv's rows for the study's own --detect, and sizes a larger difference smaller."""
    saved = pd.read_csv(comparison / "plan.csv")
    assert main(["plan", "--study", str(comparison), "--detect", "0.01"]) == 0
    out = capsys.readouterr().out
    for row in saved[saved["comparison"].str.startswith("primary")].to_dict("records"):
        assert row["regime"] in out and f"{row['half_width']:.4f}" in out
    assert main(["plan", "--study", str(comparison), "--detect", "0.2"]) == 0
    assert "test_patients_needed" in capsys.readouterr().out
    assert main(["plan", "--study", str(tmp_path), "--detect", "0.01"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no finished comparison there" in err
    assert main(["plan", "--study", str(comparison), "--detect", "2"]) == 2
