"""Running a planned study: every run (the study's and the learning curve's) as a job, handed to the executor;
each outcome announced as it comes, with the study's elapsed time and ETA."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mai_aug.analyses.base import StudyAnalysis, StudyRuns
from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.settings.config import TrainConfig
from mai_aug.study.executors.base import ExecutorOptions
from mai_aug.study.executors.select import Executor
from mai_aug.study.jobs import JobOutcome, RunJob
from mai_aug.study.run_folders import run_config

if TYPE_CHECKING:
    from mai_aug.study.compare import CompareOptions

#: The path settings of a run that a job on another machine (or in another working folder) must see as absolute.
PATH_SETTINGS = ("out", "datalist", "tensorboard_dir", "cache_dir")


def study_jobs(opts: CompareOptions, runs: list[tuple[str, int]], train_opts: dict, sizes: list[TrainingSize],
               analyses: Sequence[StudyAnalysis], study: StudyRuns) -> list[RunJob]:
    """The study's runs, then each smaller training size's, as jobs; the study's runs bring ``analyses`` (those
    with a per-run step) up to date as well."""
    per_run = tuple(a for a in analyses if a.per_run)
    threads = None if train_opts.get("threads") else opts.executor.cpus_per_run  # --threads (or the preset's) wins
    jobs = [RunJob(StudyLayout.label(regime, seed),
                   _for_executor(run_config(StudyLayout(opts.out).run_dir(regime, seed), regime, seed, train_opts,
                                            opts), opts.executor, threads),
                   study.n_boot, opts.tta, per_run, study) for regime, seed in runs]
    for size in sizes:
        if size.plan is None:  # fraction 1: the study's own runs
            continue
        sub_opts = dataclasses.replace(opts, out=size.folder)
        for regime, seed in runs:
            config = run_config(StudyLayout(size.folder).run_dir(regime, seed), regime, seed, size.train_opts, sub_opts)
            jobs.append(RunJob(f"{size.folder.name}/{StudyLayout.label(regime, seed)}",
                               _for_executor(config, opts.executor, threads), study.n_boot))
    return jobs


def _for_executor(config: TrainConfig, options: ExecutorOptions, threads: int | None) -> TrainConfig:
    """A run's settings as a job elsewhere needs them: absolute paths, no terminal progress (its log keeps it all),
    and ``threads`` torch threads where not None (``--cpus-per-run`` where ``--threads`` was not given). Here
    (local): unchanged."""
    if not options.remote:
        return config
    paths = {k: str(Path(v).absolute()) for k in PATH_SETTINGS if (v := getattr(config, k)) is not None}
    return dataclasses.replace(config, **paths, regimes_file=[str(Path(p).absolute()) for p in config.regimes_file],
                               progress=False, threads=threads or config.threads)


def run_jobs(executor: Executor, jobs: list[RunJob], main: bool) -> list[JobOutcome]:
    """Every job through ``executor``; rank 0 prints each outcome with the elapsed time and the ETA."""
    started, durations, count = time.monotonic(), [], [0]

    def announce(outcome: JobOutcome) -> None:
        count[0] += 1
        if outcome.state in ("trained", "resumed"):
            durations.append(outcome.seconds)
        if main:
            eta = np.mean(durations) * (len(jobs) - count[0]) if durations else 0.0
            print(f"[{count[0]}/{len(jobs)}] {outcome_line(outcome, jobs)}; elapsed {time.monotonic() - started:.0f}s, "
                  f"ETA {eta:.0f}s", file=sys.stderr, flush=True)

    return executor.run(jobs, announce)


def outcome_line(outcome: JobOutcome, jobs: Sequence[RunJob]) -> str:
    """``none/seed-0: trained, test macro AUC 0.612`` or ``none/seed-0: FAILED: why (see LOG)``."""
    if not outcome.done:
        return f"{outcome.label}: FAILED: {outcome.message}" + (f" (see {outcome.logs[0]})" if outcome.logs else "")
    run_dir = next(j.run_dir for j in jobs if j.label == outcome.label)
    macro = pd.read_csv(RunLayout(run_dir).auc("test")).set_index("finding").loc["macro", "auc"]
    return f"{outcome.label}: {outcome.state}, test macro AUC {macro:.3f}"
