"""torchrun with two CPU processes (gloo): sharded training, gathered metrics, one set of outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

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
