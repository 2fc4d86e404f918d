"""Per-run analyses of a trained run and their study sections: evaluate, TTA, robustness, saliency, learning curves."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "TrainedRun": "trained_run", "StudyAnalysis": "base", "Section": "base", "load_predictions": "outputs",
    "read_paired": "outputs",
})
