"""Bad data in: every bad datalist, image or argument is one line naming the file and the cause, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_nih
from mai_aug.cli import main


@pytest.fixture
def datalist(tmp_path, nih_rows) -> Path:
    """A valid datalist of the six-image NIH folder, written by ``mai-aug split``."""
    data = write_nih(tmp_path / "nih", nih_rows + [(f"0000001{k}_000.png", "No Finding", 10 + k, "PA") for k in range(6)])
    out = tmp_path / "datalist.json"
    assert main(["split", "--data", str(data), "--out", str(out)]) == 0
    return out


def run_bad(args: list[str], capsys) -> str:
    """Run ``mai-aug`` expecting exit status 2 and one line on stderr; return that line."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def train_on(path: Path, tmp_path: Path) -> list[str]:
    return ["train", "--datalist", str(path), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
            "--batch-size", "2", "--workers", "0", "--quiet"]


def edit(datalist: Path, change) -> Path:
    """A copy of ``datalist`` with ``change(dict)`` applied."""
    body = json.loads(datalist.read_text())
    change(body)
    bad = datalist.with_name("bad.json")
    bad.write_text(json.dumps(body))
    return bad


def _first(body: dict) -> dict:
    return body["training"][0]


@pytest.mark.parametrize("change,fragment", [
    (lambda b: _first(b).pop("label"), "training item 0: no 'label'"),
    (lambda b: _first(b).pop("image"), "training item 0: no 'image'"),
    (lambda b: _first(b).update(label=_first(b)["label"][:13]), "'label' has 13 values; expected 14"),
    (lambda b: _first(b).update(label=[2] * 14), "'label' must hold 0/1 values"),
    (lambda b: _first(b).update(image="/nowhere/x.png"), "image files are missing, e.g. /nowhere/x.png (training)"),
    (lambda b: b.pop("validation"), "missing key 'validation'"),
    (lambda b: b["validation"][0].update(patient=_first(b)["patient"]), "in both training and validation (patient leakage)"),
])
def test_bad_datalist_is_one_line(datalist, tmp_path, capsys, change, fragment):
    bad = edit(datalist, change)
    err = run_bad(train_on(bad, tmp_path), capsys)
    assert fragment in err and str(bad) in err


def test_leaking_patient_ids_are_named(datalist, tmp_path, capsys):
    def leak(body: dict) -> None:
        body["test"][0]["patient"] = body["training"][0]["patient"]

    err = run_bad(train_on(edit(datalist, leak), tmp_path), capsys)
    patient = json.loads(datalist.read_text())["training"][0]["patient"]
    assert f"in both training and test (patient leakage): {patient}" in err


def test_non_utf8_datalist(datalist, tmp_path, capsys):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(datalist.read_bytes().replace(b'"labels"', b'"labels\xe9"', 1))
    assert "not UTF-8 text (byte" in run_bad(train_on(bad, tmp_path), capsys)


def test_relative_image_paths_are_taken_from_the_datalist_folder(datalist, tmp_path):
    from mai_aug.data.split import load_datalist

    def relative(body: dict) -> None:
        for key in ("training", "validation", "test"):
            for it in body[key]:
                it["image"] = str(Path(it["image"]).relative_to(datalist.parent))

    loaded = load_datalist(edit(datalist, relative))
    assert loaded["training"] and all(Path(it["image"]).is_file() for it in loaded["training"])
