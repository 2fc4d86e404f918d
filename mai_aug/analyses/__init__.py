"""Per-run analyses of a trained run and their study sections: evaluate, TTA, robustness, saliency, learning curves."""
