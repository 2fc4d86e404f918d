"""SIGINT and SIGTERM at chosen moments of ``train``, ``evaluate``, ``robustness`` and ``compare``; a SIGKILL soak.

Each interrupted command runs in a subprocess whose wrapper (``SIGNALLER``) makes the N-th call of one function
send the signal to its own process, so the signal lands at that moment (caching, a training step, validation, a
checkpoint save, evaluation's prediction loop) rather than after some wall-clock delay. The command must exit
with the shell's status (130, 143) and one line on stderr, leave nothing partial, free its run lock, and a rerun
of the same command must finish as an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.engine.runtime import RunLock, load_checkpoint
from mai_aug.interrupts import Interrupted, raise_on_signals

ROOT = Path(__file__).resolve().parents[1]
NET = ["--network", "densenet", "--network-args", "{init_features: 8, growth_rate: 4, block_config: [2, 2]}"]
TINY = ["--regime", "complex", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--quiet",
        "--lr", "1e-3", "--steps-per-epoch", "2", *NET]

SIGNALLER = """
import importlib, os, signal, sys
from mai_aug.cli import main

module, attribute, count, name = sys.argv[1:5]
owner, path = importlib.import_module(module), attribute.split(".")
for part in path[:-1]:
    owner = getattr(owner, part)
original, calls = getattr(owner, path[-1]), []

def signalling(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(count):
        os.kill(os.getpid(), getattr(signal, name))
    return original(*args, **kwargs)

setattr(owner, path[-1], signalling)
sys.exit(main(sys.argv[5:]))
"""


def interrupted(target: str, count: int, sig: signal.Signals, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``mai-aug argv`` in a subprocess whose ``count``-th call of ``module:attribute`` sends it ``sig``."""
    module, attribute = target.split(":")
    script = textwrap.dedent(SIGNALLER)
    env = {**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"}  # undefined AUCs of a tiny split: not our line
    return subprocess.run([sys.executable, "-c", script, module, attribute, str(count), sig.name, *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def check_interrupted(proc: subprocess.CompletedProcess, command: str, sig: signal.Signals) -> None:
    """Exit 128 + signal, and stderr is the one line naming the signal: no traceback, nothing else."""
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [f"mai-aug {command}: interrupted ({sig.name})"], proc.stderr[-3000:]


def check_run_folder(run: Path) -> None:
    """No temporary file anywhere, every last checkpoint readable, and the run's lock free."""
    assert not [p for p in run.rglob(".*.tmp")], sorted(map(str, run.rglob("*")))
    for path in (run / "checkpoints").glob("last_checkpoint_*.pt"):
        assert load_checkpoint(path)["trainer"]["iteration"] > 0
    with RunLock(run / ".lock"):  # taken at once: the interrupted process released it
        pass


@pytest.fixture(scope="module")
def small_datalist(phantom_dir, tmp_path_factory) -> Path:
    return cut_datalist(phantom_dir, tmp_path_factory.mktemp("interrupts"), training=32, validation=32, test=32)


def train_argv(datalist: Path, run: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "--datalist", str(datalist), "--out", str(run), "--epochs", str(epochs), *TINY, *extra]


@pytest.fixture(scope="module")
def reference(small_datalist, tmp_path_factory) -> str:
    """metrics.csv of an uninterrupted 2-epoch run (with a checkpoint every iteration, as the interrupted ones)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_argv(small_datalist, run, 2, "--checkpoint-every", "1")) == 0
    return (run / "metrics.csv").read_text()


# (what is interrupted, its N-th call, the signal, extra train options); 2 steps and 2 validation batches an
# epoch, a checkpoint every step: torch.save's 3rd call is last_checkpoint_epoch=1.pt (after iteration 1's and best.pt)
MOMENTS = {
    "memory-cache": ("monai.data:CacheDataset._load_cache_item", 5, signal.SIGTERM, ()),
    "disk-cache": ("mai_aug.data.loader:CheckedPersistentDataset._write_atomically", 5, signal.SIGINT,
                   ("--cache", "disk")),
    "step": ("monai.engines:SupervisedTrainer._iteration", 3, signal.SIGINT, ()),
    "step-workers": ("monai.engines:SupervisedTrainer._iteration", 3, signal.SIGTERM, ("--workers", "2")),
    "validation": ("monai.engines:SupervisedEvaluator._iteration", 3, signal.SIGTERM, ()),
    "checkpoint-save": ("torch:save", 3, signal.SIGINT, ()),
    "metrics-write": ("mai_aug.engine.handlers:write_text_atomic", 2, signal.SIGTERM, ()),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_train_interrupted_then_resumed_equals_an_uninterrupted_run(moment, small_datalist, reference, tmp_path):
    target, count, sig, extra = MOMENTS[moment]
    run = tmp_path / "run"
    argv = train_argv(small_datalist, run, 2, "--checkpoint-every", "1", *extra)
    check_interrupted(interrupted(target, count, sig, argv), "train", sig)
    check_run_folder(run)
    assert "DONE" not in {p.name for p in run.iterdir()}
    log = (run / "train.log").read_text()
    assert log.count(f"interrupted ({sig.name})") <= 1 and "Traceback" not in log
    if moment == "checkpoint-save":  # the save it stopped left no file; the one before it is the newest
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert names == ["best.pt", "last_checkpoint_epoch=1_iteration=1.pt"]
    assert main([*argv, "--resume"]) == 0
    assert (run / "metrics.csv").read_text() == reference
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last_checkpoint_epoch=2.pt"]


@pytest.fixture(scope="module")
def trained(small_datalist, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(train_argv(small_datalist, run, 1)) == 0
    return run


def test_evaluate_interrupted_in_its_prediction_loop_leaves_no_outputs(trained, small_datalist):
    argv = ["evaluate", "--run", str(trained), "--bootstrap", "200"]
    sig = signal.SIGTERM
    check_interrupted(interrupted("mai_aug.engine.inference:_Collect.__call__", 2, sig, argv), "evaluate", sig)
    eval_dir = trained / "eval"
    assert not list(eval_dir.glob("test_*")) and not list(eval_dir.glob(".*.tmp"))  # nothing vouches, nothing half
    check_run_folder(trained)
    assert main(train_argv(small_datalist, trained, 1, "--resume")) == 0  # not refused: nothing holds the run
    assert main(argv) == 0
    assert json.loads((eval_dir / "test_meta.json").read_text())["checkpoint"] == "best.pt"


def test_robustness_interrupted_between_levels_writes_no_meta(trained):
    argv = ["robustness", "--run", str(trained), "--bootstrap", "200", "--shifts", "rotation", "--levels",
            "rotation=0,10"]
    sig = signal.SIGINT
    check_interrupted(interrupted("mai_aug.engine.robustness:build_shift", 2, sig, argv), "robustness", sig)
    out = trained / "robustness"
    assert not (out / "meta.json").exists() and not list(out.glob(".*.tmp"))
    assert main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["levels"] == {"rotation": [0.0, 10.0]}


PRESET = """
phantom: {n: 150, size: 32, seed: 1}
data: {split: patient, val_frac: 0.15, test_frac: 0.2, seed: 0}
train: {image_size: 32, batch_size: 8, epochs: 1, steps_per_epoch: 2, lr: 1.0e-3, pretrained: none, workers: 0,
        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}
bootstrap: 200
"""


def test_compare_interrupted_in_its_second_run_resumes_it(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    out = tmp_path / "study"
    argv = ["compare", "--preset", str(preset), "--regimes", "none", "basic", "--cache-dir", str(tmp_path / "cache"),
            "--quiet", "--out", str(out)]
    sig = signal.SIGINT
    # the 3rd step is the first of the second run (the first run trains 2 steps)
    check_interrupted(interrupted("monai.engines:SupervisedTrainer._iteration", 3, sig, argv), "compare", sig)
    first, second = out / "none" / "seed-0", out / "basic" / "seed-0"
    assert (first / "eval" / "test_meta.json").is_file()
    assert not (second / "DONE").exists() and not list((second / "checkpoints").iterdir())
    check_run_folder(second)
    assert main(argv) == 0
    assert (second / "DONE").is_file() and (out / "report.md").is_file()


def test_raise_on_signals_raises_once_then_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as caught, raise_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
    with raise_on_signals():
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # while unwinding: ignored, and the next one is the OS default
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert {s: signal.getsignal(s) for s in before} == before
