"""Bottom layer: errors, names, limits, atomic files, user YAML, trust, run-folder layout, locks, logs, devices."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "MaiAugError": "errors", "first_line": "errors", "atomic_write": "files", "write_text_atomic": "files",
    "write_csv_atomic": "files", "raise_on_signals": "interrupts", "Interrupted": "interrupts",
    "RunLayout": "layout", "StudyLayout": "layout", "cache_root": "layout", "RunLock": "locks", "RunLog": "logs",
    "Progress": "progress", "require_writable_folder": "preflight", "require_free_space": "preflight",
    "resolve_device": "devices", "use_threads": "threads", "trusted_configs": "trust",
    "read_user_yaml": "user_yaml",
})
