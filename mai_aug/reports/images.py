"""Turning network-input tensors back into viewable 8-bit pictures, orientation untouched."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(1, H, W) or (H, W) image -> (H, W) uint8, min-max rescaled; rows and columns as given (no transpose)."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    a = a.astype(np.float32)
    if a.ndim == 3:
        a = a[0]
    lo, hi = float(a.min()), float(a.max())
    return np.round((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).astype(np.uint8)
