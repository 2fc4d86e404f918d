"""Resume equals no interruption; checkpoints are atomic and never partial; one process per run folder.

Tiny runs: 32 training and 32 validation images at 32 px, 2 steps of 8 per epoch, workers 0, the random regime.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.core.layout import checkpoint_epoch, last_checkpoint
from mai_aug.core.locks import RunLock
from mai_aug.engine import checkpoint
from mai_aug.engine.checkpoint import atomic_write
from mai_aug.engine.handlers import CosineSchedule

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--regime", "complex", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--quiet",
        "--lr", "1e-3", "--steps-per-epoch", "2"]


@pytest.fixture(scope="module")
def small_datalist(phantom_dir, tmp_path_factory) -> Path:
    """The phantom's patient split, cut to 32 training and 32 validation images to keep each run cheap."""
    return cut_datalist(phantom_dir, tmp_path_factory.mktemp("resume"), training=32, validation=32)


def train(datalist: Path, run: Path, epochs: int, *extra: str) -> int:
    return main(["train", "--datalist", str(datalist), "--out", str(run), "--epochs", str(epochs), *TINY, *extra])


@pytest.fixture(scope="module")
def reference(small_datalist, tmp_path_factory) -> str:
    """metrics.csv of an uninterrupted 3-epoch run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train(small_datalist, run, 3) == 0
    return (run / "metrics.csv").read_text()


def checkpoint_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_resume_with_more_epochs_equals_an_uninterrupted_run(small_datalist, reference, tmp_path):
    run = tmp_path / "run"
    assert train(small_datalist, run, 1) == 0
    assert pd.read_csv(run / "metrics.csv")["lr"].tolist() == [1e-3]  # the rate used, not the next one
    # Epoch 1's rate is the same for any run length, so 1 epoch resumed to 3 is the uninterrupted 3-epoch run,
    # provided the schedule is stretched to 3 epochs and the batches and augmentations continue exactly.
    assert train(small_datalist, run, 3, "--resume") == 0
    assert (run / "metrics.csv").read_text() == reference  # every column: losses, rates, AUCs
    rates = pd.read_csv(run / "metrics.csv")["lr"].tolist()
    assert rates == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)], rel=1e-5)
    assert checkpoint_files(run) == ["best.pt", "last_checkpoint_epoch=3.pt"]  # the older one is gone


KILLER = """
import io, os, signal, sys
from mai_aug.engine import checkpoint
from mai_aug.cli import main

original = checkpoint.atomic_write

def dying_write(path, write):
    if path.name != {target!r}:
        return original(path, write)
    def half_then_die(f):
        buffer = io.BytesIO()
        write(buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return original(path, half_then_die)

checkpoint.atomic_write = dying_write
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_save_leaves_the_previous_one(small_datalist, reference, tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(KILLER.format(target="last_checkpoint_epoch=2.pt"))
    args = ["train", "--datalist", str(small_datalist), "--out", str(run), "--epochs", "2", *TINY]
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    names = checkpoint_files(run)
    assert "last_checkpoint_epoch=2.pt" not in names and "last_checkpoint_epoch=1.pt" in names
    assert [n for n in names if n.endswith(".tmp")], "the half-written file should be a hidden temporary"
    state = torch.load(run / "checkpoints" / "last_checkpoint_epoch=1.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2
    # Resumed with more epochs: epoch 1's rate is the same for any length, so the result is the 3-epoch run's.
    assert train(small_datalist, run, 3, "--resume") == 0
    assert (run / "metrics.csv").read_text() == reference
    assert checkpoint_files(run) == ["best.pt", "last_checkpoint_epoch=3.pt"]


def test_disk_full_keeps_the_mid_epoch_checkpoint_and_resume_is_exact(small_datalist, reference, tmp_path,
                                                                      monkeypatch, capsys):
    original = checkpoint.atomic_write

    def full_disk(path, write):
        if path.name != "last_checkpoint_epoch=1.pt":
            return original(path, write)

        def half_then_enospc(f):
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")

        return original(path, half_then_enospc)

    monkeypatch.setattr(checkpoint, "atomic_write", full_disk)
    run = tmp_path / "run"
    # A checkpoint every iteration: iteration 1 inside epoch 1 is saved, then epoch 1's own save fails.
    assert train(small_datalist, run, 3, "--checkpoint-every", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "last_checkpoint_epoch=1.pt: cannot write (no space left on the device)" in err
    assert "--resume continues from last_checkpoint_epoch=1_iteration=1.pt" in err
    assert checkpoint_files(run) == ["best.pt", "last_checkpoint_epoch=1_iteration=1.pt"]  # nothing partial
    newest = last_checkpoint(run / "checkpoints")
    assert checkpoint_epoch(newest) == 0
    assert torch.load(newest, weights_only=True)["trainer"]["iteration"] == 1
    monkeypatch.undo()
    # Resumed inside epoch 1: the first step is not redone, the epoch's mean loss still covers both steps.
    assert train(small_datalist, run, 3, "--resume", "--checkpoint-every", "1") == 0
    assert (run / "metrics.csv").read_text() == reference
    assert checkpoint_files(run) == ["best.pt", "last_checkpoint_epoch=3.pt"]


def test_atomic_write_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")

    def failing(f):
        f.write(b"new, partial")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(checkpoint.MaiAugError, match="metrics.csv: cannot write"):
        atomic_write(path, failing)
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["metrics.csv"]
    atomic_write(path, lambda f: f.write(b"new\n"))
    assert path.read_text() == "new\n" and sorted(os.listdir(tmp_path)) == ["metrics.csv"]


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_one_process_per_run_folder(small_datalist, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        assert train(small_datalist, run, 1) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "another process" in err and len(err.strip().splitlines()) == 1
        assert not (run / "checkpoints").exists()  # refused before touching the run
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock file (with its pid) is taken over.
    assert lock.read_text().strip() == str(holder.pid)
    with RunLock(lock):
        assert lock.read_text().strip() == str(os.getpid())
    with RunLock(lock):  # released on exit
        pass


def epoch_rates(epochs: int, resume_after: int | None = None) -> list[float]:
    """The rate used in each epoch by ``CosineSchedule`` on an ignite engine, optionally resumed."""
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    engine = Engine(lambda e, batch: None)
    CosineSchedule(optimizer, 1e-3, epochs).attach(engine)
    rates: list[float] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: rates.append(optimizer.param_groups[0]["lr"]))
    if resume_after:
        engine.load_state_dict({"iteration": resume_after * 3, "epoch_length": 3, "max_epochs": epochs})
    engine.run(range(3), max_epochs=epochs)
    return rates


def test_a_grown_schedule_uses_the_fresh_runs_rates():
    two = epoch_rates(2)
    assert two == pytest.approx([1e-3, 5e-4])  # the rate used during each epoch: the last is not 0
    assert two + epoch_rates(4, resume_after=2) == pytest.approx([*two, *epoch_rates(4)[2:]])
    assert epoch_rates(4)[2:] == pytest.approx([5e-4, 1e-3 * 0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_loader_path_with_worker_processes_resumes_exactly(small_datalist, tmp_path):
    """The per-image path in 2 DataLoader worker processes: 1 epoch resumed to 2 equals an uninterrupted 2-epoch run."""
    loader = ("--augment-on", "loader", "--workers", "2")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(small_datalist, whole, 2, *loader) == 0
    assert train(small_datalist, split, 1, *loader) == 0
    assert train(small_datalist, split, 2, "--resume", *loader) == 0
    assert (split / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    assert "loader" in (whole / "train.log").read_text()
