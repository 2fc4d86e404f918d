"""torchrun with two CPU processes (gloo): sharded training, gathered metrics, one set of outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cut_datalist
from mai_aug.cli import main
from mai_aug.data.nih import FINDINGS
from mai_aug.engine.distributed import DistContext

ROOT = Path(__file__).resolve().parents[1]

# workflows/train.py, then a check that no other thread is left when Python shuts down: gloo's were, and one that took
# the GIL there aborted the process now and then (SIGABRT, "terminate called without an active exception").
CHECKED_TRAIN = textwrap.dedent("""
    import os
    import sys
    from mai_aug.cli import main
    code = main(["train", *sys.argv[1:]])
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
    left = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks if int(t) != os.getpid()]
    if left:
        print(f"threads left at exit: {left}", file=sys.stderr)
    sys.exit(code or (3 if left else 0))
""")


@pytest.fixture(scope="module")
def train_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torchrun") / "train.py"
    path.write_text(CHECKED_TRAIN)
    return path


def workflow(name: str) -> Path:
    return ROOT / "workflows" / f"{name}.py"


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_shards_are_disjoint_and_complete():
    items = list(range(11))
    shards = [DistContext(rank=r, world_size=3).shard(items) for r in range(3)]
    assert sorted(sum(shards, [])) == items and [len(s) for s in shards] == [4, 4, 3]


def test_torchrun_matches_single_process_evaluation(phantom_dir, tmp_path, train_script):
    datalist = tmp_path / "dl.json"
    assert main(["split", "--data", str(phantom_dir), "--out", str(datalist)]) == 0
    run = tmp_path / "ddp"
    common = ["--datalist", str(datalist), "--regime", "basic", "--out", str(run), "--image-size", "32",
              "--batch-size", "16", "--steps-per-epoch", "3", "--workers", "0", "--quiet", "--lr", "1e-3"]
    result = torchrun(train_script, *common, "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    # Only rank 0 wrote: one event file, one log, one best and one last checkpoint.
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last_checkpoint_epoch=2.pt"]
    assert "x 2 processes (DDP)" in (run / "train.log").read_text()
    logged = pd.read_csv(run / "metrics.csv")
    assert logged["epoch"].tolist() == [1, 2]
    # The AUCs logged over the gathered shards equal a single-process evaluation of the same checkpoint.
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--checkpoint", "last", "--bootstrap", "200"]) == 0
    single = pd.read_csv(run / "eval" / "validation_auc.csv").set_index("finding")["auc"]
    last = logged.iloc[-1]
    for finding in FINDINGS:
        if pd.notna(single[finding]):
            assert last[finding] == pytest.approx(single[finding], abs=1e-6), finding
    # Training's macro averages every defined finding (evaluate's macro row averages only the scored ones).
    assert last["auc_macro"] == pytest.approx(single[list(FINDINGS)].mean(), abs=1e-6)
    # --resume under torchrun continues at the next epoch.
    result = torchrun(train_script, *common, "--epochs", "3", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]


def test_error_on_ranks_stops_all_with_message(phantom_dir, tmp_path, train_script):
    result = torchrun(train_script, "--data", str(phantom_dir), "--regime", "nope", "--out", str(tmp_path / "r"),
                      "--image-size", "32", "--quiet")
    assert result.returncode != 0
    assert "unknown regime 'nope'" in result.stderr
    assert "threads left" not in result.stderr


def test_ece_never_gathers(monkeypatch):
    """ECE (reports, evaluation: often rank 0 alone) is local: MONAI's all_gather is never reached."""
    import monai.metrics.metric

    from mai_aug.stats.scores import get_metric

    def refuse(*args, **kwargs):
        raise AssertionError("a collective in rank-0-only code: the other ranks may have exited")

    monkeypatch.setattr(monai.metrics.metric, "evenly_divisible_all_gather", refuse)
    y, p = np.array([0, 1, 1, 0, 1.0]), np.array([0.1, 0.8, 0.6, 0.3, 0.4])
    assert get_metric("ece").point(y, p) == pytest.approx(np.abs(p - y).mean())  # one sample per bin here


def test_torchrun_compare_writes_the_report(phantom_dir, tmp_path):
    """compare under torchrun: both ranks train, rank 0 evaluates and reports (the reliability figure's ECE included)
    after rank 1 has exited, so no collective may run there."""
    from mai_aug.data.phantom import PhantomSpec, write_phantom

    data, out = tmp_path / "phantom", tmp_path / "study"
    write_phantom(PhantomSpec(out=data, n=240, size=32, seed=3), workers=1)
    result = torchrun(workflow("compare"), "--data", str(data), "--regimes", "none",
                      "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "2",
                      "--workers", "0", "--bootstrap", "200", "--quiet", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report.md").is_file() and "x 2 processes (DDP)" in (out / "none" / "seed-0" / "train.log").read_text()


@pytest.mark.parametrize("command", ["train", "compare", "evaluate", "robustness", "saliency", "predict", "calibrate"])
def test_every_option_has_a_spelling_torchrun_leaves_alone(command):
    """torchrun's parser takes an abbreviation of its own options (``--run`` of ``--run-path``) after the script too:
    every option of a command that runs under torchrun has a spelling that is no prefix of a torchrun option."""
    import argparse

    from torch.distributed.run import get_args_parser

    from mai_aug.cli import build_parser

    theirs = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        ours = [o for o in action.option_strings if o.startswith("--")]
        if ours and not isinstance(action, argparse._HelpAction):  # --help: torchrun's own, as it should be
            assert any(not any(t.startswith(o) for t in theirs) for o in ours), (command, ours)


def test_torchrun_evaluate_with_run_dir(phantom_dir, tmp_path):
    """``workflows/evaluate.py --run-dir RUN`` under torchrun: rank 0 alone evaluates and writes."""
    datalist = cut_datalist(phantom_dir, tmp_path, training=16, validation=8, test=16)
    run = tmp_path / "run"
    assert main(["train", "--datalist", str(datalist), "--out", str(run), "--image-size", "32", "--batch-size", "4",
                 "--epochs", "1", "--steps-per-epoch", "1", "--workers", "0", "--cache", "none", "--quiet"]) == 0
    result = torchrun(workflow("evaluate"), "--run-dir", str(run), "--bootstrap", "200", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # one rank printed (and wrote) the outputs
    assert (run / "eval" / "test_auc.csv").is_file() and (run / "eval" / "test_predictions.csv").is_file()
