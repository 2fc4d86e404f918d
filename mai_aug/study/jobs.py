"""A study's runs as jobs: one job trains (or resumes) a run, evaluates it and brings its analyses up to date.

A job is plain data (picklable), so any executor can run it: in this process, as a Ray task or as a SLURM array
task (:mod:`mai_aug.study.executors`). A job writes only into its own run folder and holds the run's lock while
it works; a run locked by another process comes back as ``locked`` for the executor to retry later, and a job that
fails records why in ``RUN/job_failure.json`` and returns ``failed`` instead of stopping the study.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from mai_aug.analyses.base import StudyAnalysis, StudyRuns
from mai_aug.analyses.evaluate.run import evaluate_run
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.core.errors import first_line, wrapped_message
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.locks import RunLock, RunLocked
from mai_aug.engine import distributed
from mai_aug.engine.train import train
from mai_aug.settings.config import TrainConfig

#: What a job did: trained, resumed, evaluated (already trained), skipped (already evaluated); or could not.
DONE_STATES = ("trained", "resumed", "evaluated", "skipped")
LOCKED, FAILED = "locked", "failed"


@dataclass(frozen=True)
class RunJob:
    """One run of a study (``label``: ``none/seed-0``, or ``fraction-0.5/none/seed-0`` for a learning curve's)."""

    label: str
    config: TrainConfig
    n_boot: int
    tta: int = 0
    analyses: tuple[StudyAnalysis, ...] = ()  # brought up to date for this run once it is evaluated
    study: StudyRuns | None = None  # what the analyses read of the study (its folder, findings, device)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def regime(self) -> str:
        return self.config.regime

    @property
    def seed(self) -> int:
        return self.config.seed


@dataclass(frozen=True)
class JobOutcome:
    """What became of a job: a state of :data:`DONE_STATES`, ``locked`` or ``failed`` (with why and where to look)."""

    label: str
    state: str
    message: str = ""
    logs: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


def run_job(job: RunJob) -> JobOutcome:
    """Run ``job`` under its run's lock; any error but an interrupt becomes a ``failed`` outcome."""
    started, layout = time.monotonic(), RunLayout(job.run_dir)
    ctx = distributed.current()
    try:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(layout.lock, enabled=ctx.is_main):
            state = _work(job, ctx)
            if ctx.is_main:
                layout.job_failure.unlink(missing_ok=True)
    except RunLocked as e:
        if ctx.enabled:  # rank 0 alone takes the lock: the ranks cannot go on to another run together
            raise
        return JobOutcome(job.label, LOCKED, str(e))
    except Exception as e:  # noqa: BLE001 - one run's failure (a bug, an OOM) must not stop the study's others
        if ctx.enabled:  # under torchrun every rank must stop alike, not wait at the next barrier
            raise
        return record_failure(job, wrapped_message(e) or f"{type(e).__name__}: {first_line(e)}",
                              traceback.format_exc())
    return JobOutcome(job.label, state, seconds=time.monotonic() - started)


def _work(job: RunJob, ctx: distributed.DistContext) -> str:
    """Train unless finished, evaluate on the test split, update the analyses; what happened (a done state)."""
    layout = RunLayout(job.run_dir)
    finished = layout.done.is_file()  # read under the lock: another process may have finished it since the plan
    # reused only where eval/test_meta.json says they came from best.pt as it is now (not `evaluate --checkpoint last`)
    evaluated = finished and evaluated_with(job.run_dir, "test", layout.best, job.tta)
    if not finished:
        resume = layout.config.is_file()
        train(dataclasses.replace(job.config, resume=resume), split_on_console=False)  # the study printed the split
    if ctx.is_main and not evaluated:
        evaluate_run(job.run_dir, "test", "best", job.config.device, n_boot=job.n_boot, tta=job.tta)
    if ctx.is_main:
        for analysis in job.analyses:
            if not analysis.is_current(job.run_dir, job.study):
                print(f"{analysis.name} of {job.label}", file=sys.stderr, flush=True)
                analysis.run(job.run_dir, job.study)
    ctx.barrier()
    return ("skipped" if evaluated else "evaluated") if finished else ("resumed" if resume else "trained")


def record_failure(job: RunJob, message: str, details: str = "", logs: tuple[str, ...] = ()) -> JobOutcome:
    """Write ``RUN/job_failure.json`` (what failed, when, the traceback or the executor's account, the logs to
    read) and return the ``failed`` outcome naming them."""
    layout = RunLayout(job.run_dir)
    logs = (*logs, *(str(p) for p in (layout.log, layout.eval_log) if p.is_file()))
    record = {"run": job.label, "message": message, "logs": list(logs), "details": details,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(layout.job_failure, json.dumps(record, indent=1))
        logs = (str(layout.job_failure), *logs)
    except OSError:
        pass  # the folder itself is unwritable: the outcome still says why the run failed
    return JobOutcome(job.label, FAILED, message, logs)


def read_failure(run_dir: Path) -> dict | None:
    """The run's ``job_failure.json``, or None (no failed job, or an unreadable record)."""
    try:
        record = json.loads(RunLayout(run_dir).job_failure.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None

