"""``--executor local``: the runs one after another in this process (on its device, or every torchrun rank)."""

from __future__ import annotations

from collections.abc import Sequence

from mai_aug.study.executors.base import Announce, ExecutorOptions, run_in_rounds
from mai_aug.study.jobs import JobOutcome, RunJob, run_job


class LocalExecutor:
    """Each job in turn, here; a run another process holds is tried again after the others."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def run(self, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
        return run_in_rounds(_one_by_one, jobs, announce, self.options.retry_seconds)


def _one_by_one(jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
    outcomes = []
    for job in jobs:
        outcome = run_job(job)
        announce(outcome)
        outcomes.append(outcome)
    return outcomes
