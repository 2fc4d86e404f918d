"""Settings: the one schema of every setting, its flags, settings files and layers, presets, run fingerprints."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Field": "schema", "FIELDS": "schema", "BY_NAME": "schema", "TrainConfig": "config", "read_config": "config",
    "write_config": "config", "build_train_config": "layers", "read_settings": "layers", "load_preset": "presets",
    "check_preset": "presets", "run_status": "fingerprint",
    "add_train_flags": "flags", "add_setting_flags": "flags",
})
