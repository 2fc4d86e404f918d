"""Robustness: test AUC under graded test-time shifts, and its study section."""
