"""The study: plan every regime and seed, run them, and assemble the comparison's report."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "CompareOptions": "compare", "run_compare": "compare", "plan_study": "plan", "write_report": "report",
    "ensure_phantom": "phantom_cache",
})
