"""``--executor ray``: one Ray task per run, on a local Ray instance (this machine's CPUs and GPUs) or a cluster.

Each task reserves ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs (Ray sets the task's visible GPUs, so a
run's ``device: auto`` is its own GPU). A task that dies (its worker killed, out of memory) is reported as that
run's failure; Ray does not retry it (``max_retries=0``): the next ``compare`` resumes it from its checkpoint.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.study.executors.base import Announce, ExecutorOptions, optional_package, run_in_rounds
from mai_aug.study.jobs import JobOutcome, RunJob, record_failure, run_job


class RayExecutor:
    """The runs as Ray tasks, as many at once as the cluster's resources allow."""

    def __init__(self, options: ExecutorOptions) -> None:
        """Joins the cluster (or starts a local instance) now, so that an unreachable ``--ray-address`` or a request
        for more GPUs or CPUs than the cluster has stops the command before the study is planned."""
        self.options = options
        self.ray = optional_package("ray", "ray", "ray")
        self.started_here = self._connect()
        try:
            self.gpus_per_run = self._gpus_per_run()
        except MaiAugError:
            self._disconnect()
            raise

    def run(self, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
        try:
            task = self.ray.remote(num_cpus=self.options.cpus_per_run, num_gpus=self.gpus_per_run,
                                   max_retries=0)(run_job)
            return run_in_rounds(lambda batch, told: self._round(task, batch, told), jobs, announce,
                                 self.options.retry_seconds)
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        """Stop the local instance this executor started (a joined cluster goes on)."""
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False

    def _connect(self) -> bool:
        """Join ``--ray-address`` or start a local instance (unless this process has one); whether it started one."""
        if self.ray.is_initialized():
            return False
        _check_reachable(self.options.ray_address)
        cpus = os.cpu_count() or 1
        if self.options.ray_address is None and self.options.cpus_per_run > cpus:  # before Ray starts and speaks
            raise MaiAugError(f"`cpus_per_run` {self.options.cpus_per_run}: this machine has {cpus} CPUs")
        try:
            self.ray.init(address=self.options.ray_address, include_dashboard=False, log_to_driver=False,
                          configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise MaiAugError(f"`ray_address` {self.options.ray_address}: cannot join the Ray cluster "
                              f"({first_line(e)})") from None
        return True

    def _gpus_per_run(self) -> float:
        """``--gpus-per-run``, else 1 where the cluster has GPUs and 0 where it has none; checked against it."""
        available = float(self.ray.cluster_resources().get("GPU", 0))
        gpus = self.options.gpus_per_run if self.options.gpus_per_run is not None else (1.0 if available else 0.0)
        if gpus > available:
            raise MaiAugError(f"`gpus_per_run` {gpus:g}: the Ray cluster has {available:g} GPUs")
        cpus = float(self.ray.cluster_resources().get("CPU", 0))
        if self.options.cpus_per_run > cpus:
            raise MaiAugError(f"`cpus_per_run` {self.options.cpus_per_run}: the Ray cluster has {cpus:g} CPUs")
        return gpus

    def _round(self, task: Any, jobs: Sequence[RunJob], announce: Announce) -> list[JobOutcome]:
        """Submit every job, hear each as it finishes; a task that died is its run's failure."""
        pending = {task.remote(job): job for job in jobs}
        outcomes = []
        while pending:
            (ref,), _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:  # the worker died: killed, out of memory, its node lost
                outcome = record_failure(job, f"Ray task failed: {type(e).__name__}: {first_line(e)}", str(e))
            announce(outcome)
            outcomes.append(outcome)
        return outcomes


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing answers, within seconds: ``ray.init`` itself
    retries an unreachable address for over ten minutes, printing warnings, before it gives up."""
    if address in (None, "auto"):
        return  # a local instance, or the cluster this machine runs: ray.init answers at once
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except ValueError:
        raise MaiAugError(f"`ray_address` {address}: expected auto or HOST:PORT") from None
    except OSError as e:
        raise MaiAugError(f"`ray_address` {address}: cannot join the Ray cluster (nothing answers at "
                          f"{host}:{port}: {e.strerror or e})") from None
