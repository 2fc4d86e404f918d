"""mai_aug: a MONAI workflow for studying data augmentation in chest X-ray classification."""

from mai_aug.core.errors import MaiAugError

__version__ = "0.1.0"
__all__ = ["MaiAugError", "__version__"]
