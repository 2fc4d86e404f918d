"""Transforms: the augmentation regimes as MONAI dictionary transforms, loaded from YAML."""

from mai_aug.transforms.regimes import Regime, available_regimes, load_regime

__all__ = ["Regime", "available_regimes", "load_regime"]
