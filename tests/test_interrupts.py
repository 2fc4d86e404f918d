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
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.core.interrupts import Interrupted, raise_on_signals
from mai_aug.core.locks import RunLock
from mai_aug.engine.checkpoint import load_checkpoint

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
    if len(calls) == int(count):  # group:SIGINT is Ctrl-C: the whole process group, loader workers too
        group, _, signame = name.rpartition(":")
        if group:
            os.killpg(os.getpgid(0), getattr(signal, signame))
        else:
            os.kill(os.getpid(), getattr(signal, signame))
    return original(*args, **kwargs)

setattr(owner, path[-1], signalling)
sys.exit(main(sys.argv[5:]))
"""


def interrupted(target: str, count: int, sig: signal.Signals, argv: list[str],
                group: bool = False) -> subprocess.CompletedProcess:
    """Run ``mai-aug argv`` in a subprocess (its own process group) whose ``count``-th call of ``module:attribute``
    sends ``sig`` to it, or with ``group`` to its whole process group as Ctrl-C in a terminal does."""
    module, attribute = target.split(":")
    script = textwrap.dedent(SIGNALLER)
    env = {**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"}  # undefined AUCs of a tiny split: not our line
    name = f"group:{sig.name}" if group else sig.name
    return subprocess.run([sys.executable, "-c", script, module, attribute, str(count), name, *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)


def check_interrupted(proc: subprocess.CompletedProcess, command: str, sig: signal.Signals, only: bool = True) -> None:
    """Exit 128 + signal, and stderr ends with the one line naming the signal, with no traceback.

    ``only``: that line is all of stderr (``--quiet`` train and evaluate); else progress lines may precede it.
    """
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"mai-aug {command}: interrupted ({sig.name})", proc.stderr[-3000:]
    assert proc.stderr.count(": interrupted (") == 1 and (len(lines) == 1 or not only), proc.stderr[-3000:]


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


# moment: (what is interrupted, its N-th call, the signal, to the whole process group, extra train options).
# 2 steps and 2 validation batches an epoch, a checkpoint every step: torch.save's 3rd call is
# last_checkpoint_epoch=1.pt (after iteration 1's and best.pt); handlers.write_text_atomic's 2nd is epoch 2's row.
# A process group gets Ctrl-C in a terminal and SIGTERM from SLURM's scancel; Kubernetes signals the main process.
MOMENTS = {
    "store-decoding": ("mai_aug.data.store_build:_decode", 5, signal.SIGTERM, False, ("--threads", "1")),
    "store-publishing": ("mai_aug.data.store_build:write_index", 1, signal.SIGINT, False, ()),
    "step": ("monai.engines:SupervisedTrainer._iteration", 3, signal.SIGINT, False, ()),
    "step-workers": ("monai.engines:SupervisedTrainer._iteration", 3, signal.SIGTERM, False, ("--workers", "2")),
    "ctrl-c-workers": ("monai.engines:SupervisedTrainer._iteration", 3, signal.SIGINT, True, ("--workers", "2")),
    "validation": ("monai.engines:SupervisedEvaluator._iteration", 3, signal.SIGTERM, False, ()),
    "scancel-validation-workers": ("monai.engines:SupervisedEvaluator._iteration", 3, signal.SIGTERM, True,
                                   ("--workers", "2")),
    "checkpoint-save": ("torch:save", 3, signal.SIGINT, False, ()),
    "metrics-write": ("mai_aug.engine.handlers:write_text_atomic", 2, signal.SIGTERM, False, ()),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_train_interrupted_then_resumed_equals_an_uninterrupted_run(moment, small_datalist, reference, tmp_path,
                                                                   monkeypatch):
    target, count, sig, group, extra = MOMENTS[moment]
    monkeypatch.setenv("MAI_AUG_CACHE", str(tmp_path / "cache"))  # the image store is built here, not found
    run = tmp_path / "run"
    argv = train_argv(small_datalist, run, 2, "--checkpoint-every", "1", *extra)
    check_interrupted(interrupted(target, count, sig, argv, group), "train", sig)
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


@pytest.mark.parametrize("target, count, sig, complete", [
    ("mai_aug.engine.inference:_Collect.__call__", 2, signal.SIGTERM, []),  # in the prediction loop
    ("mai_aug.core.files:atomic_write", 2, signal.SIGINT, ["test_auc.csv"]),  # writing its outputs, the ROC figure next
], ids=["predicting", "writing"])
def test_evaluate_interrupted_leaves_no_partial_output(target, count, sig, complete, trained, small_datalist):
    argv = ["evaluate", "--run", str(trained), "--bootstrap", "200"]
    check_interrupted(interrupted(target, count, sig, argv), "evaluate", sig)
    eval_dir = trained / "eval"
    assert sorted(p.name for p in eval_dir.glob("test_*")) == complete
    assert not list(eval_dir.glob(".*.tmp"))  # nothing half-written; no meta: nothing vouches for them
    check_run_folder(trained)
    assert main(train_argv(small_datalist, trained, 1, "--resume")) == 0  # not refused: nothing holds the run
    assert main(argv) == 0
    assert json.loads((eval_dir / "test_meta.json").read_text())["checkpoint"] == "best.pt"


def test_robustness_interrupted_between_levels_writes_no_meta(trained):
    argv = ["robustness", "--run", str(trained), "--bootstrap", "200", "--shifts", "rotation", "--levels",
            "rotation=0,10"]
    sig = signal.SIGINT
    check_interrupted(interrupted("mai_aug.analyses.robustness.run:build_batch_shift", 2, sig, argv), "robustness", sig,
                      only=False)  # it logs each level
    out = trained / "robustness"
    assert not (out / "meta.json").exists() and not list(out.glob(".*.tmp"))
    assert main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["levels"] == {"rotation": [0.0, 10.0]}


CTRL_C_IN_A_WORKER = """
import os, signal, sys, time
from mai_aug.cli import main
from mai_aug.data import phantom

render = phantom._render_patient

def render_or_press_ctrl_c(job):
    if job[1] == 12:  # one patient, in one rendering process: Ctrl-C to the terminal's process group
        os.killpg(os.getpgid(0), signal.SIGINT)
        time.sleep(2)
    return render(job)

phantom._render_patient = render_or_press_ctrl_c
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_while_processes_render_the_phantom(tmp_path):
    """The rendering processes ignore it; the command stops them and says one line, without their tracebacks."""
    out = tmp_path / "phantom"
    argv = ["phantom", "--out", str(out), "--n", "400", "--size", "32", "--workers", "2"]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CTRL_C_IN_A_WORKER), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, start_new_session=True)
    check_interrupted(proc, "phantom", signal.SIGINT, only=False)
    assert not (out / "Data_Entry_2017_v2020.csv").exists()  # the dataset's index is written last


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
    check_interrupted(interrupted("monai.engines:SupervisedTrainer._iteration", 3, sig, argv), "compare", sig,
                      only=False)  # each run's line
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


def test_a_process_forked_inside_the_block_does_not_raise():
    """A loader worker forked while the handler is set ignores the group's signal instead of raising in it.

    CI once saw SIGTERM arrive in a worker inside filelock's at-fork hook: the inherited handler raised there, and
    Python printed the worker's traceback under the command's one line.
    """
    with raise_on_signals():
        pid = os.fork()
        if pid == 0:  # the child: signal itself; exit 0 only if nothing was raised
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# The SIGKILL soak: one process imports torch and MONAI once (a few seconds), then forks each training process;
# each child SIGKILLs itself at its planned moment, whatever it is doing, as the OOM killer or a node failure would.
SOAK = r"""
import io, json, os, signal, sys
from pathlib import Path

from monai.engines import SupervisedEvaluator, SupervisedTrainer

import mai_aug.engine.train as train_module
from mai_aug.core import files as utils
from mai_aug.cli import main
from mai_aug.engine import checkpoint, handlers

reference, argv, run, kills = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
target = None  # [point, position] where this process dies


def die_at(point, position):
    if target == [point, position]:
        os.kill(os.getpid(), signal.SIGKILL)


def half_then_die(path, content):
    def write(f):
        f.write(content[: len(content) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    utils.atomic_write(path, write)


def step_or_die(original, point, position):
    def step(self, engine, batch):
        die_at(point, position(engine))
        return original(self, engine, batch)
    return step


def checkpoint_or_die(original):
    def write(path, fill, *args, **kwargs):
        if target == ["save", path.name]:
            buffer = io.BytesIO()
            fill(buffer)
            half_then_die(path, buffer.getvalue())
        original(path, fill, *args, **kwargs)
        die_at("saved", path.name)  # renamed into place, the older one not yet removed
    return write


def metrics_or_die(original):
    def write(path, text):
        rows = text.strip().splitlines()[1:]
        epoch = rows[-1].split(",")[0] if path.name == "metrics.csv" and rows else None
        if target == ["metrics", epoch]:
            half_then_die(path, text.encode())
        original(path, text)
        die_at("metrics-done", epoch)
    return write


def done_or_die(original):
    def write(path, text):
        die_at("finish", "")
        original(path, text)
    return write


SupervisedTrainer._iteration = step_or_die(SupervisedTrainer._iteration, "step", lambda e: str(e.state.iteration))
SupervisedEvaluator._iteration = step_or_die(SupervisedEvaluator._iteration, "validation",
                                             lambda e: f"{e.state.epoch}.{e.state.iteration}")
checkpoint.atomic_write = checkpoint_or_die(checkpoint.atomic_write)
handlers.write_text_atomic = metrics_or_die(handlers.write_text_atomic)
train_module.write_text_atomic = done_or_die(train_module.write_text_atomic)


def child(args, kill):
    global target
    pid = os.fork()
    if pid == 0:
        target, code = kill, 1
        try:
            code = main(args)
        finally:
            sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def state():
    metrics = run / "metrics.csv"
    epochs = [line.split(",")[0] for line in metrics.read_text().splitlines()[1:]] if metrics.is_file() else []
    return {"epochs": epochs, "files": sorted(p.name for p in (run / "checkpoints").iterdir())}


report = {"reference": child(reference, None), "kills": []}
for i, kill in enumerate(kills):
    report["kills"].append({"status": child([*argv, *(["--resume"] if i else [])], kill), **state()})
report["final"] = child([*argv, "--resume"], None)
print(json.dumps(report))
"""


def soak_moments(epochs: int, steps: int, every: int, val_batches: int) -> list[list[str]]:
    """Every moment of a run in order, as [point, position]: each step, each mid-epoch checkpoint write (half
    written, or renamed with the older one still there), each validation batch, each metrics.csv write, each
    epoch's checkpoint write, and the DONE file."""
    moments = []
    for epoch in range(1, epochs + 1):
        for i in range(1, steps + 1):
            iteration = (epoch - 1) * steps + i
            moments.append(["step", str(iteration)])
            if i % every == 0 and i != steps:
                name = f"last_checkpoint_epoch={epoch}_iteration={iteration}.pt"
                moments += [["save", name], ["saved", name]]
        moments += [["validation", f"{epoch}.{b}"] for b in range(1, val_batches + 1)]
        moments += [["metrics", str(epoch)], ["metrics-done", str(epoch)]]
        moments += [["save", f"last_checkpoint_epoch={epoch}.pt"], ["saved", f"last_checkpoint_epoch={epoch}.pt"]]
    return [*moments, ["finish", ""]]


def test_sigkill_soak_resumes_to_the_uninterrupted_run(small_datalist, tmp_path):
    """20 SIGKILLs at seeded moments of a 3-epoch run, each followed by ``train --resume``."""
    epochs, steps, every = 3, 6, 2
    moments = soak_moments(epochs, steps, every, val_batches=2)  # 32 validation images in batches of 16
    kills = [moments[k] for k in sorted(random.Random(18).sample(range(len(moments)), 20))]
    assert {"step", "save", "saved", "validation", "metrics", "metrics-done"} <= {point for point, _ in kills}
    options = ["--epochs", str(epochs), "--checkpoint-every", str(every), *TINY, "--steps-per-epoch", str(steps)]
    reference, run = tmp_path / "reference", tmp_path / "run"
    argv = ["train", "--datalist", str(small_datalist), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::UserWarning"}
    proc = subprocess.run([sys.executable, "-c", SOAK, json.dumps([*argv, "--out", str(reference)]),
                           json.dumps([*argv, "--out", str(run)]), str(run), json.dumps(kills)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["reference"] == 0, proc.stderr[-3000:]
    for kill, after in zip(kills, report["kills"]):
        assert after["status"] == -signal.SIGKILL, (kill, proc.stderr[-3000:])  # died there: never refused
        assert after["epochs"] == [str(e) for e in range(1, len(after["epochs"]) + 1)], (kill, after)
    assert report["final"] == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", f"last_checkpoint_epoch={epochs}.pt"]
    assert load_checkpoint(run / "checkpoints" / names[1])["trainer"]["iteration"] == epochs * steps
    assert (run / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert (run / "DONE").is_file() and not list(run.rglob(".*.tmp"))
