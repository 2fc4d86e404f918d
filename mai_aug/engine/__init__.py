"""Engine: the training core (MONAI SupervisedTrainer/Evaluator, handlers, loss, metrics, checkpoints, precision, DDP)."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "check_trainable": "train", "WeightedBCEWithLogits": "loss", "PerFindingAUC": "metrics",
    "make_evaluator": "inference", "predict_probabilities": "inference", "TrainingStream": "stream",
    "CheckpointWriter": "checkpoint", "load_checkpoint": "checkpoint", "DistContext": "distributed",
})
