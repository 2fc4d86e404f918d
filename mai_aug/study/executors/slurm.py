"""``--executor slurm``: the runs as one SLURM job array through submitit, logs under ``OUT/slurm/``.

Each array task runs one run's job (:func:`mai_aug.study.jobs.run_job`) with ``--slurm-gpus-per-run`` GPUs and
``--cpus-per-run`` CPUs for ``--slurm-time`` minutes. A task that ends without an answer (the time limit, a node
lost, killed) is that run's failure, with its log named; the next ``compare`` resumes the run from its last
checkpoint. ``--slurm-cluster local`` runs the same array with submitit's local executor (every task at once, as
subprocesses of this machine): how the tests run it, and a way to use one workstation's GPUs.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.study.executors.base import Announce, ExecutorOptions, optional_package, run_in_rounds
from mai_aug.study.jobs import JobOutcome, RunJob, record_failure, run_job

#: How often the submitting process looks at its jobs' states.
POLL_SECONDS = 5.0


class SlurmExecutor:
    """The runs as a submitit job array on SLURM (or submitit's local executor)."""

    def __init__(self, options: ExecutorOptions, folder: Path) -> None:
        self.options, self.folder = options, Path(folder)
        self.submitit = optional_package("submitit", "slurm", "slurm")
        if options.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise MaiAugError("`executor` slurm: no sbatch on this machine (not a SLURM login node); "
                              "`slurm_cluster` local runs the array with submitit's local executor")
        self.extra = _sbatch_options(options.slurm_args)

    def run(self, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
        return run_in_rounds(self._round, jobs, announce, self.options.retry_seconds)

    def _executor(self) -> Any:
        """submitit's executor for one array, its parameters from the options."""
        executor = self.submitit.AutoExecutor(folder=self.folder, cluster=self.options.slurm_cluster)
        params: dict[str, Any] = {"timeout_min": self.options.slurm_time, "nodes": 1, "tasks_per_node": 1,
                                  "gpus_per_node": self.options.slurm_gpus_per_run,
                                  "cpus_per_task": self.options.cpus_per_run,
                                  "slurm_array_parallelism": self.options.slurm_array_parallelism,
                                  "name": "mai-aug"}
        if self.options.slurm_partition:
            params["slurm_partition"] = self.options.slurm_partition
        if self.extra:
            params["slurm_additional_parameters"] = self.extra
        executor.update_parameters(**params)
        return executor

    def _round(self, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
        """Submit ``jobs`` as one array and hear each task as it ends."""
        submitted = self._executor().map_array(run_job, list(jobs))
        print(f"submitted {len(submitted)} runs as {self.options.slurm_cluster} job(s) {submitted[0].job_id.split('_')[0]}"
              f"...; logs under {self.folder}", file=sys.stderr, flush=True)
        pending = dict(zip(submitted, jobs))
        outcomes = []
        while pending:
            for task in [t for t in pending if t.done()]:
                outcome = _outcome(task, pending.pop(task))
                announce(outcome)
                outcomes.append(outcome)
            if pending:
                time.sleep(POLL_SECONDS)
        return outcomes


def _outcome(task: Any, job: RunJob) -> JobOutcome:
    """The task's own outcome, or (it ended without one) the run's failure naming the task's state and log."""
    error = task.exception()
    if error is None:
        return task.result()
    logs = tuple(str(p) for p in (task.paths.stderr, task.paths.stdout))
    state = getattr(task, "state", "UNKNOWN")
    return record_failure(job, f"SLURM job {task.job_id} ended ({state}): {first_line(error)}", str(error), logs)


def _sbatch_options(pairs: Sequence[str]) -> dict[str, str]:
    """``--slurm-args KEY=VALUE ...`` as sbatch options (``qos=high`` -> ``#SBATCH --qos=high``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MaiAugError(f"`slurm_args` {pair!r}: expected KEY=VALUE (an sbatch option without its --)")
        options[key.strip().lstrip("-")] = value
    return options
