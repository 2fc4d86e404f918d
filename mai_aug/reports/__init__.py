"""Reports out: previews, ROC figures, AUC tables and comparison summaries."""
