"""Bottom layer: errors, names, limits, atomic files, user YAML, trust, run-folder layout, locks, logs, devices."""
