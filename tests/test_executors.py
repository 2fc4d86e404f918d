"""A study's runs as jobs: the same answer from every executor, failed and locked runs, added seeds, shared folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.core.locks import RunLock, RunLocked
from mai_aug.study import jobs
from mai_aug.study.executors.base import ExecutorOptions, optional_package, run_in_rounds
from mai_aug.study.jobs import LOCKED, JobOutcome

ROOT = Path(__file__).resolve().parents[1]
TINY_PRESET = """description: tiny DenseNet
data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}
train: {batch_size: 16, lr: 1.0e-3, pretrained: none, in_channels: 1, workers: 0, cache: store, network: densenet,
        network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}
"""


def study_argv(phantom: Path, out: Path, *extra: str) -> list[str]:
    """A tiny comparison on the session's phantom (one thread per run, so every executor trains alike)."""
    preset = out.parent / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    return ["compare", "--data", str(phantom), "--preset", str(preset), "--image-size", "32", "--epochs", "1",
            "--steps-per-epoch", "3", "--bootstrap", "200", "--threads", "1", "--quiet", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def local_study(phantom_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(study_argv(phantom_dir, out, "--regimes", "none", "basic")) == 0
    return out


def fingerprints(out: Path) -> dict[str, dict]:
    fields = {}
    for path in sorted(out.glob("*/seed-*/fingerprint.json")):
        record = json.loads(path.read_text())
        fields[f"{path.parent.parent.name}/{path.parent.name}"] = record
    return fields


def log_span(run: Path) -> tuple[str, str]:
    """The first and last timestamps of a run's train.log (second resolution)."""
    lines = (run / "train.log").read_text().splitlines()
    return lines[0][:19], lines[-1][:19]


def test_ray_and_submitit_give_the_local_summary(local_study, phantom_dir, tmp_path, capsys):
    pytest.importorskip("ray")
    pytest.importorskip("submitit")
    ray_out, slurm_out = tmp_path / "ray", tmp_path / "slurm"
    assert main(study_argv(phantom_dir, ray_out, "--regimes", "none", "basic", "--executor", "ray")) == 0
    assert main(study_argv(phantom_dir, slurm_out, "--regimes", "none", "basic", "--executor", "slurm",
                           "--slurm-cluster", "local", "--slurm-gpus-per-run", "0")) == 0
    expected = (local_study / "summary.csv").read_bytes()
    assert (ray_out / "summary.csv").read_bytes() == expected
    assert (slurm_out / "summary.csv").read_bytes() == expected
    assert fingerprints(ray_out) == fingerprints(slurm_out) == fingerprints(local_study)
    (a_start, a_end), (b_start, b_end) = log_span(ray_out / "none" / "seed-0"), log_span(ray_out / "basic" / "seed-0")
    assert a_start <= b_end and b_start <= a_end, "Ray's 2 CPUs ran the 2 runs one after the other"
    assert list((slurm_out / "slurm").glob("*_log.err")), "no job logs under OUT/slurm"


def test_a_failed_job_leaves_the_others_then_only_it_trains(phantom_dir, tmp_path, capsys, monkeypatch):
    out, real_train = tmp_path / "out", jobs.train

    def failing_train(config, **kwargs):
        if config.seed == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_train(config, **kwargs)

    monkeypatch.setattr(jobs, "train", failing_train)
    assert main(study_argv(phantom_dir, out, "--regimes", "none", "--seeds", "0-1")) == 2
    err = capsys.readouterr().err
    assert "1 of 2 runs failed (none/seed-1)" in err and "CUDA out of memory (simulated)" in err
    assert "Traceback" not in err and "none/seed-0: trained" in err
    report = (out / "report.md").read_text()
    assert "## Runs missing from this report" in report and "`none/seed-1`: failed: RuntimeError: CUDA out" in report
    assert yaml.safe_load((out / "compare_config.yaml").read_text())["seed_list"] == [0]
    failure = json.loads((out / "none" / "seed-1" / "job_failure.json").read_text())
    assert "RuntimeError" in failure["details"] and failure["run"] == "none/seed-1"

    monkeypatch.setattr(jobs, "train", real_train)
    assert main(study_argv(phantom_dir, out, "--regimes", "none", "--seeds", "0-1", "--report-only")) == 0
    assert "not trained" not in capsys.readouterr().err
    assert "`none/seed-1`: failed: RuntimeError" in (out / "report.md").read_text()  # from the run's own record

    best = (out / "none" / "seed-0" / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert main(study_argv(phantom_dir, out, "--regimes", "none", "--seeds", "0-1")) == 0
    err = capsys.readouterr().err
    assert "none/seed-0: skipped" in err and "none/seed-1: trained" in err
    assert not (out / "none" / "seed-1" / "job_failure.json").exists()
    assert "Runs missing" not in (out / "report.md").read_text()

    assert main(study_argv(phantom_dir, out, "--regimes", "none", "--seed-list", "3")) == 0  # adds a seed
    err = capsys.readouterr().err
    assert "none/seed-3: trained" in err and "seed-0:" not in err and "seed-1:" not in err
    assert (out / "none" / "seed-0" / "checkpoints" / "best.pt").stat().st_mtime_ns == best
    assert yaml.safe_load((out / "compare_config.yaml").read_text())["seed_list"] == [0, 1, 3]
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["seeds"] == 3).all()
    assert "3 (seeds 0, 1, 3)" in (out / "report.md").read_text()


def test_two_compares_on_one_folder_train_each_run_once(phantom_dir, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mai_aug", *study_argv(phantom_dir, out, "--regimes", "none", "--seeds", "2")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    errs = "".join(r[1] for r in results)
    assert errs.count("none/seed-0: trained") == 1 and errs.count("none/seed-1: trained") == 1, errs
    for seed in (0, 1):
        log = (out / "none" / f"seed-{seed}" / "train.log").read_text()
        assert log.count("finished ") == 1, (log, errs)  # one training wrote the run
    assert (pd.read_csv(out / "summary.csv")["seeds"] == 2).all(), errs
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp")), list(out.rglob("*tmp"))


def test_a_folder_another_compare_is_claiming_is_not_refused(tmp_path):
    """The moment that failed in CI: one compare has written its marker's temporary file and not yet renamed it."""
    from mai_aug.core.layout import StudyLayout
    from mai_aug.study.compare import _check_out

    out = tmp_path / "out"
    out.mkdir()
    (out / f".{StudyLayout(out).marker.name}.k3j2h1ab.tmp").write_text("a mai-aug compare folder")
    _check_out(out)  # the other compare's folder: taken, not refused
    (out / f".{StudyLayout(out).marker.name}.k3j2h1ab.tmp").unlink()
    (out / ".notes.k3j2h1ab.tmp").write_text("")  # any other file, hidden or not, still makes it a user's folder
    with pytest.raises(MaiAugError, match="not empty and not a comparison folder"):
        _check_out(out)


def test_a_killed_compare_is_resumed_by_the_next(phantom_dir, tmp_path, capsys):
    out = tmp_path / "out"
    # epochs of a few seconds: the poll below sees epoch 1's checkpoint before epoch 2's replaces it
    argv = study_argv(phantom_dir, out, "--regimes", "none", "--epochs", "3", "--steps-per-epoch", "40")
    proc = subprocess.Popen([sys.executable, "-m", "mai_aug", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    checkpoints, deadline = out / "none" / "seed-0" / "checkpoints", time.time() + 240
    while time.time() < deadline and not list(checkpoints.glob("last*epoch=1.pt")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("last*epoch=1.pt")), "no checkpoint before the kill"
    assert not (out / "none" / "seed-0" / "DONE").exists()  # killed mid-run, not after it
    assert main(argv) == 0
    assert "none/seed-0: resumed" in capsys.readouterr().err
    assert json.loads((out / "none" / "seed-0" / "DONE").read_text())["resumed"] is True


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_job_on_a_locked_run_comes_back_locked_and_touches_nothing(tmp_path):
    run = tmp_path / "none" / "seed-0"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / ".lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        config = jobs.TrainConfig(out=str(run), datalist=str(tmp_path / "missing.json"))
        outcome = jobs.run_job(jobs.RunJob("none/seed-0", config, n_boot=200))
        assert outcome.state == LOCKED and f"pid {holder.pid}" in outcome.message
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_evaluate_takes_the_run_lock(local_study, capsys):
    run = local_study / "none" / "seed-0"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / ".lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
        assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0  # released: it runs


def test_locked_runs_are_retried_after_the_others():
    calls: list[list[str]] = []
    locked_once = {"a"}

    def run_round(batch, announce):
        calls.append([j.label for j in batch])
        outcomes = []
        for job in batch:
            state = LOCKED if job.label in locked_once else "trained"
            locked_once.discard(job.label)
            outcome = JobOutcome(job.label, state)
            announce(outcome)
            outcomes.append(outcome)
        return outcomes

    class Job:
        def __init__(self, label: str) -> None:
            self.label = label

    heard: list[str] = []
    outcomes = run_in_rounds(run_round, [Job("a"), Job("b")], lambda o: heard.append(o.label), retry_seconds=0)
    assert calls == [["a", "b"], ["a"]] and heard == ["b", "a"]
    assert [o.label for o in outcomes] == ["a", "b"] and all(o.state == "trained" for o in outcomes)


def test_the_run_lock_is_reentrant_in_one_process_only(tmp_path):
    lock = tmp_path / ".lock"
    with RunLock(lock):
        with RunLock(lock):  # a job's train inside the job's own lock
            pass
        holder = subprocess.run([sys.executable, "-c", "import sys; from mai_aug.core.locks import RunLock\n"
                                 "try:\n    RunLock(sys.argv[1]).__enter__()\nexcept Exception as e:\n"
                                 "    print(type(e).__name__)", str(lock)],
                                cwd=ROOT, capture_output=True, text=True, check=True)
        assert holder.stdout.strip() == RunLocked.__name__  # still held after the inner block
    with RunLock(lock):
        pass


def test_a_missing_optional_package_is_one_line():
    with pytest.raises(MaiAugError, match=r'`executor` ray needs the package .no_such_module_here.: pip install -e "\.\[ray\]"'):
        optional_package("no_such_module_here", "ray", "ray")


@pytest.mark.parametrize(("extra", "message"), [
    (["--executor", "slurm"], "no sbatch on this machine"),
    (["--seeds", "3-1"], "a range A-B needs 0 <= A <= B"),
    (["--seeds", "x"], "expected a count (3) or a range of seeds (0-4)"),
    (["--seed-list", "1", "1"], "--seed-list: seed 1 given more than once"),
    (["--report-only", "--retrain"], "--report-only trains nothing"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: cannot join the Ray cluster"),
    (["--executor", "ray", "--ray-address", "nowhere"], "--ray-address nowhere: expected auto or HOST:PORT"),
    (["--executor", "ray", "--cpus-per-run", "4096"], "--cpus-per-run 4096: this machine has"),
    (["--executor", "slurm", "--slurm-cluster", "local", "--slurm-args", "qos"], "--slurm-args 'qos': expected KEY=VALUE"),
])
def test_bad_executor_and_seed_settings_are_one_line(extra, message, tmp_path, capsys):
    if "--executor" in extra and "slurm" in extra and any(Path(p, "sbatch").exists()
                                                           for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has sbatch")
    assert main(["compare", "--regimes", "none", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_remote_jobs_get_absolute_paths_and_their_own_threads(tmp_path, monkeypatch):
    from mai_aug.settings.config import TrainConfig
    from mai_aug.study.execute import _for_executor

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(out="study/none/seed-0", datalist="study/datalist.json", regimes_file=["r.yaml"])
    remote = _for_executor(config, ExecutorOptions(kind="ray", cpus_per_run=4), 4)
    assert remote.out == str(tmp_path / "study/none/seed-0") and remote.regimes_file == [str(tmp_path / "r.yaml")]
    assert remote.threads == 4 and remote.progress is False
    assert _for_executor(config, ExecutorOptions(kind="ray", cpus_per_run=4), None).threads == config.threads
    assert _for_executor(config, ExecutorOptions(), 4) == config
