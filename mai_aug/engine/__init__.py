"""Engine: the training core (MONAI SupervisedTrainer/Evaluator, handlers, loss, metrics, checkpoints, precision, DDP)."""
