"""The bad-input suite: what a new user gets wrong, run through the CLI, answered in one line with exit status 2.

Each row of ``CASES`` builds one ``mai-aug`` invocation (files written, a run folder copied and damaged, a lock
held...) and gives the expected exit status and a fragment of the expected message. No case may print a
traceback, and none may run code from a file (the marker file of the code payloads must stay absent).
Cases that need a trained run share one tiny run (32 px, 1 epoch, 2 steps, workers 0, 40 images).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cut_datalist, write_nih
from mai_aug.cli import main

TINY = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
        "--cache", "store"]
SUBSET = {"training": 24, "validation": 8, "test": 8}  # items per split kept from the phantom's datalist


@dataclass
class Env:
    """What a case builds on: the shared inputs, this test's folder, and cleanups to run after ``main``."""

    phantom: Path
    datalist: Path
    run: Path
    tmp: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def marker(self) -> Path:
        return self.tmp / "PWNED"

    def write(self, name: str, body: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(textwrap.dedent(body))
        return path

    def copy_run(self) -> Path:
        """A private copy of the shared run, free to damage."""
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def train(self, *extra: str, datalist: Path | None = None, out: Path | None = None) -> list[str]:
        return ["train", "--datalist", str(datalist or self.datalist), "--regime", "basic",
                "--out", str(out or self.tmp / "new-run"), *TINY, *extra]

    def resume(self, run: Path, *extra: str) -> list[str]:
        """``train --resume`` with the shared run's own arguments (what a user re-types)."""
        return self.train("--resume", *extra, out=run)

    def read_only(self, folder: Path) -> Path:
        """Make ``folder`` unwritable for this process until the test ends (a read-only bind mount as root)."""
        folder.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            self.cleanups.append(lambda: folder.chmod(0o755))
            return folder
        mount = ["mount", "--bind", str(folder), str(folder)]
        if subprocess.run(mount, capture_output=True).returncode != 0:
            pytest.skip("running as root without mount: cannot make a folder read-only")
        self.cleanups.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        return folder


@pytest.fixture(scope="module")
def small_datalist(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom split by patient, cut to a few items per split (cheap to cache and validate)."""
    return cut_datalist(phantom_dir, tmp_path_factory.mktemp("bad-input-data"), **SUBSET)


@pytest.fixture(scope="module")
def shared_run(small_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("bad-input-run") / "run"
    assert main(["train", "--datalist", str(small_datalist), "--regime", "basic", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture
def env(phantom_dir, small_datalist, shared_run, tmp_path):
    environment = Env(phantom_dir, small_datalist, shared_run, tmp_path)
    yield environment
    for cleanup in reversed(environment.cleanups):
        cleanup()


# --- builders ------------------------------------------------------------------------------------------------


def _touch(marker: Path) -> str:
    return f"$__import__('os').system('touch {marker}') or 1.0"


def evil_regimes(where: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        body = {
            "argument": f'regimes: {{evil: {{random: [{{_target_: RandGaussianNoised, keys: image, prob: "{_touch(env.marker)}"}}]}}}}',
            "load": f'load: [{{_target_: LoadImaged, keys: image, image_only: "{_touch(env.marker)}"}}]\nregimes: {{evil: {{}}}}',
            "target": f'regimes: {{evil: {{random: [{{_target_: os.system, command: "touch {env.marker}"}}]}}}}',
            "reader": f'load: [{{_target_: LoadImaged, keys: image, reader: os.system, command: "touch {env.marker}"}}]\nregimes: {{evil: {{}}}}',
            "attribute": "regimes: {evil: {random: [{_target_: mai_aug.transforms.regimes.ConfigParser, config: {}, globals: {z: this}}]}}",
        }[where]
        return ["regimes", "--regimes-file", str(env.write("evil.yaml", body + "\n")), "--image-size", "32"]

    return build


def evil_run(command: str, reader: bool = False) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        run = env.copy_run()
        config = yaml.safe_load((run / "config.yaml").read_text())
        load = config["resolved"]["regime"]["load"][0]
        if reader:  # LoadImage would pydoc.locate a string reader and call it with its other arguments
            load.update(reader="os.system", command=f"touch {env.marker}")
        else:
            load["image_only"] = _touch(env.marker)
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        image = env.write("x.png", _png())
        return {"evaluate": ["evaluate", "--run", str(run), "--bootstrap", "200"],
                "predict": ["predict", "--run", str(run), str(image), "--out", str(env.tmp / "p.csv")],
                "resume": env.resume(run, "--epochs", "2")}[command]

    return build


def damaged_checkpoint(which: str, damage: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        run = env.copy_run()
        folder = run / "checkpoints"
        path = folder / "best.pt" if which == "best" else next(folder.glob("last_checkpoint_epoch=*.pt"))
        data = path.read_bytes()
        path.write_bytes(b"" if damage == "zero" else data[: len(data) // 2])
        if which == "best":
            return ["evaluate", "--run", str(run), "--bootstrap", "200"]
        return env.resume(run, "--epochs", "2")

    return build


def not_a_checkpoint(env: Env) -> list[str]:
    """A PNG given as --checkpoint: torch's refusal runs to many lines; the error stays one."""
    return ["evaluate", "--run", str(env.run), "--checkpoint", str(env.write("model.pt", _png())), "--bootstrap", "200"]


class _Payload:
    """Unpickling this runs a shell command: what a hostile .pt file can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def code_in_a_checkpoint(env: Env) -> list[str]:
    """A .pt file whose pickle would run a command: torch's weights-only loader refuses it before anything runs."""
    path = env.tmp / "hostile.pt"
    torch.save({"model": _Payload(env.marker)}, path)
    return ["evaluate", "--run", str(env.run), "--checkpoint", str(path), "--bootstrap", "200"]


def invalid_datalist_json(env: Env) -> list[str]:
    return env.train(datalist=env.write("dl.json", '{"labels": ["Atelectasis"],\n "training": [\n'))


def held_lock(env: Env) -> list[str]:
    out = env.tmp / "busy"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)  # another holder: a second open description conflicts,
    fcntl.flock(fd, fcntl.LOCK_EX)  # even in this process (RunLock is re-entrant only through itself)
    env.cleanups.append(lambda: os.close(fd))
    return env.train(out=out)


def phantom_into_dataset(env: Env) -> list[str]:
    data = write_nih(env.tmp / "data", [("00000001_000.png", "No Finding", 1, "PA")])
    return ["phantom", "--out", str(data), "--n", "4", "--size", "32"]


def damaged_store(damage: str) -> Callable[[Env], list[str]]:
    """A run resumed over an image store whose array was emptied or cut short: not served, rebuilt (exit 0)."""
    def build(env: Env) -> list[str]:
        run, cache = env.copy_run(), env.tmp / "stores"
        assert main(["prepare", "--datalist", str(run / "datalist.json"), "--image-size", "32", "--cache-dir",
                     str(cache), "--workers", "1"]) == 0
        for array in cache.rglob("images.npy"):
            array.write_bytes(b"" if damage == "zero" else array.read_bytes()[:400])
        return env.resume(run, "--epochs", "2", "--cache-dir", str(cache))

    return build


def bad_run_config(body: str | None = None, **values: object) -> Callable[[Env], list[str]]:
    """A run folder whose config.yaml is ``body``, or its own with ``values`` set: valid YAML of the wrong shape."""

    def build(env: Env) -> list[str]:
        run = env.copy_run()
        path = run / "config.yaml"
        path.write_text(body if body is not None else yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))
        return ["evaluate", "--run", str(run), "--bootstrap", "200"]

    return build


def _png() -> bytes:
    from io import BytesIO

    import numpy as np
    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_IMAGES = {"zero": lambda: b"", "truncated": lambda: _png()[:60], "not-image": lambda: b"hello, no picture\n" * 8}


def bad_image(kind: str, command: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        bad = env.write("bad.png", BAD_IMAGES[kind]())
        if command == "train":
            datalist = json.loads(env.datalist.read_text())
            datalist["training"][3]["image"] = str(bad)
            # the image store decodes every item before the network is built
            return env.train("--cache", "store", datalist=env.write("dl.json", json.dumps(datalist)))
        if command == "train-verify":  # --verify-images decodes every image before the run folder exists
            datalist = json.loads(env.datalist.read_text())
            datalist["training"][3]["image"] = str(bad)
            return env.train("--verify-images", datalist=env.write("dl.json", json.dumps(datalist)))
        if command == "compare-verify":  # and before the comparison folder exists
            data = Path(shutil.copytree(env.phantom, env.tmp / "data"))
            shutil.copy(bad, sorted((data / "images").glob("*.png"))[0])
            return compare_with("--data", str(data), "--verify-images")(env)
        if command == "evaluate":
            run = env.copy_run()
            datalist = json.loads((run / "datalist.json").read_text())
            datalist["test"][2]["image"] = str(bad)
            (run / "datalist.json").write_text(json.dumps(datalist))
            return ["evaluate", "--run", str(run), "--bootstrap", "200"]
        if command == "predict":
            return ["predict", "--run", str(env.run), str(bad), "--out", str(env.tmp / "p.csv")]
        rows = [("00000001_000.png", "No Finding", 1, "PA"), ("00000002_000.png", "Effusion", 2, "PA")]
        data = write_nih(env.tmp / "data", rows, size=32)
        shutil.copy(bad, data / "images" / "00000002_000.png")
        return ["preview", "--data", str(data), "--regime", "basic", "--size", "32", "--n", "2", "--samples", "1",
                "--out", str(env.tmp / "preview")]

    return build


def bad_image_in_worker(env: Env) -> list[str]:
    """A bad validation image met inside a DataLoader worker process (the error arrives as traceback text)."""
    datalist = json.loads(env.datalist.read_text())
    datalist["validation"][1]["image"] = str(env.write("bad.png", BAD_IMAGES["truncated"]()))
    return env.train("--workers", "1", datalist=env.write("dl.json", json.dumps(datalist)))


def bad_datalist(damage: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        datalist = json.loads(env.datalist.read_text())
        if damage == "non-utf8":
            return env.train(datalist=env.write("dl.json", b"\xff\xfe" + json.dumps(datalist).encode()))
        item = datalist["training"][5]
        if damage == "no-label":
            del item["label"]
        elif damage == "short-label":
            item["label"] = item["label"][:-1]
        elif damage == "missing-image":
            item["image"] = str(env.tmp / "gone.png")
        else:  # one patient in training and validation
            datalist["validation"][0]["patient"] = item["patient"]
        return env.train(datalist=env.write("dl.json", json.dumps(datalist)))

    return build


def bad_preset(body: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        return ["compare", "--preset", str(env.write("preset.yaml", body)), "--out", str(env.tmp / "cmp")]

    return build


def regimes_file(body: str | bytes) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        return ["regimes", "--regimes-file", str(env.write("mine.yaml", body)), "--image-size", "32"]

    return build


def read_only(command: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        if command == "train":
            return env.train(out=env.read_only(env.tmp / "ro"))
        if command == "evaluate":
            return ["evaluate", "--run", str(env.read_only(env.copy_run())), "--bootstrap", "200"]
        if command == "predict":
            image = env.write("x.png", _png())
            return ["predict", "--run", str(env.run), str(image), "--out", str(env.read_only(env.tmp / "ro") / "p.csv")]
        if command == "preview":
            return ["preview", "--data", str(env.phantom), "--regime", "basic", "--size", "32", "--n", "1",
                    "--samples", "1", "--out", str(env.read_only(env.tmp / "ro"))]
        if command == "compare":
            return ["compare", "--out", str(env.read_only(env.tmp / "ro")), "--cache-dir", str(env.tmp / "cache")]
        return ["split", "--data", str(env.phantom), "--out", str(env.read_only(env.tmp / "ro") / "dl.json")]

    return build


def symlink_loop(env: Env) -> list[str]:
    data = env.tmp / "data"
    (data / "images").mkdir(parents=True)
    shutil.copy(env.phantom / "Data_Entry_2017_v2020.csv", data)
    (data / "images" / "archive").symlink_to(env.phantom / "images")  # a symlinked folder is still followed
    (data / "images" / "loop").symlink_to(data / "images")
    return ["split", "--data", str(data), "--out", str(env.tmp / "dl.json")]


def nih_csv(edit: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        rows = [("00000001_000.png", "No Finding", 1, "PA"), ("00000002_000.png", "Effusion", 2, "PA")]
        if edit == "finding":
            rows[1] = ("00000002_000.png", "Pneumonitis", 2, "PA")
        if edit == "view":
            rows[1] = ("00000002_000.png", "Effusion", 2, "LL")
        data = write_nih(env.tmp / "data", rows)
        csv = data / "Data_Entry_2017_v2020.csv"
        if edit == "missing":
            csv.unlink()
        if edit == "header":
            csv.write_text(csv.read_text().replace("Finding Labels", "Findings", 1))
        extra = ["--images", str(csv)] if edit == "images" else []
        return ["split", "--data", str(data), "--out", str(env.tmp / "dl.json"), *extra]

    return build


def train_with(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: env.train(*extra)


def compare_with(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["compare", "--data", str(env.phantom), "--regimes", "none", "--image-size", "32",
                        "--out", str(env.tmp / "cmp"), "--cache-dir", str(env.tmp / "cache"), "--quiet", *extra]


def phantom_with(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["phantom", "--out", str(env.tmp / "ph"), "--n", "4", "--size", "32", *extra]


# --- the table -----------------------------------------------------------------------------------------------

CASES = [
    # configs are data: code in a regimes file or a run folder never runs
    pytest.param(evil_regimes("argument"), 2, "--trust-config", id="regimes-file-$-argument"),
    pytest.param(evil_regimes("load"), 2, "--trust-config", id="regimes-file-$-in-load"),
    pytest.param(evil_regimes("target"), 2, "--trust-config", id="regimes-file-target-os-system"),
    pytest.param(evil_run("evaluate"), 2, "--trust-config", id="run-config-code-evaluate"),
    pytest.param(evil_run("predict"), 2, "--trust-config", id="run-config-code-predict"),
    pytest.param(evil_run("resume"), 2, "--trust-config", id="run-config-code-resume"),
    pytest.param(evil_regimes("reader"), 2, "load[0].reader: reader 'os.system' is not one of MONAI's image readers",
                 id="regimes-file-reader-os-system"),
    pytest.param(evil_regimes("attribute"), 2, "'mai_aug.transforms.regimes.ConfigParser' is not a MONAI or mai_aug",
                 id="regimes-file-target-through-module-attribute"),
    *[pytest.param(evil_run(command, reader=True), 2, "load[0].reader: reader 'os.system'",
                   id=f"run-config-reader-os-system-{command}") for command in ("evaluate", "predict", "resume")],
    # checkpoints
    pytest.param(damaged_checkpoint("best", "zero"), 2, "best.pt: cannot be read, truncated or not a checkpoint (empty", id="best-zero-byte"),
    pytest.param(damaged_checkpoint("best", "truncated"), 2, "best.pt: cannot be read", id="best-truncated"),
    pytest.param(damaged_checkpoint("last", "zero"), 2, "epoch=1.pt: cannot be read, truncated or not a checkpoint (empty", id="last-zero-byte"),
    pytest.param(damaged_checkpoint("last", "truncated"), 2, "last_checkpoint_epoch=1.pt", id="last-truncated"),
    pytest.param(not_a_checkpoint, 2, "(refused by torch's weights-only loader: ", id="checkpoint-not-a-checkpoint"),
    pytest.param(lambda env: env.train("--split-seed", "-1"), 2, "argument --split-seed: -1 must be at least 0 and below 2**32",
                 id="split-seed-negative"),
    pytest.param(lambda env: env.train("--data", str(env.tmp)), 2, "give --data DIR or --datalist JSON, not both",
                 id="train-data-and-datalist"),
    pytest.param(code_in_a_checkpoint, 2, "hostile.pt: cannot be read, truncated or not a checkpoint (UnpicklingError: Weights only",
                 id="checkpoint-with-code"),
    pytest.param(held_lock, 2, "another process", id="two-trainings-one-out"),
    # run configs
    pytest.param(bad_run_config("- 1\n- 2\n"), 2, "config.yaml: expected a mapping of settings, got list",
                 id="run-config-a-list"),
    pytest.param(bad_run_config(""), 2, "config.yaml: empty", id="run-config-empty"),
    pytest.param(bad_run_config(image_size="abc"), 2, "config.yaml: image_size: expected an integer, got 'abc'", id="run-config-image-size-abc"),
    pytest.param(damaged_store("zero"), 0, "image store: decoding", id="image-store-zero-byte-rebuilt"),
    pytest.param(damaged_store("truncated"), 0, "image store: decoding", id="image-store-truncated-rebuilt"),
    # images
    *[pytest.param(bad_image(kind, command), 2, "bad.png" if command != "preview" else "00000002_000.png",
                   id=f"{kind}-png-{command}")
      for kind in BAD_IMAGES for command in ("train", "evaluate", "preview", "predict")],
    pytest.param(bad_image_in_worker, 2, "bad.png: cannot decode image", id="truncated-png-in-loader-worker"),
    pytest.param(bad_image("truncated", "train-verify"), 2, "bad.png", id="truncated-png-train-verify-images"),
    pytest.param(bad_image("truncated", "compare-verify"), 2, "listed images cannot be read", id="truncated-png-compare-verify-images"),
    # datalists
    pytest.param(bad_datalist("non-utf8"), 2, "not UTF-8", id="datalist-non-utf8"),
    pytest.param(invalid_datalist_json, 2, "not valid JSON", id="datalist-invalid-json"),
    pytest.param(bad_datalist("no-label"), 2, "label", id="datalist-item-without-label"),
    pytest.param(bad_datalist("short-label"), 2, "label", id="datalist-short-label"),
    pytest.param(bad_datalist("missing-image"), 2, "gone.png", id="datalist-missing-image"),
    pytest.param(bad_datalist("overlap"), 2, "patient", id="datalist-patient-in-two-splits"),
    # presets
    pytest.param(bad_preset("train: {epochs: ten}\n"), 2, "train.epochs", id="preset-epochs-ten"),
    pytest.param(bad_preset("train: {image_size: '32'}\n"), 2, "train.image_size", id="preset-image-size-string"),
    pytest.param(bad_preset("train: [1, 2]\n"), 2, "train", id="preset-train-list"),
    pytest.param(bad_preset("train: {epoch: 1}\n"), 2, "epochs", id="preset-typo-epoch"),
    pytest.param(bad_preset("train:\n  epochs: [1\n  lr: 2\n"), 2, "preset.yaml", id="preset-invalid-yaml"),
    # regimes files
    pytest.param(regimes_file("regime:\n  mine: {}\n"), 2, "'regimes'", id="regimes-file-without-regimes"),
    pytest.param(regimes_file("regimes:\n  mine: '%regimes#nope'\n"), 2, "regimes.mine: cannot resolve '%regimes#nope'",
                 id="regimes-file-bad-macro"),
    pytest.param(regimes_file(bytes(range(256)) * 4), 2, "mine.yaml: not UTF-8 text", id="regimes-file-binary"),
    pytest.param(regimes_file("regimes:\n  mine: {random: [\n"), 2, "not valid YAML", id="regimes-file-invalid-yaml"),
    pytest.param(train_with("--regime", "nope"), 2, "unknown regime 'nope'", id="unknown-regime"),
    pytest.param(regimes_file("regimes:\n  mine: {random: [{_target_: OneOf, weights: [0.9, 0.1], transforms: "
                              "[{_target_: Identityd, keys: image}, {_target_: Flipd, keys: image, spatial_axis: 1}]}]}\n"),
                 2, "regime 'mine', random: Flipd mirrors the image", id="regimes-file-flip-in-rare-oneof"),
    pytest.param(regimes_file("regimes:\n  mine: {deterministic: [{_target_: OneOf, weights: [0.9, 0.1], transforms: "
                              "[{_target_: NormalizeIntensityd, keys: image}, {_target_: Rotate90d, keys: image, k: 2}]}]}\n"),
                 2, "regime 'mine', deterministic: OneOf is random", id="regimes-file-oneof-in-deterministic"),
    pytest.param(regimes_file("regimes:\n  mine: {allow_lateral_flip: 'false', random: "
                              "[{_target_: RandFlipd, keys: image, spatial_axis: 1, prob: 0.5}]}\n"),
                 2, "allow_lateral_flip must be true or false", id="regimes-file-quoted-false-opt-in"),
    pytest.param(regimes_file("load: [{_target_: LoadImaged, keys: img}]\nregimes:\n  mine: {}\n"), 2,
                 "load: LoadImaged fails on a PNG test image: KeyError", id="regimes-file-failing-load-step"),
    # command-line values
    pytest.param(train_with("--lr", "nan"), 2, "--lr", id="lr-nan"),
    pytest.param(train_with("--workers", "-1"), 2, "--workers", id="workers-negative"),
    pytest.param(train_with("--seed", "-1"), 2, "--seed", id="seed-negative"),
    pytest.param(train_with("--early-stop", "-1"), 2, "--early-stop", id="early-stop-negative"),
    pytest.param(phantom_with("--difficulty", "nan"), 2, "--difficulty", id="phantom-difficulty-nan"),
    pytest.param(phantom_into_dataset, 2, "--overwrite", id="phantom-into-existing-dataset"),
    pytest.param(train_with("--lr", "1e6"), 2, "training diverged", id="lr-1e6-diverges"),
    # refused before the run or comparison folder exists (the network is built and checked first)
    pytest.param(train_with("--pretrained", "missing.pth"), 2, "--pretrained missing.pth: not 'none'",
                 id="train-pretrained-missing-file"),
    pytest.param(train_with("--network-args", "{nope: 1}"), 2, "cannot build it", id="train-bad-network-args"),
    pytest.param(compare_with("--pretrained", "missing.pth"), 2, "--pretrained missing.pth: not 'none'",
                 id="compare-pretrained-missing-file"),
    pytest.param(compare_with("--batch-size", "60000"), 2, "larger than the training split",
                 id="compare-batch-above-the-split"),
    pytest.param(compare_with("--preset", "nope"), 2, "--preset 'nope'", id="compare-unknown-preset"),
    pytest.param(compare_with("--network", "nope"), 2, "--network 'nope'", id="compare-unknown-network"),
    pytest.param(train_with("--network", "nope"), 2, "--network 'nope'", id="train-unknown-network"),
    # permissions and the file system
    pytest.param(read_only("train"), 2, "cannot write", id="read-only-run-folder-train"),
    pytest.param(read_only("evaluate"), 2, "cannot write", id="read-only-run-folder-evaluate"),
    pytest.param(read_only("predict"), 2, "cannot write", id="read-only-predict-out"),
    pytest.param(read_only("split"), 2, "cannot write", id="unwritable-out"),
    pytest.param(read_only("preview"), 2, "cannot write", id="read-only-preview-out"),
    pytest.param(read_only("compare"), 2, "cannot write", id="read-only-compare-out"),
    pytest.param(lambda env: ["compare", "--data", str(env.phantom), "--image-size", "64", "--saliency",
                              "--out", str(env.tmp / "cmp"), "--cache-dir", str(env.tmp / "cache")], 2,
                 "Grad-CAM's map (class_layers.relu of densenet121) is 2x2 at --image-size 64", id="compare-saliency-coarse-map"),
    pytest.param(lambda env: ["compare", "--saliency-force", "--out", str(env.tmp / "cmp")], 2,
                 "--saliency-force needs --saliency", id="compare-saliency-force-alone"),
    pytest.param(symlink_loop, 0, "training", id="symlink-loop-under-images"),
    # the NIH layout
    pytest.param(nih_csv("missing"), 2, "Data_Entry", id="missing-csv"),
    pytest.param(nih_csv("header"), 2, "Finding Labels", id="wrong-header"),
    pytest.param(nih_csv("finding"), 2, "Pneumonitis", id="unknown-finding"),
    pytest.param(nih_csv("view"), 2, "LL", id="unknown-view"),
    pytest.param(nih_csv("images"), 2, "--images", id="images-not-a-folder"),
]


#: Rows whose error can only show during the work (an image that stops decoding part-way, a training that
#: diverges): every other refusal comes before anything is generated, cached or written.
FOUND_DURING_WORK = {"truncated-png-train", "truncated-png-evaluate",
                     "truncated-png-in-loader-worker", "lr-1e6-diverges"}


def tree(folder: Path) -> set[Path]:
    """Every path under ``folder`` (empty when it does not exist)."""
    return set(folder.rglob("*")) if folder.is_dir() else set()


@pytest.mark.parametrize(("build", "status", "fragment"), CASES)
def test_bad_input(build, status, fragment, env, capsys, monkeypatch, request):
    check_outcome(build(env), status, fragment, env, capsys, monkeypatch,
                  during_work=request.node.callspec.id in FOUND_DURING_WORK)


def check_outcome(argv: list[str], status: int, fragment: str, env: Env, capsys, monkeypatch,
                  during_work: bool = False) -> None:
    """Run ``mai-aug argv``: no traceback, exit ``status``, no code run; a status-2 error is one line (the last,
    said once) holding ``fragment`` and, unless the error can only show ``during_work``, nothing was created in the
    test's folder or the cache; any other status prints ``fragment`` somewhere."""
    # logging as in a fresh process: no pytest handler on the root logger, so a library's unhandled records
    # reach stderr through logging.lastResort, as a user would see them
    monkeypatch.setattr(logging.root, "handlers", [])
    cache = env.tmp / "empty-cache"  # an empty phantom cache, as on a new machine: a refusal must not fill it
    monkeypatch.setenv("MAI_AUG_CACHE", str(cache))
    before = tree(env.tmp) | tree(cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    said = out + err + "".join(str(w.message) for w in caught)
    assert "Traceback" not in said
    assert code == status, said[-2000:]
    assert not env.marker.exists(), "code from a file ran"
    if status != 2:
        assert fragment in said
        return
    created = (tree(env.tmp) | tree(cache)) - before
    assert not created or during_work, f"refused, but created {sorted(map(str, created))[:5]}"  # checked before work
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"mai-aug {argv[0]}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # the error is one line, the last one
    assert fragment in errors[0]
    message = errors[0].split(": error: ", 1)[1]
    assert [line for line in lines if message[-80:] in line] == errors, err  # said once, not echoed by a logger
