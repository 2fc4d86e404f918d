"""The held-out hostile-data probe (issue 18): files that are not what they claim, full disks, contradicting labels.

Each row of ``CASES`` builds one ``mai-aug`` invocation on the shared tiny run of ``test_bad_input`` and is judged by
its ``test_bad_input``: exit status 2 with one error line naming the file, column or value (or, for status 0, the
fragment said somewhere, e.g. as a warning), never a traceback, never code run from data.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import test_bad_input as bad_input
from PIL import Image
from test_bad_input import Env
from test_datasets import write_chexpert

import mai_aug.analyses.evaluate.run as evaluate_module
import mai_aug.core.files as utils_module
import mai_aug.core.preflight as preflight_module
import mai_aug.engine.checkpoint as checkpoint_module
from conftest import write_nih
from mai_aug.analyses.evaluate.predict import predict_files
from mai_aug.data.nih import read_csv

# the bad-input suite's fixtures (its tiny shared run) and its judge, under a name pytest does not collect again
small_datalist, shared_run, env = bad_input.small_datalist, bad_input.shared_run, bad_input.env
#: Rows whose error can only show part-way through the work (the disk fills while writing).
FOUND_DURING_WORK = {"torch-save-enospc", "evaluate-disk-fills"}


def one_line_check(build, status: int, fragment: str, env: Env, capsys, monkeypatch, during_work: bool = True) -> None:
    """test_bad_input's outcome check of ``build(env)`` (``during_work``: files may have been made before the error)."""
    bad_input.check_outcome(build(env), status, fragment, env, capsys, monkeypatch, during_work=during_work)

DICOM = bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"  # preamble, marker, one element


# --- image files -------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _xray(size: int = 32) -> np.ndarray:
    """An asymmetric 8-bit test image (a mirror or a turn changes it)."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 200, (size, size)).astype(np.uint8)
    pixels[: size // 4, : size // 2] = 255
    return pixels


def _with_orientation(fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(Image.fromarray(_xray()), fmt, exif=exif.tobytes())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (the pixel data is a few bytes: a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


IMAGES: dict[str, Callable[[], bytes]] = {
    "text": lambda: b"patient 1: no finding\n" * 8,
    "dicom": lambda: DICOM,
    "one-pixel": lambda: _encode(Image.fromarray(np.full((1, 1), 90, np.uint8))),
    "exif-rotated-jpeg": lambda: _with_orientation("JPEG", 6),
    "exif-mirrored-png": lambda: _with_orientation("PNG", 2),
    "bomb-40000": lambda: _declared_png(40000, 40000),
    "bomb-10000": lambda: _declared_png(10000, 10000),  # Pillow only warns here (between 1x and 2x its limit)
}


def predict_on(name: str, kind: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        return ["predict", "--run", str(env.run), str(env.write(name, IMAGES[kind]())), "--out", str(env.tmp / "p.csv")]

    return build


def predict_on_path(path: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        target = Path(path) if path.startswith("/") else env.tmp / path
        if not path.startswith("/"):
            target.mkdir()
        return ["predict", "--run", str(env.run), str(target), "--out", str(env.tmp / "p.csv")]

    return build


def _datalist_with(env: Env, change: Callable[[dict], None]) -> Path:
    datalist = json.loads(env.datalist.read_text())
    change(datalist)
    return env.write("dl.json", json.dumps(datalist))


def train_on_image(image: str | Callable[[Env], str], split: str = "training") -> Callable[[Env], list[str]]:
    """``train`` on the shared datalist with one item's image replaced (a path, or a file the callable writes)."""

    def build(env: Env) -> list[str]:
        path = image(env) if callable(image) else image

        def change(datalist: dict) -> None:
            datalist[split][3]["image"] = path

        return env.train(datalist=_datalist_with(env, change))

    return build


def train_on_dicoms(env: Env) -> list[str]:
    def change(datalist: dict) -> None:
        for key in ("training", "validation", "test"):
            for i, item in enumerate(datalist[key]):
                item["image"] = str(env.write(f"dicom/{key}_{i}.dcm", DICOM))

    return env.train(datalist=_datalist_with(env, change))


def duplicate_in_datalist(conflict: bool) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        def change(datalist: dict) -> None:
            copy = dict(datalist["training"][0])
            if conflict:
                copy["label"] = [1 - v for v in copy["label"]]
            datalist["training"].append(copy)

        return env.train(datalist=_datalist_with(env, change))

    return build


def checkpoint_folder(env: Env) -> list[str]:
    return ["evaluate", "--run", str(env.run), "--checkpoint", str(env.run / "checkpoints"), "--bootstrap", "200"]


def nih_rows(edit: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        rows = [("00000001_000.png", "No Finding", 1, "PA"), ("00000002_000.png", "Effusion", 2, "PA")]
        if edit == "huge-patient":
            rows[1] = ("00000002_000.png", "Effusion", 2**64, "PA")
        elif edit == "no-finding-and-finding":
            rows[1] = ("00000002_000.png", "No Finding|Effusion", 2, "PA")
        elif edit == "duplicate-row":
            rows.append(rows[1])
        data = write_nih(env.tmp / "data", rows)
        return ["split", "--data", str(data), "--out", str(env.tmp / "dl.json")]

    return build


def chexpert_row_twice(env: Env) -> list[str]:
    """CheXpert's train.csv with one row repeated: the image would be trained on twice."""
    top = write_chexpert(env.tmp / "chexpert", n_train=6, n_valid=3)
    lines = (top / "train.csv").read_text().splitlines()
    (top / "train.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    return ["split", "--data", str(top), "--out", str(env.tmp / "dl.json")]


def preview_with(kind: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        rows = [("00000001_000.png", "No Finding", 1, "PA"), ("00000002_000.png", "Effusion", 2, "PA")]
        data = write_nih(env.tmp / "data", rows, size=32)
        (data / "images" / "00000002_000.png").write_bytes(IMAGES[kind]())
        return ["preview", "--data", str(data), "--regime", "basic", "--size", "32", "--n", "2", "--samples", "1",
                "--out", str(env.tmp / "preview")]

    return build


# --- full disks -------------------------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are in: a disk filling up mid-write."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def fill_disk_while_writing(env: Env, names: tuple[str, ...], room: int = 100) -> None:
    """Every atomic write of a file named in ``names`` runs out of space after ``room`` bytes (until the test ends)."""
    original = utils_module.atomic_write

    def full(path, write, durable=True):
        if Path(path).name not in names:
            return original(path, write, durable)
        return original(path, lambda f: write(_FullDisk(f, room)), durable)

    for module in (m for m in (utils_module, checkpoint_module, evaluate_module) if hasattr(m, "atomic_write")):
        module_original = module.atomic_write
        module.atomic_write = full
        env.cleanups.append(lambda m=module, o=module_original: setattr(m, "atomic_write", o))


def checkpoint_on_full_disk(env: Env) -> list[str]:
    """``torch.save`` meets ENOSPC: torch's zip writer reports it as ``RuntimeError: unexpected pos``."""
    fill_disk_while_writing(env, ("best.pt",), room=1000)
    return env.train()


def evaluate_on_full_disk(env: Env) -> list[str]:
    run = env.copy_run()
    fill_disk_while_writing(env, ("test_auc.csv", "test_roc.png", "test_predictions.csv", "test_meta.json"))
    return ["evaluate", "--run", str(run), "--bootstrap", "200"]


def evaluate_without_free_space(env: Env) -> list[str]:
    run = env.copy_run()
    real = shutil.disk_usage
    preflight_module.shutil.disk_usage = lambda p: real(p)._replace(free=4096)
    env.cleanups.append(lambda: setattr(preflight_module.shutil, "disk_usage", real))
    return ["evaluate", "--run", str(run), "--bootstrap", "200"]


def predict_into(target: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        if not os.path.exists(target):
            pytest.skip(f"{target} does not exist here")
        image = env.write("x.png", _encode(Image.fromarray(_xray())))
        return ["predict", "--run", str(env.run), str(image), "--out", target]

    return build


# --- the table -----------------------------------------------------------------------------------------------

CASES = [
    # not images, whatever the name says: refused by content before any work, naming the file
    pytest.param(train_on_image("/etc/passwd"), 2, "/etc/passwd: not an image", id="datalist-image-etc-passwd"),
    pytest.param(train_on_dicoms, 2, "a DICOM file", id="train-on-dicom-list"),
    pytest.param(train_on_dicoms, 2, "pip install mai-aug[dicom]", id="train-on-dicom-says-how-to-enable"),
    pytest.param(train_on_image(lambda env: str(env.write("scan.png", DICOM)), "validation"), 2,
                 "scan.png: a DICOM file", id="dicom-named-png-in-validation"),
    pytest.param(predict_on("scan.dcm", "dicom"), 2, "scan.dcm: a DICOM file", id="predict-dicom"),
    pytest.param(predict_on("notes.txt", "text"), 2, "notes.txt: not an image", id="predict-text-file"),
    pytest.param(preview_with("dicom"), 2, "00000002_000.png: a DICOM file", id="preview-dicom-named-png"),
    # folders and devices are not "missing"
    pytest.param(predict_on_path("folder"), 2, "folder: is a folder", id="predict-folder"),
    pytest.param(predict_on_path("/dev/null"), 2, "/dev/null: is not a regular file", id="predict-device"),
    pytest.param(train_on_image(lambda env: str(env.tmp)), 2, "is a folder", id="datalist-image-is-a-folder"),
    pytest.param(train_on_image("/dev/zero"), 2, "/dev/zero (training: is not a regular file",
                 id="datalist-image-is-a-device"),
    pytest.param(checkpoint_folder, 2, "checkpoints is a folder", id="checkpoint-is-a-folder"),
    # images a chest X-ray study must not take silently
    pytest.param(predict_on("tiny.png", "one-pixel"), 2, "tiny.png: 1x1 px image", id="predict-1x1-image"),
    pytest.param(predict_on("turned.jpg", "exif-rotated-jpeg"), 2, "turned.jpg: EXIF orientation tag 6",
                 id="predict-jpeg-exif-rotated"),
    pytest.param(train_on_image(lambda env: str(env.write("mirrored.png", IMAGES["exif-mirrored-png"]()))), 2,
                 "mirrored.png: EXIF orientation tag 2", id="train-png-exif-mirrored"),
    pytest.param(predict_on("bomb.png", "bomb-40000"), 2, "bomb.png: 40000x40000 px image: above Pillow's",
                 id="predict-decompression-bomb"),
    pytest.param(predict_on("big.png", "bomb-10000"), 2, "big.png: 10000x10000 px image: above Pillow's",
                 id="predict-decompression-bomb-warning-range"),
    pytest.param(preview_with("bomb-40000"), 2, "00000002_000.png: 40000x40000 px", id="preview-decompression-bomb"),
    # contradicting or repeated labels
    pytest.param(duplicate_in_datalist(conflict=True), 2, "is listed twice with conflicting labels (training item 0",
                 id="datalist-image-twice-conflicting-labels"),
    pytest.param(duplicate_in_datalist(conflict=False), 2, "is listed twice (training item 0",
                 id="datalist-image-twice-same-labels"),
    pytest.param(nih_rows("no-finding-and-finding"), 2,
                 "row 3 (image '00000002_000.png'): 'No Finding' together with a finding",
                 id="nih-no-finding-with-a-finding"),
    pytest.param(nih_rows("duplicate-row"), 2, "duplicate image name", id="nih-duplicate-row"),
    pytest.param(chexpert_row_twice, 2, "train.csv: image 'CheXpert-v1.0-small/train/patient00001/study1/"
                 "view1_frontal.jpg' is listed twice", id="chexpert-row-twice"),
    pytest.param(nih_rows("huge-patient"), 2, "row 3 (image '00000002_000.png'): patient id too large",
                 id="nih-patient-id-above-int64"),
    # full disks
    pytest.param(checkpoint_on_full_disk, 2, "best.pt: cannot write (no space left on the device)",
                 id="torch-save-enospc"),
    pytest.param(evaluate_on_full_disk, 2, "cannot write (no space left on the device)", id="evaluate-disk-fills"),
    pytest.param(evaluate_without_free_space, 2, "no space left on the device (4 KiB free",
                 id="evaluate-no-free-space-before-inference"),
    # a device named as an output is refused before any work (a rename would replace it: issue 18's /dev/null)
    pytest.param(predict_into("/dev/full"), 2, "/dev/full: exists and is not a regular file", id="predict-out-dev-full"),
    pytest.param(predict_into("/dev/null"), 2, "/dev/null: exists and is not a regular file", id="predict-out-dev-null"),
]


@pytest.mark.parametrize(("build", "status", "fragment"), CASES)
def test_hostile_data(build, status, fragment, env, capsys, monkeypatch, request):
    one_line_check(build, status, fragment, env, capsys, monkeypatch,
                   during_work=request.node.callspec.id in FOUND_DURING_WORK)


def test_torch_save_enospc_leaves_nothing_partial(env, capsys, monkeypatch):
    """The one-line error of a checkpoint that met a full disk, and no partial or temporary file left behind."""
    out = env.tmp / "new-run"
    one_line_check(checkpoint_on_full_disk, 2, "best.pt: cannot write (no space left on the device)", env, capsys,
                   monkeypatch)
    assert not (out / "checkpoints" / "best.pt").exists()
    assert list((out / "checkpoints").glob(".*.tmp")) == []


def test_constant_image_warns_naming_the_file(env, capsys, monkeypatch):
    flat = env.write("flat.png", _encode(Image.fromarray(np.full((32, 32), 77, np.uint8))))
    argv = ["predict", "--run", str(env.run), str(flat), "--out", str(env.tmp / "p.csv")]
    one_line_check(lambda env: argv, 0, "flat.png: constant image (every pixel the same value)", env, capsys,
                   monkeypatch)


def test_image_modes_predict_as_their_8_bit_twin(shared_run, tmp_path):
    """A palette PNG and a 16-bit PNG of the same picture give the 8-bit PNG's probabilities."""
    pixels = _xray(48)
    files = {"gray": Image.fromarray(pixels),
             "palette": Image.fromarray(pixels).convert("P"),
             "16-bit": Image.fromarray(pixels.astype(np.uint16) * 257)}
    paths = []
    for name, image in files.items():
        paths.append(tmp_path / f"{name}.png")
        image.save(paths[-1])
    assert Image.open(paths[1]).mode == "P" and Image.open(paths[2]).mode.startswith("I;16")
    probs = predict_files(shared_run, paths, device="cpu").drop(columns="image").to_numpy()
    assert np.allclose(probs[1], probs[0], atol=1e-5) and np.allclose(probs[2], probs[0], atol=1e-5)


def test_nih_csv_with_bom_and_crlf_reads_like_the_plain_file(tmp_path):
    rows = [("00000001_000.png", "No Finding", 1, "PA"), ("00000002_000.png", "Effusion|Mass", 2, "AP")]
    plain = write_nih(tmp_path / "plain", rows) / "Data_Entry_2017_v2020.csv"
    windows = tmp_path / "windows.csv"
    windows.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))
    expected, got = read_csv(plain), read_csv(windows)
    assert got.equals(expected)
    assert got["OriginalImagePixelSpacing y"].tolist() == ["0.143", "0.143"]  # no "\r" left on the last field


@pytest.mark.parametrize(("kind", "problem"), [("text", "not an image"), ("dicom", "pip install mai-aug[dicom]"),
                                               ("bomb-40000", "decompression-bomb limit")])
def test_header_check_reads_only_the_header(kind, problem, tmp_path):
    """The content check behind every command: by magic bytes and header, whatever the file is called."""
    from mai_aug.data.images import header_problem

    path = tmp_path / "image.png"
    path.write_bytes(IMAGES[kind]())
    assert problem in header_problem(path)
    good = tmp_path / "good.dcm"  # a PNG named .dcm is judged by its content too
    good.write_bytes(_encode(Image.fromarray(_xray())))
    assert header_problem(good) is None


def test_dicom_goes_to_the_load_step_when_pydicom_is_installed(tmp_path, monkeypatch):
    """With the ``dicom`` extra a DICOM is left to MONAI's PydicomReader (a load step that uses it), not refused."""
    import mai_aug.data.images as images

    path = tmp_path / "scan.dcm"
    path.write_bytes(DICOM)
    assert "pip install mai-aug[dicom]" in images.header_problem(path)
    monkeypatch.setattr(images, "dicom_readable", lambda: True)
    assert images.header_problem(path) is None and images.image_problem(path) is None


def _tmpfs(env: Env, folder: Path, size: str) -> Path:
    """A real small file system at ``folder`` (a tmpfs: needs root and mount), unmounted when the test ends."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root (mount -t tmpfs)")
    import subprocess

    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    env.cleanups.append(lambda: subprocess.run(["umount", str(folder)], check=True))
    return folder


def test_train_on_a_real_full_disk(env, capsys, monkeypatch):
    """A run folder on a 16 MiB file system: the 28 MB best.pt meets ENOSPC inside torch.save (RuntimeError
    ``unexpected pos``), which is one line naming the file; nothing partial is left."""
    out = _tmpfs(env, env.tmp / "small-disk", "16m") / "run"
    one_line_check(lambda env: env.train(out=out), 2, "best.pt: cannot write (no space left on the device)", env,
                   capsys, monkeypatch)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == []


def test_evaluate_on_a_real_full_disk(env, capsys, monkeypatch):
    """A run folder on a full file system: refused before inference, in one line."""
    disk = _tmpfs(env, env.tmp / "full-disk", "1m")
    run = Path(shutil.copytree(env.run, disk / "run", ignore=shutil.ignore_patterns("checkpoints", "cache",
                                                                                    "tensorboard")))
    with open(disk / "filler", "wb") as f:  # fill what is left
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    argv = ["evaluate", "--run", str(run), "--checkpoint", str(env.run / "checkpoints" / "best.pt"),
            "--bootstrap", "200"]
    one_line_check(lambda env: argv, 2, "no space left on the device", env, capsys, monkeypatch)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_log_on_a_full_disk_is_one_warning_not_a_traceback_per_line(capsys):
    import logging

    from mai_aug.core.logs import LogFile, RunLog

    with RunLog(Path("/dev/full"), echo=False) as logger:
        for i in range(3):
            logger.info(f"line {i}")
    err = capsys.readouterr().err
    assert err == "warning: cannot write /dev/full (no space left on the device); it stops here\n"
    assert not [h for h in logging.getLogger("mai_aug").handlers if isinstance(h, LogFile)]  # removed on exit


def test_dicom_the_load_step_cannot_read_is_named(tmp_path, monkeypatch):
    """pydicom installed but the shipped load step (PILReader): the loader's failure names the file, in one line."""
    import mai_aug.data.images as images
    from mai_aug.core.errors import wrapped_message
    from mai_aug.data.loader import build_dataset
    from mai_aug.transforms.regimes import load_regime

    path = tmp_path / "scan.dcm"
    path.write_bytes(DICOM)
    monkeypatch.setattr(images, "dicom_readable", lambda: True)
    dataset = build_dataset([{"image": str(path), "label": [0.0] * 14}], load_regime("basic", 32), train=False,
                            cache="none")
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps it; the command line prints the MaiAugError inside
        dataset[0]
    assert wrapped_message(caught.value).startswith(f"{path}: a DICOM file that the load step cannot read")
