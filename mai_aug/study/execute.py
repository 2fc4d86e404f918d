"""Running a planned study: train (or resume) and evaluate every run in order, then the learning curve's runs."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.analyses.evaluate.run import evaluate_run
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.data.subsets import fraction_label
from mai_aug.engine import distributed
from mai_aug.engine.train import train
from mai_aug.settings.config import TrainConfig
from mai_aug.study.run_folders import run_config

if TYPE_CHECKING:
    from mai_aug.study.compare import CompareOptions


def run_all(opts: CompareOptions, runs: list[tuple[str, int]], plan: dict, train_opts: dict, n_boot: int,
            ctx: distributed.DistContext) -> None:
    """Train and evaluate every planned run in order; rank 0 prints each one's test macro AUC, elapsed time and ETA."""
    started, durations = time.monotonic(), []
    for i, (regime, seed) in enumerate(runs, 1):
        run_dir = StudyLayout(opts.out).run_dir(regime, seed)
        t0 = time.monotonic()
        state = train_and_evaluate(run_dir, run_config(run_dir, regime, seed, train_opts, opts),
                                    plan["runs"][(regime, seed)], opts.device, n_boot, ctx.is_main, opts.tta)
        ctx.barrier()
        if not ctx.is_main:
            continue
        if state != "skipped":
            durations.append(time.monotonic() - t0)
        macro = pd.read_csv(RunLayout(run_dir).auc("test")).set_index("finding").loc["macro", "auc"]
        eta = np.mean(durations) * (len(runs) - i) if durations else 0.0
        print(f"[{i}/{len(runs)}] {regime} seed {seed}: {state}, test macro AUC {macro:.3f}; "
              f"elapsed {time.monotonic() - started:.0f}s, ETA {eta:.0f}s", file=sys.stderr, flush=True)


def curve_runs(sizes: list[TrainingSize], runs: list[tuple[str, int]], opts: CompareOptions, n_boot: int,
               ctx: distributed.DistContext) -> None:
    """Train (unless finished) and evaluate on the test split every run of each training size below 1."""
    for size in sizes:
        if size.plan is None:
            continue
        sub_opts = dataclasses.replace(opts, out=size.folder)
        for regime, seed in runs:
            run_dir = StudyLayout(size.folder).run_dir(regime, seed)
            config = run_config(run_dir, regime, seed, size.train_opts, sub_opts)
            state = train_and_evaluate(run_dir, config, size.plan["runs"][(regime, seed)], opts.device, n_boot,
                                        ctx.is_main)
            ctx.barrier()
            if ctx.is_main:
                print(f"fraction {fraction_label(size.fraction)} ({size.n_patients} patients): {regime} seed {seed}: "
                      f"{state}", file=sys.stderr, flush=True)


def train_and_evaluate(run_dir: Path, config: TrainConfig, status: str, device: str, n_boot: int,
                       main: bool = True, tta: int = 0) -> str:
    """Train (or resume) one run unless finished, then evaluate it on the test split (with ``tta`` draws of
    test-time augmentation where not 0); returns what happened."""
    finished = status == "finished"
    # reused only where eval/test_meta.json says they came from best.pt as it is now (not `evaluate --checkpoint last`)
    if finished and evaluated_with(run_dir, "test", RunLayout(run_dir).best, tta):
        return "skipped"
    if not finished:
        train(config, split_on_console=False)  # compare printed the split table once, before its runs
    if main:
        evaluate_run(run_dir, "test", "best", device, n_boot=n_boot, tta=tta)
    return "evaluated" if finished else "resumed" if config.resume else "trained"
