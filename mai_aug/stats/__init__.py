"""Statistics: per-finding scores, patient bootstraps, paired differences across regimes and seeds, planning."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "per_finding_auc": "auc", "macro_auc": "auc", "grouped_auc": "auc", "score_regimes": "paired",
    "summary_table": "paired", "StudyScores": "paired", "side_by_side": "seeds", "plan_table": "planning",
    "resolve_metrics": "scores", "Metric": "scores", "hit_rate_table": "pointing",
})
