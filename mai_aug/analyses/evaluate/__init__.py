"""Evaluate: a trained run's AUC with patient-bootstrap intervals, ROC, predictions; predict on files."""
