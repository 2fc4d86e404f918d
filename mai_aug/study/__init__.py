"""The study: plan every regime and seed, run them, and assemble the comparison's report."""
