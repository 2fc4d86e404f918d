"""The synthetic chest phantom: NIH layout, determinism, boxes, findings, shared anatomy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.data.nih import FINDINGS, read_nih
from mai_aug.data.phantom import (
    PREVALENCE,
    PhantomRenderer,
    PhantomSpec,
    sample_acquisition,
    sample_anatomy,
    write_phantom,
)
from mai_aug.data.prepare import split_data


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_files(tmp_path):
    a = write_phantom(PhantomSpec(out=tmp_path / "a", n=40, size=48, seed=7), workers=1)
    b = write_phantom(PhantomSpec(out=tmp_path / "b", n=40, size=48, seed=7), workers=2)
    c = write_phantom(PhantomSpec(out=tmp_path / "c", n=40, size=48, seed=8), workers=1)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert len(list((a / "images").glob("*.png"))) == 40


def test_split_reads_phantom_unchanged(phantom_dir, tmp_path, capsys):
    assert main(["split", "--data", str(phantom_dir), "--out", str(tmp_path / "dl.json"), "--require-all-images"]) == 0
    assert main(["split", "--data", str(phantom_dir), "--split", "official", "--out", str(tmp_path / "off.json")]) == 0
    table = read_nih(phantom_dir, require_all_images=True)
    assert len(table.frame) == 900 and not table.missing
    name = table.frame["Image Index"].iloc[0]
    assert len(name) == len("00000001_000.png") and name.endswith(".png")
    image = Image.open(table.frame["image"].iloc[0])
    assert image.mode == "L" and image.size == (64, 64)


def test_every_finding_present_with_ranked_prevalence(phantom_dir):
    table = read_nih(phantom_dir)
    counts = dict(zip(FINDINGS, table.labels.sum(0)))
    assert all(v > 0 for v in counts.values()), counts
    assert counts["Infiltration"] == max(counts.values())
    assert counts["Hernia"] < counts["Effusion"]
    assert list(PREVALENCE) == sorted(PREVALENCE, key=PREVALENCE.get, reverse=True)  # drawn ranked as in NIH
    assert max(PREVALENCE, key=PREVALENCE.get) == "Infiltration" and min(PREVALENCE, key=PREVALENCE.get) == "Hernia"
    labels = table.labels.astype(bool)
    atelectasis, effusion = FINDINGS.index("Atelectasis"), FINDINGS.index("Effusion")
    assert labels[labels[:, effusion], atelectasis].mean() > 1.25 * labels[:, atelectasis].mean()  # co-occurrence
    test_names = set((phantom_dir / "test_list.txt").read_text().split())
    in_test = table.frame["Image Index"].isin(test_names).to_numpy()
    assert in_test.mean() == pytest.approx(0.2, abs=0.07)
    assert (table.labels[in_test].sum(0) > 0).sum() >= 12


def test_boxes_match_findings(phantom_dir):
    boxes = pd.read_csv(phantom_dir / "BBox_List_2017.csv", header=None, skiprows=1, names=["name", "label", "x", "y", "w", "h"])
    assert (phantom_dir / "BBox_List_2017.csv").read_text().startswith("Image Index,Finding Label,Bbox [x,y,w,h]")
    table = read_nih(phantom_dir)
    findings = dict(zip(table.frame["Image Index"], table.labels))
    assert len(boxes) > 50
    for row in boxes.itertuples():
        assert findings[row.name][FINDINGS.index(row.label)] == 1, row
        assert 0 <= row.x < 64 and 0 <= row.y < 64 and row.w > 0 and row.h > 0


def test_patient_official_split_is_patient_wise(phantom_dir):
    train = {n.split("_")[0] for n in (phantom_dir / "train_val_list.txt").read_text().split()}
    test = {n.split("_")[0] for n in (phantom_dir / "test_list.txt").read_text().split()}
    assert train and test and not train & test


def test_follow_ups_share_anatomy(phantom_dir):
    frame = pd.read_csv(phantom_dir / "Data_Entry_2017_v2020.csv", index_col=False).iloc[:, :7]
    normal = frame[(frame["Finding Labels"] == "No Finding") & (frame["View Position"] == "PA")]
    groups = normal.groupby("Patient ID")["Image Index"].apply(list)
    groups = groups[groups.map(len) >= 2].head(40)
    assert len(groups) >= 10

    def load(name: str) -> np.ndarray:
        return np.asarray(Image.open(phantom_dir / "images" / name), dtype=float).ravel()

    same = [np.corrcoef(load(v[0]), load(v[1]))[0, 1] for v in groups]
    firsts = [v[0] for v in groups]
    other = [np.corrcoef(load(a), load(b))[0, 1] for a, b in zip(firsts, firsts[1:])]
    assert np.mean(same) > np.mean(other)
    # With the acquisition held fixed, two follow-ups without findings are the same picture.
    renderer = PhantomRenderer(64)
    anatomy = sample_anatomy(3, 1, {})
    layer = renderer.patient_layer(anatomy)
    acq = sample_acquisition(np.random.default_rng(0), shifted=False)
    a = renderer.render(sample_anatomy(3, 1, {}), layer, {}, acq, seed=1).pixels
    b = renderer.render(anatomy, renderer.patient_layer(sample_anatomy(3, 1, {})), {}, acq, seed=1).pixels
    c = renderer.render(sample_anatomy(3, 2, {}), renderer.patient_layer(sample_anatomy(3, 2, {})), {}, acq, seed=1).pixels
    assert (a == b).all() and not (a == c).all()


def test_heart_is_on_the_image_right_and_cardiomegaly_enlarges_it():
    renderer = PhantomRenderer(128)
    normal = renderer.lungs(sample_anatomy(0, 5, {}))[2]
    big = renderer.lungs(sample_anatomy(0, 5, {"Cardiomegaly": 1.0}))[2]
    cols = np.arange(128)
    centre = (normal.sum(0) * cols).sum() / normal.sum()
    assert centre > 64  # the heart sits to the patient's left: the image right
    assert big.sum() > 1.2 * normal.sum()


def test_bad_arguments(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "--size 8" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "x"), "--difficulty", "0"]) == 2


def test_densenet_learns_planted_findings(tmp_path):
    """A short training of MONAI's DenseNet121 on 64 px phantoms learns the clearest findings."""
    import pandas as pd

    data = write_phantom(PhantomSpec(out=tmp_path / "ph", n=1200, size=64, seed=11), workers=2)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--regime", "basic", "--out", str(run), "--image-size", "64",
                 "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "45", "--lr", "1e-3",
                 "--workers", "0", "--quiet"]) == 0
    assert main(["evaluate", "--run", str(run), "--split", "test", "--bootstrap", "200"]) == 0
    table = pd.read_csv(run / "eval" / "test_auc.csv").set_index("finding")
    for finding in ("Cardiomegaly", "Effusion", "Pneumothorax"):
        assert table.loc[finding, "positives"] >= 5
        assert table.loc[finding, "auc"] > 0.8, (finding, table.loc[finding, "auc"])


def test_site_shift_changes_only_test_patients(tmp_path):
    plain = write_phantom(PhantomSpec(out=tmp_path / "a", n=60, size=48, seed=2), workers=1)
    shifted = write_phantom(PhantomSpec(out=tmp_path / "b", n=60, size=48, seed=2, test_shift="site"), workers=1)
    test_names = set((plain / "test_list.txt").read_text().split())
    assert test_names and test_names == set((shifted / "test_list.txt").read_text().split())
    a, b = digest(plain / "images"), digest(shifted / "images")
    assert all(a[n] == b[n] for n in a if n not in test_names)
    assert sum(a[n] != b[n] for n in test_names) == len(test_names)
    assert (plain / "Data_Entry_2017_v2020.csv").read_text() == (shifted / "Data_Entry_2017_v2020.csv").read_text()


def test_site_shift_phantom_is_split_so_the_shifted_patients_are_the_test_set(tmp_path, capsys):
    """``split`` (and the ``split_data`` behind ``train --data`` and ``compare``) uses the official lists."""
    plain = write_phantom(PhantomSpec(out=tmp_path / "a", n=150, size=32, seed=4), workers=1)
    shifted = write_phantom(PhantomSpec(out=tmp_path / "b", n=150, size=32, seed=4, test_shift="site"), workers=1)
    a, b = digest(plain / "images"), digest(shifted / "images")
    changed = {n for n in b if a[n] != b[n]}  # the images the site shift touched, from their pixels
    assert len(changed) > 10
    assert main(["split", "--data", str(shifted), "--split", "patient", "--out", str(tmp_path / "dl.json")]) == 0
    assert "--test-shift site: using its official lists" in capsys.readouterr().out
    from_cli = json.loads((tmp_path / "dl.json").read_text())
    from_compare = split_data(shifted, split="patient", seed=1, report=None)
    for datalist in (from_cli, from_compare):
        names = {key: {Path(it["image"]).name for it in datalist[key]} for key in ("training", "validation", "test")}
        assert names["test"] == changed
        assert not changed & (names["training"] | names["validation"])
    plain_split = split_data(plain, split="patient", seed=1, report=None)  # an unshifted phantom keeps --split patient
    assert {Path(it["image"]).name for it in plain_split["test"]} != changed


def test_out_into_a_non_empty_folder_needs_overwrite(tmp_path, capsys):
    out = write_phantom(PhantomSpec(out=tmp_path / "ph", n=20, size=32, seed=1), workers=1)
    before = digest(out)
    assert main(["phantom", "--out", str(out), "--n", "10", "--size", "32", "--seed", "2", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and str(out) in err and "Traceback" not in err
    assert digest(out) == before
    assert main(["phantom", "--out", str(out), "--n", "10", "--size", "32", "--seed", "2", "--workers", "1",
                 "--overwrite"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 10  # no stale images from the larger phantom
    assert json.loads((out / "phantom.json").read_text())["n"] == 10


@pytest.mark.parametrize("field,value", [("difficulty", float("nan")), ("difficulty", float("inf")),
                                         ("images_per_patient", float("nan")), ("images_per_patient", float("inf"))])
def test_non_finite_arguments_are_refused_before_writing(tmp_path, field, value):
    spec = PhantomSpec(out=tmp_path / "ph", n=10, size=32, **{field: value})
    with pytest.raises(MaiAugError, match=f"`{field}`"):
        write_phantom(spec)
    assert not (tmp_path / "ph").exists()


def test_non_finite_cli_arguments_exit_2(tmp_path, capsys):
    for flag in ("--difficulty", "--images-per-patient"):
        assert main(["phantom", "--out", str(tmp_path / "ph"), flag, "nan"]) == 2
        err = capsys.readouterr().err
        assert flag in err and "nan" in err and "Traceback" not in err
