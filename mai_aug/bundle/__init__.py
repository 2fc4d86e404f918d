"""A trained run exported as a MONAI bundle (``mai-aug export-bundle``)."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "export_bundle": "export", "model_card": "card", "inference_config": "inference",
})
