"""Executors: where a study's runs go (this process, Ray tasks, a SLURM job array), chosen by ``--executor``."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "ExecutorOptions": "base", "run_in_rounds": "base", "Executor": "select", "make_executor": "select",
    "LocalExecutor": "local", "RayExecutor": "ray", "SlurmExecutor": "slurm",
})
