"""The training device: ``auto`` picks CUDA when present."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mai_aug.core.errors import MaiAugError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MaiAugError(f"`device` {name}: no CUDA GPU is available here (use `device` auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MaiAugError(f"`device` {name}: expected auto, cpu or cuda")
    return torch.device(name)


def resolve_amp(amp: bool | None, device: torch.device) -> bool:
    """``--amp`` as a run resolves it: unset means on with CUDA (float16), off on CPU (bfloat16 is opt-in)."""
    return bool(amp) if amp is not None else device.type == "cuda"


@dataclass(frozen=True)
class StepOptions:
    """The training step's options as resolved for one device."""

    channels_last: bool
    fused_adam: bool
    compile: str = "off"

    def as_settings(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last, "fused_adam": self.fused_adam, "compile": self.compile}


def resolve_step(channels_last: bool | None, fused_adam: bool | None, compile_mode: str,
                 device: torch.device) -> StepOptions:
    """Unset ``channels_last`` and ``fused_adam``: on with CUDA, off on CPU (where neither was faster at 64 px)."""
    on_cuda = device.type == "cuda"
    return StepOptions(on_cuda if channels_last is None else bool(channels_last),
                       on_cuda if fused_adam is None else bool(fused_adam), compile_mode)
