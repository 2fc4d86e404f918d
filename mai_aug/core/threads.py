"""The CPU cores a process may use, and torch's thread count (``--threads``)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the system has one, else every core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """``--threads``'s default: ``OMP_NUM_THREADS`` where it is set (a positive integer, as torch itself honours it),
    else the cores available, shared among torchrun's processes on this node."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:  # a scheduler's or a parallel test runner's share of the cores
        return min(int(omp), available_cores())
    local_processes = os.environ.get("LOCAL_WORLD_SIZE", "1")
    share = int(local_processes) if local_processes.isdigit() and int(local_processes) > 0 else 1
    return max(1, available_cores() // share)


def use_threads(threads: int) -> None:
    """Let torch's CPU operations use ``threads`` threads (intra-op), from now on in this process."""
    import torch  # here: the command line reads the default without importing torch

    torch.set_num_threads(int(threads))
