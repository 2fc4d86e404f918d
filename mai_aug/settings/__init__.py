"""Settings: the training configuration, settings files and layers, presets, run fingerprints."""
