"""The NIH data layer: both CSV variants, labels, image discovery, splits and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from conftest import write_nih
from mai_aug.cli import main
from mai_aug.data.nih import FINDINGS, read_nih
from mai_aug.data.split import label_frequencies, make_datalist, stratified_patient_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variant", ["2020", "2017"])
def test_both_header_variants_give_the_same_labels(tmp_path, nih_rows, variant):
    table = read_nih(write_nih(tmp_path / variant, nih_rows, variant=variant))
    assert table.labels.shape == (6, 14)
    assert table.frame["Patient ID"].tolist() == [1, 1, 2, 3, 4, 5]
    assert table.frame["View Position"].tolist() == ["PA", "AP", "PA", "PA", "AP", "PA"]


def test_label_binarisation(tmp_path, nih_rows):
    labels = read_nih(write_nih(tmp_path, nih_rows)).labels
    assert labels[0].sum() == 0  # No Finding
    assert [FINDINGS[j] for j in np.flatnonzero(labels[1])] == ["Cardiomegaly", "Effusion"]
    assert [FINDINGS[j] for j in np.flatnonzero(labels[4])] == ["Infiltration", "Mass", "Nodule"]
    assert labels[2, FINDINGS.index("Hernia")] == 1


def test_nested_archive_layout(tmp_path, nih_rows):
    root = write_nih(tmp_path, nih_rows, images=False)
    nested = root / "images_001" / "images"
    nested.mkdir(parents=True)
    (root / "images").rmdir()
    for name, *_ in nih_rows[:3]:
        (nested / name).write_bytes(b"")
    table = read_nih(root)
    assert len(table.frame) == 3 and len(table.missing) == 3
    assert all(Path(p).is_absolute() and "images_001" in p for p in table.frame["image"])


def test_views_filter(tmp_path, nih_rows):
    table = read_nih(write_nih(tmp_path, nih_rows), views=("PA",))
    assert set(table.frame["View Position"]) == {"PA"} and len(table.frame) == 4


def test_missing_images_are_dropped_and_reported(tmp_path, nih_rows, capsys):
    root = write_nih(tmp_path, nih_rows, images=[r[0] for r in nih_rows[:4]])
    assert main(["split", "--data", str(root), "--out", str(tmp_path / "dl.json"), "--val-frac", "0.2"]) == 0
    assert "dropped 2 of 6" in capsys.readouterr().out
    dl = json.loads((tmp_path / "dl.json").read_text())
    assert sum(len(dl[k]) for k in ("training", "validation", "test")) == 4
    assert main(["split", "--data", str(root), "--out", str(tmp_path / "x.json"), "--require-all-images"]) == 2
    err = capsys.readouterr().err
    assert "2 of 6 images" in err and "00000004_000.png" in err


def random_table(rng: np.random.Generator, n_patients: int) -> tuple[np.ndarray, np.ndarray]:
    counts = rng.integers(1, 8, n_patients)
    patients = np.repeat(rng.permutation(10**6)[:n_patients], counts)
    prevalence = np.linspace(0.005, 0.2, 14)
    labels = (rng.random((len(patients), 14)) < prevalence).astype(np.uint8)
    return patients, labels


@pytest.mark.parametrize("seed", range(25))
def test_patient_split_never_leaks_and_covers_findings(seed):
    rng = np.random.default_rng(seed)
    patients, labels = random_table(rng, int(rng.integers(50, 600)))
    split = stratified_patient_split(patients, labels, [0.7, 0.1, 0.2], seed=seed)
    for p in np.unique(patients):
        assert len(set(split[patients == p])) == 1
    for j in range(14):
        if len(np.unique(patients[labels[:, j] == 1])) >= 3:
            assert labels[split == 1, j].any() and labels[split == 2, j].any(), f"finding {j} not covered"
    fractions = np.bincount(split, minlength=3) / len(split)
    assert abs(fractions[2] - 0.2) < 0.08


def test_split_is_reproducible_and_seed_dependent(tmp_path):
    patients, labels = random_table(np.random.default_rng(1), 300)
    a = stratified_patient_split(patients, labels, [0.7, 0.1, 0.2], seed=5)
    b = stratified_patient_split(patients, labels, [0.7, 0.1, 0.2], seed=5)
    c = stratified_patient_split(patients, labels, [0.7, 0.1, 0.2], seed=6)
    assert (a == b).all() and (a != c).any()


def test_official_split(tmp_path):
    rows = [(f"{p:08d}_{f:03d}.png", "Effusion" if p % 3 == 0 else "No Finding", p, "PA") for p in range(1, 41) for f in range(2)]
    root = write_nih(tmp_path, rows)
    test_names = [r[0] for r in rows if r[2] > 30]
    (root / "test_list.txt").write_text("\n".join(test_names) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(r[0] for r in rows if r[2] <= 30) + "\n")
    dl = make_datalist(read_nih(root), split="official", val_frac=0.2, data_dir=root)
    assert sorted(it["name"] for it in dl["test"]) == sorted(test_names)
    train_p = {it["patient"] for it in dl["training"]}
    val_p = {it["patient"] for it in dl["validation"]}
    assert val_p and not train_p & val_p and all(p <= 30 for p in train_p | val_p)


def test_datalist_loads_with_monai(tmp_path, nih_rows):
    root = write_nih(tmp_path, nih_rows)
    out = tmp_path / "dl.json"
    assert main(["split", "--data", str(root), "--out", str(out), "--val-frac", "0.2", "--test-frac", "0.2"]) == 0
    items = load_decathlon_datalist(str(out), is_segmentation=False, data_list_key="training")
    assert items and {"image", "label", "patient", "view"} <= set(items[0])
    assert Path(items[0]["image"]).is_file() and len(items[0]["label"]) == 14


def test_label_frequencies():
    items = [{"label": [1] + [0] * 13}, {"label": [0] * 14}, {"label": [1, 1] + [0] * 12}, {"label": [0] * 14}]
    pos, neg = label_frequencies(items)
    assert pos[0] == 0.5 and pos[1] == 0.25 and pos[2] == 0 and np.allclose(pos + neg, 1)


def _fail(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _csv(root: Path) -> Path:
    return root / "Data_Entry_2017_v2020.csv"


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda root: _csv(root).unlink(), "no Data_Entry_2017_v2020.csv"),
        (lambda root: _csv(root).write_text(""), "empty"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().replace("Patient ID", "PatientID")), "'Patient ID'"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().replace("Patient Gender,", "")), "'Patient Gender'"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().replace(",3,58", ",X3,58")), "non-integer patient id"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().replace("Hernia,2,2,58,M,PA", "Hernia,2,2,58,M,LL")), "'LL'"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().replace("Hernia", "Hernai")), "'Hernai'"),
        (lambda root: _csv(root).write_text(_csv(root).read_text().splitlines()[0] + "\n"), "no rows"),
    ],
)
def test_bad_csv_is_one_clear_line(tmp_path, nih_rows, capsys, mutate, expect):
    root = write_nih(tmp_path, nih_rows)
    mutate(root)
    err = _fail(capsys, ["split", "--data", str(root), "--out", str(tmp_path / "dl.json")])
    assert expect in err


def test_unknown_finding_names_row(tmp_path, nih_rows, capsys):
    root = write_nih(tmp_path, nih_rows)
    _csv(root).write_text(_csv(root).read_text().replace("Hernia", "Hernai"))
    err = _fail(capsys, ["split", "--data", str(root), "--out", str(tmp_path / "dl.json")])
    assert "row 4" in err and "00000002_000.png" in err


def test_bad_paths(tmp_path, nih_rows, capsys):
    root = write_nih(tmp_path, nih_rows)
    err = _fail(capsys, ["split", "--data", str(root), "--images", str(root / "nope"), "--out", str(tmp_path / "a.json")])
    assert "--images" in err and "not a folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = _fail(capsys, ["split", "--data", str(root), "--out", str(blocker / "dl.json")])
    assert "--out" in err and "cannot write" in err
    err = _fail(capsys, ["split", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "a.json")])
    assert "not a folder" in err


@pytest.mark.parametrize("cmd", [[sys.executable, str(ROOT / "workflows" / "split.py")], ["mai-aug", "split"]])
def test_help_runs(cmd):
    exe = Path(sys.executable).parent / "mai-aug"
    if cmd[0] == "mai-aug":
        cmd = [str(exe), *cmd[1:]]
    result = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--split" in result.stdout


def test_bad_input_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "workflows" / "split.py"), "--data", str(tmp_path), "--out", "x.json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Data_Entry" in result.stderr
