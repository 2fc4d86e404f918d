"""The executor ``--executor`` names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mai_aug.core.layout import StudyLayout
from mai_aug.study.executors.base import Announce, ExecutorOptions
from mai_aug.study.jobs import JobOutcome, RunJob


class Executor(Protocol):
    """Runs jobs; returns every job's outcome in the jobs' order, announcing each as it comes."""

    def run(self, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]: ...


def make_executor(options: ExecutorOptions, study: StudyLayout) -> Executor:
    """The executor ``options.kind`` names, its optional package checked now (before anything trains)."""
    if options.kind == "ray":
        from mai_aug.study.executors.ray import RayExecutor

        return RayExecutor(options)
    if options.kind == "slurm":
        from mai_aug.study.executors.slurm import SlurmExecutor

        return SlurmExecutor(options, study.slurm)
    from mai_aug.study.executors.local import LocalExecutor

    return LocalExecutor(options)
