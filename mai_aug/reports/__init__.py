"""Reports out: pure rendering of tables and figures (ROC, reliability, AUC tables, previews)."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "roc_figure": "roc", "reliability_figure": "reliability", "auc_plot": "compare", "markdown_table": "compare",
    "write_tables": "export", "write_preview": "preview", "methods_paragraph": "methods",
    "findings_section": "findings",
})
