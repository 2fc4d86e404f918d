"""The phantom in CheXpert-v1.0's layout (``mai-aug phantom --layout chexpert``): read unchanged by the adapter."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data import phantom
from mai_aug.data.datasets import DataSource, detect, read_dataset
from mai_aug.data.datasets.chexpert import HEADER, OBSERVATIONS, is_chexpert_csv
from mai_aug.data.datasets.table import POOL, TEST
from mai_aug.data.phantom import CHEXPERT_UNCERTAIN_BELOW, PhantomSpec, write_phantom
from mai_aug.data.split import site_shifted_patients
from mai_aug.study.phantom_cache import ensure_phantom

SPEC = {"n": 60, "size": 64, "seed": 11}  # a plan in which every mapped finding is planted
# The mapping of the task, written out independently of the module's table.
SAME_NAME = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pneumonia", "Pneumothorax")
EXPECTED_SOURCES = {**{n: (n,) for n in SAME_NAME}, "Pleural Effusion": ("Effusion",),
                    "Lung Lesion": ("Mass", "Nodule"), "Pleural Other": ("Pleural_Thickening",),
                    "Lung Opacity": ("Atelectasis", "Consolidation", "Edema", "Pneumonia", "Infiltration", "Mass",
                                     "Nodule")}
NEVER_WRITTEN = ("Enlarged Cardiomediastinum", "Fracture", "Support Devices")


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def chexpert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom(PhantomSpec(out=tmp_path_factory.mktemp("chx") / "ph", layout="chexpert", **SPEC))


@pytest.fixture(scope="module")
def nih_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom(PhantomSpec(out=tmp_path_factory.mktemp("nih") / "ph", **SPEC))


def test_files_have_chexperts_header_and_are_read_unchanged(chexpert_dir):
    for name in ("train.csv", "valid.csv"):
        path = chexpert_dir / name
        assert path.read_text().splitlines()[0] == ",".join(HEADER) and is_chexpert_csv(path)
    assert not (chexpert_dir / "images").exists() and not (chexpert_dir / "Data_Entry_2017_v2020.csv").exists()
    train, valid = rows(chexpert_dir / "train.csv"), rows(chexpert_dir / "valid.csv")
    assert len(train) + len(valid) == 60 and train and valid
    assert all(r["Path"].startswith("train/patient") for r in train)
    assert all(r["Path"].startswith("valid/patient") for r in valid)
    assert {r["Sex"] for r in train + valid} == {"Male", "Female"}
    assert {r["Frontal/Lateral"] for r in train + valid} == {"Frontal"} and {r["AP/PA"] for r in train} == {"AP", "PA"}
    source = DataSource(data=chexpert_dir, require_all_images=True)
    assert detect(source) == "chexpert"
    table = read_dataset(source)
    assert len(table.images) == 60 and not table.missing and all(Path(p).is_file() for p in table.images)
    assert table.names == [r["Path"] for r in train + valid] and table.label_names == list(OBSERVATIONS)
    in_valid = np.isin(table.names, [r["Path"] for r in valid])
    assert (table.official == np.where(in_valid, TEST, POOL)).all()
    assert not set(table.patients[in_valid]) & set(table.patients[~in_valid])


def test_same_images_as_nih_and_labels_mapped_from_the_planted_findings(chexpert_dir, nih_dir):
    """Image by image in plan order: the same pixels as NIH's, CheXpert's cells by the mapping and the severity."""
    nih = rows(nih_dir / "Data_Entry_2017_v2020.csv")
    chx = {r["Path"]: r for r in rows(chexpert_dir / "train.csv") + rows(chexpert_dir / "valid.csv")}
    test_names = set((nih_dir / "test_list.txt").read_text().split())
    spec = PhantomSpec(out=nih_dir, **SPEC)
    planted = []
    for pid, k, _ in phantom._patient_plan(spec):  # the draws of the renderer, redone here
        chronic, per_image = phantom.sample_patient_findings(phantom._rng(spec.seed, pid, 2), k)
        planted.extend({**chronic, **acute} for acute in per_image)
    assert len(planted) == len(nih) == len(chx) == 60
    uncertain, mentioned = 0, set()
    for entry, severity in zip(nih, planted):
        findings = set(entry["Finding Labels"].split("|")) - {"No Finding"}
        assert findings == set(severity)
        pid, follow = int(entry["Patient ID"]), int(entry["Follow-up #"])
        path = f"{'valid' if entry['Image Index'] in test_names else 'train'}/patient{pid:05d}/study{follow + 1}/view1_frontal.png"
        row = chx[path]
        assert (chexpert_dir / path).read_bytes() == (nih_dir / "images" / entry["Image Index"]).read_bytes()
        assert (row["AP/PA"], row["Age"], row["Sex"][0]) == (entry["View Position"], entry["Patient Age"],
                                                             entry["Patient Gender"])
        for column, sources in EXPECTED_SOURCES.items():
            sev = [severity[s] for s in sources if s in severity]
            expected = "" if not sev else "1.0" if max(sev) >= CHEXPERT_UNCERTAIN_BELOW else "-1.0"
            assert row[column] == expected, (path, column, severity)
            uncertain += expected == "-1.0"
            mentioned |= {column} if expected else set()
        assert row["No Finding"] == ("" if findings else "1.0")
        assert all(row[c] == "" for c in NEVER_WRITTEN)
    assert uncertain > 0 and mentioned == set(EXPECTED_SOURCES)


def test_uncertain_policies_turn_minus_one_into_one_zero_or_nan(chexpert_dir):
    cells = np.array([[r[c] for c in OBSERVATIONS] for r in rows(chexpert_dir / "train.csv") + rows(chexpert_dir / "valid.csv")])
    minus = cells == "-1.0"
    assert minus.sum() >= 3 and (cells == "1.0").sum() > minus.sum()
    labels = {u: read_dataset(DataSource(data=chexpert_dir, uncertain=u)).labels for u in ("ones", "zeros", "ignore")}
    assert (labels["ones"][minus] == 1).all() and (labels["zeros"][minus] == 0).all()
    assert np.isnan(labels["ignore"][minus]).all() and not np.isnan(labels["ignore"][~minus]).any()
    certain = (cells == "1.0").astype(np.float32)
    for policy in labels.values():
        assert (policy[~minus] == certain[~minus]).all()  # blank is 0, 1.0 is 1


def test_byte_identical_again_and_with_two_workers(chexpert_dir, tmp_path):
    again = write_phantom(PhantomSpec(out=tmp_path / "again", layout="chexpert", **SPEC), workers=1)
    two = write_phantom(PhantomSpec(out=tmp_path / "two", layout="chexpert", **SPEC), workers=2)
    other = write_phantom(PhantomSpec(out=tmp_path / "other", layout="chexpert", **{**SPEC, "seed": 6}), workers=1)
    assert digest(again) == digest(chexpert_dir) == digest(two)
    assert digest(other) != digest(chexpert_dir)
    assert len(list(again.glob("*/patient*/study*/view1_frontal.png"))) == 60


def test_site_shift_images_every_image_at_the_other_site(chexpert_dir, tmp_path):
    shifted = write_phantom(PhantomSpec(out=tmp_path / "site", layout="chexpert", test_shift="site", **SPEC))
    plain, moved = digest(chexpert_dir), digest(shifted)
    images = [n for n in plain if n.endswith(".png")]
    assert len(images) == 60 and all(plain[n] != moved[n] for n in images)
    for name in ("train.csv", "valid.csv"):  # the labels do not change
        assert plain[name] == moved[name]
    record = json.loads((shifted / "phantom.json").read_text())
    assert record["layout"] == "chexpert" and record["shifted"] == "all" and record["shifted_patients"] == []
    assert json.loads((chexpert_dir / "phantom.json").read_text())["layout"] == "chexpert"
    assert "shifted" not in json.loads((chexpert_dir / "phantom.json").read_text())
    assert site_shifted_patients(shifted) is None and site_shifted_patients(chexpert_dir) is None
    nih = write_phantom(PhantomSpec(out=tmp_path / "nih", n=30, size=32, seed=2, test_shift="site"))
    assert json.loads((nih / "phantom.json").read_text())["layout"] == "nih" and site_shifted_patients(nih)


def test_cli_layout(tmp_path, capsys):
    out = tmp_path / "cx"
    assert main(["phantom", "--out", str(out), "--layout", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--layout" in err and "bogus" in err and not out.exists()
    argv = ["phantom", "--out", str(out), "--n", "20", "--size", "32", "--seed", "1", "--workers", "1"]
    assert main([*argv, "--layout", "chexpert"]) == 0
    assert f"wrote 20 phantom images in CheXpert layout to {out}" in capsys.readouterr().out
    assert detect(DataSource(data=out)) == "chexpert"
    assert main([*argv, "--overwrite"]) == 0  # back to NIH's layout: no CheXpert file is left to be detected
    assert f"wrote 20 phantom images in NIH layout to {out}" in capsys.readouterr().out
    assert detect(DataSource(data=out)) == "nih"
    assert not (out / "train.csv").exists() and not list(out.glob("train/**/*.png"))
    assert main([*argv, "--layout", "chexpert", "--overwrite"]) == 0
    assert not (out / "Data_Entry_2017_v2020.csv").exists() and not list(out.glob("images/*.png"))


def test_bad_layout_and_folder_name_are_refused_before_writing(tmp_path):
    with pytest.raises(MaiAugError, match=r"^`layout` 'bogus': expected one of nih, chexpert$"):
        write_phantom(PhantomSpec(out=tmp_path / "x", n=10, size=32, layout="bogus"))
    with pytest.raises(MaiAugError, match="`out` .*cannot be named 'train'"):
        write_phantom(PhantomSpec(out=tmp_path / "train", n=10, size=32, layout="chexpert"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "train").exists()


def test_without_test_patients_there_is_no_valid_csv_and_without_others_a_refusal(tmp_path):
    """The phantom cache takes the layout; a plan with no test patient writes no valid.csv (the adapter reads none)."""
    spec = {"n": 12, "size": 32, "seed": 1, "layout": "chexpert"}  # this plan draws no test patient
    folder = ensure_phantom(spec, tmp_path, quiet=True)
    table = read_dataset(DataSource(data=folder))
    assert is_chexpert_csv(folder / "train.csv") and not (folder / "valid.csv").exists()
    assert len(table.images) == 12 and table.official is None
    assert ensure_phantom({**spec, "layout": "nih"}, tmp_path, quiet=True) != folder
    with pytest.raises(MaiAugError, match="`n` 1: all 1 patient.*train.csv would have no rows"):
        write_phantom(PhantomSpec(out=tmp_path / "one", n=1, size=32, seed=0, layout="chexpert"))  # a test patient
    assert not (tmp_path / "one").exists()
