"""Learning curves: nested training fractions, and their study section."""
