"""``mai-aug evaluate --external``: a run scored on another dataset (CheXpert layout), findings matched by name."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cut_datalist
from mai_aug.analyses.external.data import read_external
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.datasets.chexpert import HEADER, OBSERVATIONS
from mai_aug.data.label_map import match_findings
from mai_aug.data.nih import FINDINGS

#: the tiny network and size of tests/test_robustness.py: this is about scoring another dataset, not the network
TINY = ["--image-size", "32", "--batch-size", "16", "--workers", "0", "--quiet", "--lr", "1e-3", "--network", "densenet",
        "--network-args", "{init_features: 8, growth_rate: 4, block_config: [2, 2]}"]
#: the phantom's NIH findings written as CheXpert observations (the fixture's own translation, for the tests)
AS_CHEXPERT = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
               "Edema": "Edema", "Effusion": "Pleural Effusion", "Pneumonia": "Pneumonia",
               "Pneumothorax": "Pneumothorax", "Mass": "Lung Lesion", "Nodule": "Lung Lesion"}


def write_chexpert(nih: Path, out: Path, drop: tuple[str, ...] = (), uncertain_every: int = 0) -> Path:
    """A CheXpert-layout copy of an NIH-layout phantom: train.csv / valid.csv (its test list), images hard-linked.

    ``drop``: CheXpert observations written blank for every image (no positives); ``uncertain_every``: every k-th
    positive cell is written -1.0.
    """
    entries = pd.read_csv(nih / "Data_Entry_2017_v2020.csv")
    test = set((nih / "test_list.txt").read_text().split())
    rows: dict[str, list[list[str]]] = {"train": [], "valid": []}
    positives = 0
    for _, e in entries.iterrows():
        part = "valid" if e["Image Index"] in test else "train"
        rel = f"{part}/patient{int(e['Patient ID']):05d}/study{int(e['Follow-up #']) + 1}/view1_frontal.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(nih / "images" / e["Image Index"], out / rel)
        found = {AS_CHEXPERT[f] for f in e["Finding Labels"].split("|") if f in AS_CHEXPERT}
        cells = []
        for name in OBSERVATIONS:
            value = "1.0" if name in found and name not in drop else ""
            if value and uncertain_every:
                positives += 1
                value = "-1.0" if positives % uncertain_every == 0 else value
            cells.append("1.0" if name == "No Finding" and e["Finding Labels"] == "No Finding" else value)
        rows[part].append([rel, "Male" if e["Patient Gender"] == "M" else "Female", str(e["Patient Age"]),
                           "Frontal", e["View Position"], *cells])
    for part, lines in rows.items():
        (out / f"{part}.csv").write_text("\n".join(",".join(r) for r in [list(HEADER), *lines]) + "\n")
    return out


@pytest.fixture(scope="module")
def other_nih(tmp_path_factory) -> Path:
    """A phantom of other patients (another seed, the same patient ids), test patients at the shifted site."""
    from mai_aug.data.phantom import PhantomSpec, write_phantom

    nih = tmp_path_factory.mktemp("other-nih")
    write_phantom(PhantomSpec(out=nih, n=300, size=64, seed=11, test_shift="site"), workers=2)
    return nih


@pytest.fixture(scope="module")
def hospital(other_nih, tmp_path_factory) -> Path:
    """Another hospital in CheXpert layout: ``other_nih``'s images, some positives uncertain."""
    return write_chexpert(other_nih, tmp_path_factory.mktemp("hospital"), uncertain_every=4)


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ext")
    datalist = cut_datalist(phantom_dir, folder, training=64, validation=16, test=80)
    out = folder / "run"
    assert main(["train", "--datalist", str(datalist), "--regime", "basic", "--out", str(out),
                 "--epochs", "1", "--steps-per-epoch", "2", *TINY]) == 0
    return out


def test_the_built_in_map_matches_both_ways_and_lists_what_it_leaves_out():
    nih_on_chexpert = match_findings(FINDINGS, OBSERVATIONS)
    assert {m.name: [FINDINGS[j] for j in m.run] for m in nih_on_chexpert.matches} == {
        "Cardiomegaly": ["Cardiomegaly"], "Edema": ["Edema"], "Consolidation": ["Consolidation"],
        "Pneumonia": ["Pneumonia"], "Atelectasis": ["Atelectasis"], "Pneumothorax": ["Pneumothorax"],
        "Pleural Effusion": ["Effusion"]}
    assert "Mass" in nih_on_chexpert.run_only and "Lung Lesion" in nih_on_chexpert.external_only
    chexpert_on_nih = match_findings(OBSERVATIONS, FINDINGS)
    assert {m.name: OBSERVATIONS[m.run[0]] for m in chexpert_on_nih.matches}["Effusion"] == "Pleural Effusion"
    assert len(chexpert_on_nih.matches) == 7 and "Hernia" in chexpert_on_nih.external_only
    lesion = match_findings(FINDINGS, OBSERVATIONS, lesion=True)
    scores = lesion.scores(np.arange(28, dtype=float).reshape(2, 14) / 28)
    j = lesion.names.index("Lung Lesion")
    assert scores[0, j] == max(FINDINGS.index("Mass"), FINDINGS.index("Nodule")) / 28  # the higher of the two
    assert match_findings(FINDINGS, FINDINGS).names == sorted(FINDINGS, key=FINDINGS.index)  # same dataset: by name
    with pytest.raises(MaiAugError, match="`lesion`: scores CheXpert's Lung Lesion by an NIH run's Mass and Nodule"):
        match_findings(OBSERVATIONS, FINDINGS, lesion=True)  # one Lung Lesion output cannot tell Mass from Nodule


def test_a_user_map_replaces_the_built_in_one_and_is_checked(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("Lung Opacity: [Infiltration, Consolidation]\nPleural Effusion: Effusion\n")
    matching = match_findings(FINDINGS, OBSERVATIONS, path)
    assert matching.names == ["Lung Opacity", "Pleural Effusion"] and "Cardiomegaly" in matching.external_only
    labels = np.zeros((3, 14))
    labels[0, FINDINGS.index("Consolidation")] = 1
    labels[2, FINDINGS.index("Infiltration")] = np.nan
    assert np.array_equal(matching.run_labels(labels)[:, 0], [1, 0, np.nan], equal_nan=True)
    for text, fault in [("Lung Opacty: Infiltration\n", "'Lung Opacty' is not a finding of the external"),
                        ("Lung Opacity: Opacity\n", "'Opacity' is not a finding of the run"),
                        ("Lung Opacity: {a: 1}\n", "expected a finding of the run or a list"),
                        ("- Edema\n", "expected a mapping"),
                        ("Edema: &a Edema\nCardiomegaly: *a\n", "alias")]:
        path.write_text(text)
        with pytest.raises(MaiAugError, match=fault):
            match_findings(FINDINGS, OBSERVATIONS, path)


def test_evaluate_external_scores_the_shared_findings_with_patient_intervals(run, hospital, capsys):
    assert main(["evaluate", "--run", str(run), "--external", str(hospital), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Pleural Effusion <- Effusion" in printed
    assert "left out, no counterpart among the run's findings: " in printed and "Hernia" in printed
    assert "left out, no counterpart among the external dataset's findings: No Finding" in printed
    folder = run / "external" / hospital.name
    table = pd.read_csv(folder / "auc.csv")
    assert list(table["finding"]) == [*sorted(set(AS_CHEXPERT.values()) - {"Lung Lesion"}, key=OBSERVATIONS.index),
                                      "macro"]
    predictions = pd.read_csv(folder / "predictions.csv")
    assert len(predictions) == len(pd.read_csv(hospital / "train.csv")) + len(pd.read_csv(hospital / "valid.csv"))
    assert predictions["patient"].str.match(r"patient\d{5}").all()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["findings"]["matched"]["Pleural Effusion"] == ["Effusion"] and meta["split"] == "all"
    assert (folder / "roc.png").is_file() and meta["patients"] == predictions["patient"].nunique()
    scored = table[(table["finding"] != "macro") & table["ci_low"].notna()]
    assert len(scored) >= 2 and ((scored["ci_low"] <= scored["auc"]) & (scored["auc"] <= scored["ci_high"])).all()


def test_uncertain_labels_follow_the_policy_and_the_output_is_reused_only_while_current(run, hospital, capsys):
    base = ["evaluate", "--run", str(run), "--external", str(hospital), "--bootstrap", "200"]
    assert main([*base, "--external-name", "ones"]) == 0
    stamp = (run / "external" / "ones" / "meta.json").stat().st_mtime_ns
    assert main([*base, "--external-name", "ones"]) == 0
    assert "reused (current)" in capsys.readouterr().out
    assert (run / "external" / "ones" / "meta.json").stat().st_mtime_ns == stamp
    assert main([*base, "--external-name", "zeros", "--uncertain", "zeros"]) == 0
    assert main([*base, "--external-name", "ignore", "--uncertain", "ignore"]) == 0
    truth = {p: pd.read_csv(run / "external" / p / "predictions.csv") for p in ("ones", "zeros", "ignore")}
    column = "true_Pleural Effusion"
    uncertain = truth["ignore"][column].isna()
    assert uncertain.any()
    assert (truth["ones"][column][uncertain] == 1).all() and (truth["zeros"][column][uncertain] == 0).all()
    assert truth["ones"][column][~uncertain].equals(truth["zeros"][column][~uncertain])
    assert main([*base, "--external-name", "ones", "--bootstrap", "300"]) == 0  # other resamples: redone
    assert "reused" not in capsys.readouterr().out
    assert main([*base, "--external-name", "ones", "--external-split", "official"]) == 0  # another set: redone
    assert len(pd.read_csv(run / "external" / "ones" / "predictions.csv")) == len(pd.read_csv(hospital / "valid.csv"))


def test_a_mapped_finding_without_positives_gets_no_interval(run, phantom_dir, tmp_path):
    nih = tmp_path / "nih"
    shutil.copytree(phantom_dir, nih, copy_function=os.link)
    external = write_chexpert(nih, tmp_path / "no-edema", drop=("Edema",))
    assert main(["evaluate", "--run", str(run), "--external", str(external), "--external-split", "official",
                 "--bootstrap", "200"]) == 0
    table = pd.read_csv(run / "external" / "no-edema" / "auc.csv").set_index("finding")
    assert np.isnan(table.loc["Edema", "ci_low"]) and np.isnan(table.loc["Edema", "ci_high"])
    assert table.loc["Pleural Effusion", "ci_low"] <= table.loc["Pleural Effusion", "ci_high"]


def test_identical_runs_give_identical_external_tables(run, hospital, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(run, twin, ignore=shutil.ignore_patterns("external", "eval"))
    for folder in (run, twin):
        assert main(["evaluate", "--run", str(folder), "--external", str(hospital), "--external-name", "same",
                     "--bootstrap", "200"]) == 0
    for name in ("auc.csv", "predictions.csv"):
        assert (run / "external" / "same" / name).read_bytes() == (twin / "external" / "same" / name).read_bytes()


def test_the_runs_own_training_images_are_refused_as_an_external_set(run, phantom_dir, tmp_path, capsys):
    before = sorted(p.name for p in run.iterdir())
    assert main(["evaluate", "--run", str(run), "--external", str(phantom_dir), "--external-name", "own"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training or validation images of" in err and "must not share" in err
    assert sorted(p.name for p in run.iterdir()) == before and not (run / "external" / "own").exists()


@pytest.mark.parametrize("argv, fault", [
    (["--lesion"], "--lesion: applies to --external DIR only"),
    (["--external", "{hospital}", "--tta", "2"], "--tta: applies to the run's own datalist"),
    (["--external", "{hospital}", "--external-name", "../x"], "not a valid name"),
    (["--external", "{hospital}", "--external-dataset", "nih"], "Data_Entry"),
    (["--external", "{hospital}/nowhere"], "not a folder"),
])
def test_bad_external_settings_are_one_line(run, hospital, argv, fault, capsys):
    argv = [a.replace("{hospital}", str(hospital)) for a in argv]
    assert main(["evaluate", "--run", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fault in err, err


def external_preset(folder: Path, seeds: int) -> Path:
    """A tiny study with an external CheXpert-layout site generated from the preset (as ``--preset external``)."""
    preset = folder / "external.yaml"
    preset.write_text(
        "description: tiny external\n"
        "phantom: {n: 400, size: 48, seed: 4}\n"
        "data: {split: patient, val_frac: 0.15, test_frac: 0.3, seed: 0}\n"
        f"regimes: [none, basic]\nseeds: {seeds}\n"
        "train: {image_size: 32, batch_size: 8, epochs: 1, steps_per_epoch: 3, lr: 1.0e-3, workers: 0, cache: store,\n"
        "        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n"
        "bootstrap: 200\n"
        "external: {phantom: {n: 400, size: 48, seed: 9, test_shift: site, layout: chexpert}, name: site}\n")
    return preset


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("external-study")
    out = tmp / "out"
    assert main(["compare", "--preset", str(external_preset(tmp, 3)), "--cache-dir", str(tmp / "cache"), "--quiet",
                 "--out", str(out)]) == 0
    return out


def test_compare_reports_the_external_auc_and_the_generalisation_gap(study):
    report = (study / "report.md").read_text()
    section = report[report.index("## External test set"):]
    assert "CheXpert" in section and "Pleural Effusion" in section and "gap - none's" in section
    assert "corrected within each family" in section and "3 seeds (paired by seed)" in section
    table = pd.read_csv(study / "external.csv")
    for regime in ("none", "basic"):
        assert (study / regime / "seed-2" / "external" / "site" / "meta.json").is_file()
    gap = table[(table["table"] == "gap") & (table["finding"] == "macro")].set_index("regime")
    inside = table[(table["table"] == "internal") & (table["finding"] == "macro")].set_index("regime")
    outside = table[(table["table"] == "external") & (table["finding"] == "macro")].set_index("regime")
    assert np.allclose(gap["gap"], inside["auc"] - outside["auc"], atol=2e-6)  # external.csv has 6 decimals
    assert np.isclose(gap.loc["basic", "diff_vs_none"], gap.loc["basic", "gap"] - gap.loc["none", "gap"])
    assert gap.loc["basic", "diff_ci_low"] <= gap.loc["basic", "diff_vs_none"] <= gap.loc["basic", "diff_ci_high"]
    shows = report[:report.index("## External test set")]
    assert "generalisation gap (internal minus external macro AUC)" in shows and "shared findings, " in shows


def test_a_second_compare_reuses_every_external_output(study, tmp_path, capsys, monkeypatch):
    import mai_aug.analyses.external.analysis as analysis
    import mai_aug.study.compare as compare

    reads = []

    def counted(*args, **kwargs):
        reads.append(args[0].data)
        return read_external(*args, **kwargs)

    for module in (compare, analysis):
        monkeypatch.setattr(module, "read_external", counted)
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("*/seed-*/external/site/meta.json")}
    preset = external_preset(tmp_path, 3)
    assert main(["compare", "--preset", str(preset), "--cache-dir", str(study.parent / "cache"), "--quiet",
                 "--out", str(study)]) == 0
    assert "external test set of" not in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and len(stamps) == 6
    assert len(reads) == 1  # the external table is read once: by the checks before training, then reused


@pytest.mark.parametrize("argv, fault", [
    (["--lesion"], "--lesion: applies to --external DIR only"),
    (["--external", "{tmp}/nowhere"], "--external {tmp}/nowhere: not a folder"),
    (["--external", "{phantom}"], "must not share patients with training"),
    (["--external", "{tmp}", "--external-name", "../x"], "--external-name '../x': not a valid name"),
    (["--external-uncertain", "zeros"], "--external-uncertain: applies to --external DIR only"),
])
def test_bad_study_external_settings_are_one_line_before_training(phantom_dir, tmp_path, argv, fault, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{phantom}", str(phantom_dir)) for a in argv]
    out = tmp_path / "out"
    assert main(["compare", "--data", str(phantom_dir), "--preset", str(external_preset(tmp_path, 1)), "--quiet",
                 "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert fault.replace("{tmp}", str(tmp_path)) in err[-1], err
    assert not list(out.glob("*/seed-*"))  # nothing trained


def test_an_nih_layout_set_of_other_patients_with_the_same_ids_is_scored_with_a_warning(run, other_nih, capsys):
    assert main(["evaluate", "--run", str(run), "--external", str(other_nih), "--external-split", "official",
                 "--bootstrap", "200"]) == 0
    captured = capsys.readouterr()
    assert "external patients have the id of a training or validation patient" in captured.err
    meta = json.loads((run / "external" / other_nih.name / "meta.json").read_text())
    assert meta["shared_patient_ids"] > 0 and meta["dataset"] == "nih" and len(meta["findings"]["matched"]) == 14
    test = set((other_nih / "test_list.txt").read_text().split())
    images = pd.read_csv(run / "external" / other_nih.name / "predictions.csv")["image"]
    assert {Path(i).name for i in images} == test


def test_a_csv_external_set_is_read_with_the_generic_adapters_options(run, hospital, tmp_path):
    rows = pd.read_csv(hospital / "valid.csv").fillna("")
    table = pd.DataFrame({"file": [str(hospital / p) for p in rows["Path"]],
                          "who": [p.split("/")[1] for p in rows["Path"]],
                          "Effusion": (rows["Pleural Effusion"].astype(str) == "1.0").astype(int),
                          "Edema": (rows["Edema"].astype(str) == "1.0").astype(int)})
    csv = tmp_path / "site.csv"
    table.to_csv(csv, index=False)
    assert main(["evaluate", "--run", str(run), "--external", str(tmp_path), "--external-dataset", "csv",
                 "--csv", str(csv), "--image-column", "file", "--label-columns", "Effusion", "Edema",
                 "--patient-column", "who", "--external-name", "csv", "--bootstrap", "200"]) == 0
    auc = pd.read_csv(run / "external" / "csv" / "auc.csv")
    assert list(auc["finding"]) == ["Effusion", "Edema", "macro"]
    assert len(pd.read_csv(run / "external" / "csv" / "predictions.csv")) == len(table)


def test_a_study_reuses_what_evaluate_external_wrote(run, hospital):
    from mai_aug.analyses.base import StudyRuns
    from mai_aug.analyses.external.analysis import ExternalAnalysis
    from mai_aug.analyses.external.data import ExternalSpec

    assert main(["evaluate", "--run", str(run), "--external", str(hospital), "--external-name", "shared",
                 "--bootstrap", "200"]) == 0
    study = StudyRuns(run.parent, ["basic"], (0,), list(FINDINGS), 200)
    assert ExternalAnalysis(ExternalSpec(hospital, name="shared")).is_current(run, study)
    assert not ExternalAnalysis(ExternalSpec(hospital, name="shared", uncertain="zeros")).is_current(run, study)
    assert not ExternalAnalysis(ExternalSpec(hospital, name="shared")).is_current(
        run, StudyRuns(run.parent, ["basic"], (0,), list(FINDINGS), 1000))


def test_the_readme_block_is_the_reports_own(study):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from external_results import END, START, results_block

    block = results_block(study)
    report = (study / "report.md").read_text()
    assert block.startswith(START) and block.endswith(END)
    assert "- generalisation gap (internal minus external macro AUC)" in block
    section = report.split("## External test set", 1)[1].splitlines()
    rows = [line for line in section if line.startswith(("| regime | internal |", "| none |", "| basic |"))][:3]
    assert len(rows) == 3 and all(row in block.splitlines() for row in rows)  # the section's table, verbatim
