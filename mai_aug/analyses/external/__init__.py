"""External test sets: a run scored on another dataset (``evaluate --external``, ``compare --external``)."""
