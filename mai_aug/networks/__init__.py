"""Networks: the families training supports, their specs, building and pretrained weights."""

from mai_aug.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "build_network": "build", "read_pretrained": "build", "NetworkSpec": "spec", "resolve_network": "spec",
    "stored_network": "spec",
})
