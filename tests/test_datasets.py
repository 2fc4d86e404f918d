"""Datasets as adapters: NIH, CheXpert and a generic CSV, written on the fly in each real layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_nih
from mai_aug.cli import main
from mai_aug.data.datasets import DataSource, read_dataset
from mai_aug.data.datasets.chexpert import OBSERVATIONS
from mai_aug.data.nih import FINDINGS, read_nih
from mai_aug.data.prepare import split_data
from mai_aug.data.split import load_datalist, make_datalist
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.engine.metrics import PerFindingAUC
from mai_aug.reports.preview import caption
from mai_aug.stats.auc import auc_table, per_finding_auc

# CheXpert-v1.0's exact header.
CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
                   "Pleural Effusion,Pleural Other,Fracture,Support Devices")
TINY = ["--image-size", "32", "--batch-size", "8", "--workers", "0", "--quiet", "--lr", "1e-3"]


def _image(path: Path, rng: np.random.Generator, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.1f}"


def write_chexpert(root: Path, n_train: int = 40, n_valid: int = 12, seed: int = 0) -> Path:
    """``root/CheXpert-v1.0-small`` with train.csv (two studies a patient, a lateral view each) and valid.csv.

    Cells are 1.0, 0.0, -1.0 or blank, as in the release; every image file is a small random JPG.
    """
    rng = np.random.default_rng(seed)
    top = root / "CheXpert-v1.0-small"
    for split, n, first in (("train", n_train, 1), ("valid", n_valid, 64541)):
        lines = [CHEXPERT_HEADER]
        for p in range(first, first + n):
            for study, appa in ((1, "AP" if p % 3 else "PA"), (2, "PA")):
                values = rng.choice([1.0, 0.0, -1.0, np.nan], size=len(OBSERVATIONS), p=[0.3, 0.35, 0.15, 0.2])
                if split == "valid":
                    values[values == -1.0] = 0.0  # valid.csv has no uncertain labels
                for view, kind, ap in (("view1_frontal", "Frontal", appa), ("view2_lateral", "Lateral", "")):
                    rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study{study}/{view}.jpg"
                    lines.append(",".join([rel, "Female", "68", kind, ap, *map(_cell, values)]))
                    _image(root / rel, rng)
        (top / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return top


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory) -> Path:
    return write_chexpert(tmp_path_factory.mktemp("chexpert"))


def _fail(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _raw(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# --- CheXpert -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy, expected", [("ones", 1), ("zeros", 0), ("ignore", None)])
def test_chexpert_split_and_uncertain_policy(chexpert, tmp_path, policy, expected):
    out = tmp_path / "dl.json"
    assert main(["split", "--data", str(chexpert), "--uncertain", policy, "--split", "official",
                 "--val-frac", "0.2", "--out", str(out)]) == 0  # --dataset auto: train.csv has CheXpert's header
    raw = json.loads(out.read_text())
    assert raw["labels"] == list(OBSERVATIONS)
    train, valid = _raw(chexpert / "train.csv"), _raw(chexpert / "valid.csv")
    items = {it["name"]: it for key in ("training", "validation", "test") for it in raw[key]}
    frontal = pd.concat([train, valid]).query("`Frontal/Lateral` == 'Frontal'")
    assert sorted(items) == sorted(frontal["Path"])  # frontal images only, each once
    assert {it["name"] for it in raw["test"]} == set(valid.query("`Frontal/Lateral` == 'Frontal'")["Path"])
    for _, row in frontal.iterrows():
        item = items[row["Path"]]
        assert item["patient"] == row["Path"].split("/")[2] and item["view"] == row["AP/PA"]
        want = [expected if v == "-1.0" else (1 if v == "1.0" else 0) for v in row[list(OBSERVATIONS)]]
        assert item["label"] == want, row["Path"]
    patients = [{it["patient"] for it in raw[key]} for key in ("training", "validation", "test")]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and patients[1]
    loaded = load_datalist(out)  # null comes back as NaN
    n_unknown = sum(np.isnan(v) for key in ("training", "validation") for it in loaded[key] for v in it["label"])
    assert (n_unknown > 0) == (policy == "ignore")


def test_chexpert_patient_split_pools_both_files(chexpert):
    datalist = split_data(chexpert, report=None, source=DataSource(data=chexpert, dataset="chexpert"))
    names = {it["name"] for key in ("training", "validation", "test") for it in datalist[key]}
    assert any("/valid/" in n for n in names) and any("/train/" in n for n in names)
    test_names = {it["name"] for it in datalist["test"]}
    assert any("/train/" in n for n in test_names)  # --split patient: valid.csv is not the test set by itself


def test_chexpert_views_filter_on_ap_pa(chexpert):
    table = read_dataset(DataSource(data=chexpert, views=("PA",)))
    assert set(table.views) == {"PA"} and table.label_names == list(OBSERVATIONS)
    assert all("frontal" in n for n in table.names)


def _copy_chexpert(chexpert: Path, dest: Path, edit) -> Path:
    """A CheXpert folder whose train.csv is ``edit(text)``; images are linked, not copied."""
    dest.mkdir(parents=True)
    (dest / "train.csv").write_text(edit((chexpert / "train.csv").read_text()))
    for split in ("train", "valid"):
        link = dest / split
        link.symlink_to(chexpert / split, target_is_directory=True)
    return dest


def _replace_cell(text: str, line: int, column: str, value: str) -> str:
    rows = text.splitlines()
    names = rows[0].split(",")
    cells = rows[line].split(",")
    cells[names.index(column)] = value
    rows[line] = ",".join(cells)
    return "\n".join(rows) + "\n"


def test_chexpert_bad_input_is_one_line(chexpert, tmp_path, capsys):
    base = ["split", "--dataset", "chexpert", "--out", str(tmp_path / "dl.json")]
    bad = _copy_chexpert(chexpert, tmp_path / "two" / "CheXpert-v1.0-small",
                         lambda t: _replace_cell(t, 3, "Cardiomegaly", "2"))
    err = _fail(capsys, [*base, "--data", str(bad)])
    assert str(bad / "train.csv") in err and "'Cardiomegaly'" in err and "'2'" in err and "row 4" in err
    no_col = _copy_chexpert(chexpert, tmp_path / "col" / "CheXpert-v1.0-small",
                            lambda t: t.replace(",Edema,", ",Oedema,", 1))
    err = _fail(capsys, [*base, "--data", str(no_col)])
    assert str(no_col / "train.csv") in err and "'Edema'" in err
    no_patient = _copy_chexpert(chexpert, tmp_path / "pat" / "CheXpert-v1.0-small",
                                lambda t: t.replace("patient00002/study1", "p2/study1", 1))
    err = _fail(capsys, [*base, "--data", str(no_patient)])
    assert "'Path'" in err and "p2/study1" in err and "patientNNNNN" in err
    gone = _copy_chexpert(chexpert, tmp_path / "img" / "CheXpert-v1.0-small",
                          lambda t: t.replace("patient00003/study1/view1_frontal.jpg", "patient00003/study1/gone.jpg"))
    err = _fail(capsys, [*base, "--data", str(gone), "--require-all-images"])
    assert str(gone / "train.csv") in err and "patient00003/study1/gone.jpg" in err
    assert main([*base, "--data", str(gone)]) == 0  # without the flag: dropped and reported
    assert "dropped 1 of" in capsys.readouterr().out
    err = _fail(capsys, [*base, "--data", str(chexpert), "--uncertain", "maybe"])
    assert "--uncertain" in err and "maybe" in err
    err = _fail(capsys, [*base, "--data", str(chexpert), "--image-column", "Path"])
    assert "--image-column" in err and "chexpert" in err


# --- masked loss and AUC ------------------------------------------------------------------------------------------


def test_masked_loss_ignores_unknown_labels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen, requires_grad=True)
    target = (torch.rand(6, 4, generator=gen) > 0.5).float()
    unknown = torch.rand(6, 4, generator=gen) < 0.3
    masked = target.masked_fill(unknown, float("nan"))
    for freq in (None, np.array([0.1, 0.3, 0.5, 0.8])):
        loss_fn = WeightedBCEWithLogits(freq)
        loss = loss_fn(logits, masked)
        full = loss_fn(logits, target)  # the same loss with every label known, before masking
        per = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none",
            pos_weight=None if freq is None else loss_fn.w_pos / loss_fn.w_neg)
        per = per if freq is None else per * loss_fn.w_neg
        assert torch.isclose(loss, per[~unknown].mean()) and torch.isclose(full, per.mean())
        other = logits.detach().clone()
        other[unknown] = 1e4 * torch.sign(torch.randn(int(unknown.sum()), generator=gen))  # masked logits: any value
        assert torch.isclose(loss_fn(other, masked), loss)
        for flipped in (target.masked_fill(unknown, 0.0), target.masked_fill(unknown, 1.0)):
            assert torch.isclose(loss_fn(logits, flipped.masked_fill(unknown, float("nan"))), loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.all(grad[unknown] == 0) and torch.all(grad[~unknown] != 0)


def _masked_scores(seed: int = 1, n: int = 60, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.4).astype(float)
    scores = rng.random((n, k)) + 0.5 * labels
    labels[rng.random((n, k)) < 0.25] = np.nan
    return labels, scores


def test_masked_auc_equals_sklearn_on_known_rows():
    labels, scores = _masked_scores()
    aucs = per_finding_auc(labels, scores)
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        assert aucs[j] == pytest.approx(roc_auc_score(labels[known, j], scores[known, j]))
    metric = PerFindingAUC(["a", "b", "c"])
    metric.reset()
    metric.update((torch.as_tensor(scores), torch.as_tensor(labels)))
    result = metric.compute()
    assert [result[f"val/auc/{n}"] for n in "abc"] == pytest.approx(list(aucs))
    patients = np.arange(len(labels)) // 2
    table = auc_table(labels, scores, patients, ["a", "b", "c"], n_boot=200).set_index("finding")
    for j, name in enumerate("abc"):
        known = ~np.isnan(labels[:, j])
        assert table.loc[name, "positives"] + table.loc[name, "negatives"] == known.sum()
        assert table.loc[name, "auc"] == pytest.approx(roc_auc_score(labels[known, j], scores[known, j]))
        assert table.loc[name, "ci_low"] <= table.loc[name, "auc"] <= table.loc[name, "ci_high"]


def test_chexpert_ignore_trains_with_names_from_the_datalist(chexpert, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(chexpert), "--uncertain", "ignore", "--split", "official", "--val-frac", "0.3",
                 "--out", str(run), "--epochs", "1", "--steps-per-epoch", "3", *TINY]) == 0
    raw = json.loads((run / "datalist.json").read_text())
    assert raw["labels"] == list(OBSERVATIONS)
    assert any(v is None for it in raw["training"] for v in it["label"])  # uncertain kept unknown (JSON null)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns[4:]) == list(OBSERVATIONS)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {f"val/auc/{n}" for n in OBSERVATIONS} <= set(acc.Tags()["scalars"])
    assert np.isfinite(metrics["train_loss"]).all()
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--bootstrap", "200"]) == 0
    table = pd.read_csv(run / "eval" / "validation_auc.csv").set_index("finding")
    preds = pd.read_csv(run / "eval" / "validation_predictions.csv")
    assert table.index.tolist() == [*OBSERVATIONS, "macro"]
    checked = 0
    for name in OBSERVATIONS:
        known = preds[f"true_{name}"].notna()
        y = preds.loc[known, f"true_{name}"]
        if y.nunique() == 2:
            assert table.loc[name, "auc"] == pytest.approx(roc_auc_score(y, preds.loc[known, name]))
            checked += 1
    assert checked >= 5 and preds[[f"true_{n}" for n in OBSERVATIONS]].isna().any().any()
    # the shift sweep reads the same unknown labels as unknown (not as negatives), level 0 equal to evaluate
    assert main(["robustness", "--run", str(run), "--split", "validation", "--shifts", "rotation", "--levels",
                 "rotation=10", "--bootstrap", "200"]) == 0
    sweep = pd.read_csv(run / "robustness" / "table.csv")
    level0 = sweep[(sweep["shift"] == "rotation") & (sweep["level"] == 0)].set_index("finding")
    assert np.allclose(level0.loc[table.index, "auc"], table["auc"], equal_nan=True)


def test_preview_captions_use_the_dataset_names(chexpert, tmp_path):
    label = np.zeros(len(OBSERVATIONS))
    label[OBSERVATIONS.index("Edema")], label[OBSERVATIONS.index("Fracture")] = 1, np.nan
    assert caption(label, OBSERVATIONS) == "Edema, Fracture?"
    assert caption(np.zeros(14), OBSERVATIONS) == "No Finding"
    assert main(["preview", "--data", str(chexpert), "--regime", "basic", "--n", "2", "--samples", "1",
                 "--size", "32", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "grid.png").is_file()


# --- generic CSV ---------------------------------------------------------------------------------------------------


def write_generic(root: Path, n: int = 30, seed: int = 0) -> Path:
    """``root/labels.csv``: file, patient, a '|'-joined finding column and one-hot columns; images under root/img."""
    rng = np.random.default_rng(seed)
    names = ["Opacity", "Nodule", "Effusion"]
    rows = []
    for i in range(n):
        hot = rng.random(3) < 0.4
        _image(root / "img" / f"x{i}.png", rng)
        joined = "|".join(nm for nm, h in zip(names, hot) if h) or ("No Finding" if i % 2 else "")
        rows.append({"file": f"img/x{i}.png", "pid": f"P{i // 3}", "findings": joined,
                     **{nm: int(h) for nm, h in zip(names, hot)}})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_generic_csv_both_label_forms(tmp_path, capsys):
    csv = write_generic(tmp_path)
    frame = pd.read_csv(csv, keep_default_na=False)
    base = ["split", "--data", str(tmp_path), "--csv", str(csv), "--image-column", "file"]
    out = tmp_path / "joined.json"
    assert main([*base, "--labels-column", "findings", "--patient-column", "pid", "--out", str(out)]) == 0
    joined = json.loads(out.read_text())
    assert joined["labels"] == sorted({t for v in frame["findings"] if v and v != "No Finding" for t in v.split("|")})
    out2 = tmp_path / "hot.json"
    assert main([*base, "--dataset", "csv", "--label-columns", "Effusion", "Opacity", "--patient-column", "pid",
                 "--out", str(out2)]) == 0
    hot = json.loads(out2.read_text())
    assert hot["labels"] == ["Effusion", "Opacity"]
    by_file = frame.set_index("file")
    for key in ("training", "validation", "test"):
        for it in hot[key]:
            row = by_file.loc[it["name"]]
            assert it["label"] == [row["Effusion"], row["Opacity"]] and it["patient"] == row["pid"]
            assert it["image"] == str((tmp_path / it["name"]).resolve())
    by_key = {it["name"]: key for key in ("training", "validation", "test") for it in hot[key]}
    for _, group in frame.groupby("pid"):
        assert len({by_key[f] for f in group["file"]}) == 1  # a patient's images stay together
    capsys.readouterr()
    assert main([*base, "--labels-column", "findings", "--out", str(tmp_path / "own.json")]) == 0
    assert "each image is its own patient" in capsys.readouterr().out


def test_generic_csv_bad_input_is_one_line(tmp_path, capsys):
    csv = write_generic(tmp_path)
    base = ["split", "--data", str(tmp_path), "--csv", str(csv), "--out", str(tmp_path / "dl.json")]
    err = _fail(capsys, [*base, "--image-column", "path", "--labels-column", "findings"])
    assert str(csv) in err and "'path'" in err and "--image-column" in err
    err = _fail(capsys, [*base, "--image-column", "file", "--label-columns", "Opacity", "Mass"])
    assert "'Mass'" in err and "--label-columns" in err
    err = _fail(capsys, [*base, "--image-column", "file", "--labels-column", "findings", "--label-sep", ";"])
    assert str(csv) in err and "'findings'" in err and "--label-sep" in err and "|" in err
    frame = pd.read_csv(csv, keep_default_na=False, dtype=str)
    frame.loc[3, "pid"] = ""
    frame.loc[4, "Nodule"] = "2"
    frame.loc[8, "file"] = frame.loc[2, "file"]
    frame.to_csv(csv, index=False)
    err = _fail(capsys, [*base, "--image-column", "file", "--labels-column", "findings", "--patient-column", "pid"])
    assert str(csv) in err and "'file'" in err and "duplicate" in err and "row 10" in err
    frame.loc[8, "file"] = "img/x8.png"
    frame.to_csv(csv, index=False)
    err = _fail(capsys, [*base, "--image-column", "file", "--labels-column", "findings", "--patient-column", "pid"])
    assert str(csv) in err and "'pid'" in err and "empty patient id" in err and "row 5" in err
    err = _fail(capsys, [*base, "--image-column", "file", "--label-columns", "Nodule"])
    assert str(csv) in err and "'Nodule'" in err and "'2'" in err and "row 6" in err
    (tmp_path / "img" / "x7.png").unlink()
    err = _fail(capsys, [*base, "--image-column", "file", "--labels-column", "findings", "--require-all-images"])
    assert str(csv) in err and "img/x7.png" in err
    err = _fail(capsys, ["split", "--data", str(tmp_path), "--dataset", "csv", "--out", str(tmp_path / "d.json")])
    assert "--csv" in err
    err = _fail(capsys, [*base, "--image-column", "file", "--labels-column", "findings", "--views", "PA"])
    assert "--views" in err


# --- NIH and detection ---------------------------------------------------------------------------------------------


def test_nih_adapter_is_read_nih(tmp_path, nih_rows):
    root = write_nih(tmp_path / "nih", nih_rows * 1)
    table = read_dataset(DataSource(data=root))  # auto: Data_Entry_2017_v2020.csv
    nih = read_nih(root)
    assert table.label_names == list(FINDINGS) and np.array_equal(table.labels, nih.labels)
    assert table.names == nih.frame["Image Index"].tolist() and table.patients.tolist() == nih.frame["Patient ID"].tolist()
    assert make_datalist(table, val_frac=0.2, test_frac=0.2) == make_datalist(nih, val_frac=0.2, test_frac=0.2)


def test_detection_and_nih_bad_input(tmp_path, nih_rows, chexpert, capsys):
    root = write_nih(tmp_path / "nih", nih_rows)
    base = ["split", "--out", str(tmp_path / "dl.json")]
    err = _fail(capsys, [*base, "--data", str(tmp_path / "nih" / "images")])
    assert "cannot tell the dataset" in err and "--dataset" in err
    err = _fail(capsys, [*base, "--data", str(root), "--uncertain", "ones"])
    assert "--uncertain" in err and "nih" in err
    err = _fail(capsys, [*base, "--data", str(chexpert), "--dataset", "nih"])
    assert "Data_Entry_2017" in err
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace(",View Position", ",View", 1))
    err = _fail(capsys, [*base, "--data", str(root)])
    assert str(csv) in err and "'View Position'" in err


def test_compare_dataset_options_need_data(tmp_path, capsys):
    err = _fail(capsys, ["compare", "--dataset", "chexpert", "--out", str(tmp_path / "c")])
    assert "--data" in err
    assert not (tmp_path / "c").exists()  # refused before the phantom is generated or the folder made
    assert not any(Path(os.environ["MAI_AUG_CACHE"]).glob("phantom/*"))


def test_compare_on_chexpert_with_unknown_labels(chexpert, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(chexpert), "--uncertain", "ignore", "--regimes", "none", "--image-size", "32",
                 "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0", "--bootstrap", "200",
                 "--quiet", "--out", str(out)]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["labels"] == list(OBSERVATIONS)
    assert any(v is None for it in datalist["test"] for v in it["label"])  # the test set holds unknown labels
    report = (out / "report.md").read_text()
    assert all(name in report for name in OBSERVATIONS)
