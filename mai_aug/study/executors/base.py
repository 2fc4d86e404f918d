"""What every executor shares: its options, the missing-package line, and running jobs in rounds until none is
locked by another process."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from mai_aug.core.errors import MaiAugError
from mai_aug.study.jobs import LOCKED, JobOutcome, RunJob

#: How long an executor waits before retrying runs that another process holds.
LOCKED_RETRY_SECONDS = 10.0

Announce = Callable[[JobOutcome], None]
RunRound = Callable[[Sequence[RunJob], Announce], list[JobOutcome]]


@dataclass(frozen=True)
class ExecutorOptions:
    """``compare``'s ``--executor`` and the options of the executor it names (None: the executor's default)."""

    kind: str = "local"
    cpus_per_run: int = 1  # Ray: CPUs reserved per run (and the run's torch threads unless --threads is given)
    gpus_per_run: float | None = None  # Ray: GPUs per run, fractions allowed; None: 1 where the cluster has GPUs
    ray_address: str | None = None  # Ray: join this cluster (auto, HOST:PORT); None: a local instance
    slurm_partition: str | None = None
    slurm_time: int = 240  # minutes per job
    slurm_gpus_per_run: int = 1
    slurm_array_parallelism: int = 64
    slurm_args: list[str] = field(default_factory=list)  # more sbatch options, each KEY=VALUE (--slurm-args)
    slurm_cluster: str = "slurm"  # submitit's cluster: slurm, or local (its local executor: tests, one machine)
    retry_seconds: float = LOCKED_RETRY_SECONDS

    @property
    def remote(self) -> bool:
        """Whether runs go to other processes (Ray workers, SLURM jobs) rather than run in this one."""
        return self.kind != "local"


def optional_package(name: str, extra: str, executor: str) -> ModuleType:
    """Import ``name`` or stop with one line saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MaiAugError(f"`executor` {executor} needs the package {name!r}: pip install -e \".[{extra}]\" (or pip "
                          f"install {name})") from None


def run_in_rounds(run_round: RunRound, jobs: Sequence[RunJob], announce: Announce,
                  retry_seconds: float = LOCKED_RETRY_SECONDS) -> list[JobOutcome]:
    """Run ``jobs`` a round at a time; a run another process holds is left for the next round (after the others,
    and after ``retry_seconds``), so a second study on the same folder goes on with the free runs.

    Returns every job's outcome, in ``jobs``' order; ``announce`` hears each as it comes (locked ones only once).
    """
    outcomes: dict[str, JobOutcome] = {}
    pending, told = list(jobs), set()
    while pending:
        locked: list[RunJob] = []

        def settle(outcome: JobOutcome) -> None:
            if outcome.state != LOCKED:
                outcomes[outcome.label] = outcome
                announce(outcome)
            elif outcome.label not in told:
                told.add(outcome.label)
                print(f"{outcome.label}: locked by another process; going on, back to it later", file=sys.stderr,
                      flush=True)

        for outcome in run_round(pending, settle):
            if outcome.state == LOCKED:
                locked.append(next(j for j in pending if j.label == outcome.label))
        if locked:
            time.sleep(retry_seconds)
        pending = locked
    return [outcomes[j.label] for j in jobs]
