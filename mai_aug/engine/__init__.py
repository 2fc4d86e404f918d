"""Engine: DenseNet121, the weighted loss, per-finding AUC, and MONAI's SupervisedTrainer/Evaluator."""
