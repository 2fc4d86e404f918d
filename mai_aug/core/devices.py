"""The training device: ``auto`` picks CUDA when present."""

from __future__ import annotations

import torch

from mai_aug.core.errors import MaiAugError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MaiAugError(f"--device {name}: no CUDA GPU is available here (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MaiAugError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


def resolve_amp(amp: bool | None, device: torch.device) -> bool:
    """``--amp`` as a run resolves it: unset means on with CUDA (float16), off on CPU (bfloat16 is opt-in)."""
    return bool(amp) if amp is not None else device.type == "cuda"
