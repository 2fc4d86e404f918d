"""Statistics: per-finding scores, patient bootstraps, paired differences across regimes and seeds."""
