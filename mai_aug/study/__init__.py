"""The study: presets, the phantom cache, planning and running every regime and seed, the report."""
