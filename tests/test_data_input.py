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
    """Run ``mai-aug`` expecting exit status 2, no traceback and one error line, the last; return that line."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(errors) == 1 and err.endswith(errors[0]), err
    return errors[0]


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


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "zero-byte": lambda data: b"",
    "not an image": lambda data: b"this is a text file, not a PNG\n",
}
CAUSES = {"truncated": "cannot decode image", "zero-byte": "empty file (0 bytes)",
          "not an image": "not an image (its content starts with b'this is a text f'"}  # refused by content


@pytest.fixture
def nih(tmp_path, nih_rows) -> Path:
    """Twelve 32 px images of eleven patients in NIH's layout."""
    rows = nih_rows + [(f"0000001{k}_000.png", "No Finding", 10 + k, "PA") for k in range(6)]
    return write_nih(tmp_path / "nih", rows, size=32)


def corrupt(path: str | Path, how: str) -> Path:
    path = Path(path)
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))
    return path


def training_images(data: Path, tmp_path: Path) -> list[str]:
    """The images the default split puts in training."""
    assert main(["split", "--data", str(data), "--out", str(tmp_path / "probe.json")]) == 0
    return [it["image"] for it in json.loads((tmp_path / "probe.json").read_text())["training"]]


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_split_verify_images_names_the_file_and_cause(nih, tmp_path, capsys, how):
    bad = corrupt(nih / "images" / "00000003_000.png", how)
    err = run_bad(["split", "--data", str(nih), "--out", str(tmp_path / "dl.json"), "--verify-images"], capsys)
    assert f"{bad}: {CAUSES[how]}" in err and "1 of 12 listed images cannot be read" in err
    assert not (tmp_path / "dl.json").exists()


def test_split_skip_bad_images_drops_counts_and_lists_them(nih, tmp_path, capsys):
    bad = [corrupt(nih / "images" / "00000003_000.png", "truncated"), corrupt(nih / "images" / "00000012_000.png", "zero-byte")]
    out = tmp_path / "dl.json"
    assert main(["split", "--data", str(nih), "--out", str(out), "--skip-bad-images"]) == 0
    assert "dropped 2 of 12 images that cannot be read" in capsys.readouterr().out
    datalist = json.loads(out.read_text())
    kept = {it["image"] for key in ("training", "validation", "test") for it in datalist[key]}
    assert len(kept) == 10 and not kept & {str(b) for b in bad}
    listed = (tmp_path / "dl_bad_images.csv").read_text().splitlines()
    assert listed[0] == "image,split,cause" and len(listed) == 3
    assert {line.split(",")[0] for line in listed[1:]} == {str(b) for b in bad}


@pytest.mark.slow
@pytest.mark.parametrize("cache,workers", [("store", "0"), ("none", "1"), ("none", "0")])
def test_train_names_an_undecodable_image(nih, tmp_path, capsys, cache, workers):
    """From the image store's build, a DataLoader worker or the plain dataset: one line, status 2."""
    bad = [corrupt(path, "truncated") for path in training_images(nih, tmp_path)]  # the first batch fails
    capsys.readouterr()
    args = ["train", "--data", str(nih), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "2", "--workers", workers, "--cache", cache]
    err = run_bad(args, capsys)
    assert any(f"{path}: cannot decode image" in err for path in bad), err


def test_train_skip_bad_images_writes_the_list_into_the_run_folder(nih, tmp_path, capsys):
    bad = corrupt(training_images(nih, tmp_path)[0], "not an image")
    run = tmp_path / "run"
    code = main(["train", "--data", str(nih), "--out", str(run), "--skip-bad-images", "--batch-size", "2",
                 "--epochs", "1", "--steps-per-epoch", "1", "--image-size", "32", "--workers", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert str(bad) in (run / "bad_images.csv").read_text()
    saved = json.loads((run / "datalist.json").read_text())
    assert str(bad) not in {it["image"] for key in ("training", "validation", "test") for it in saved[key]}


def test_predict_and_preview_name_the_file_and_cause(nih, tmp_path, capsys):
    bad = corrupt(nih / "images" / "00000003_000.png", "zero-byte")
    err = run_bad(["preview", "--data", str(nih), "--regime", "none", "--n", "12", "--size", "32",
                   "--out", str(tmp_path / "pv")], capsys)
    assert f"{bad}: empty file (0 bytes)" in err


@pytest.mark.slow
def test_evaluate_and_predict_name_the_file_and_cause(nih, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(nih), "--out", str(run), "--image-size", "32", "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--workers", "0", "--cache", "none", "--quiet"]) == 0
    test_image = json.loads((run / "datalist.json").read_text())["test"][0]["image"]
    bad = corrupt(test_image, "truncated")
    assert f"{bad}: cannot decode image" in run_bad(["evaluate", "--run", str(run), "--bootstrap", "200"], capsys)
    err = run_bad(["predict", "--run", str(run), str(bad), "--out", str(tmp_path / "p.csv")], capsys)
    assert f"{bad}: cannot decode image" in err


def test_compare_checks_images_before_caching(nih, tmp_path, capsys):
    bad = corrupt(nih / "images" / "00000003_000.png", "not an image")
    args = ["compare", "--data", str(nih), "--regimes", "none", "--image-size", "32", "--workers", "0", "--quiet"]
    err = run_bad([*args, "--out", str(tmp_path / "a"), "--verify-images"], capsys)
    assert f"{bad}: {CAUSES['not an image']}" in err
    # --batch-size 99 stops before the comparison folder exists, with --skip-bad-images too
    err = run_bad([*args, "--out", str(tmp_path / "b"), "--skip-bad-images", "--batch-size", "99"], capsys)
    assert "larger than the training split" in err and not (tmp_path / "b").exists()
    # with --skip-bad-images the image is dropped and listed in the comparison folder
    assert main([*args, "--out", str(tmp_path / "c"), "--skip-bad-images", "--batch-size", "2", "--epochs", "1",
                 "--steps-per-epoch", "1", "--bootstrap", "200"]) == 0
    assert str(bad) in (tmp_path / "c" / "bad_images.csv").read_text()
