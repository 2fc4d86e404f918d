"""A trained run exported as a MONAI bundle (``mai-aug export-bundle``)."""
