"""Calibration: per-finding Platt or temperature maps fitted on a run's validation split, applied where it predicts."""
