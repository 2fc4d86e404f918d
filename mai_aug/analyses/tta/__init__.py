"""Test-time augmentation: predictions averaged over the regime's random part, and its study section."""
