"""Reports out: pure rendering of tables and figures (ROC, reliability, AUC tables, previews)."""
