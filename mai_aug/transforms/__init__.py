"""Transforms: the augmentation regimes as MONAI dictionary transforms, loaded from YAML, and their batched stage."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "Regime": "regimes", "available_regimes": "regimes", "load_regime": "regimes", "BatchedStage": "batched",
    "choose_stage": "batched", "ToUint8d": "intensity",
})
