"""Mixed precision as a run trained with it: float16 autocast on CUDA, bfloat16 autocast on CPU.

MONAI's engines (``amp=True``) hard-code ``torch.autocast("cuda")`` and a CUDA ``GradScaler``, so on CPU they would
run in float32. On CPU the network's forward runs instead inside :class:`AutocastInferer` (the engines call their
``inferer`` for the forward pass): only the forward sees autocast, as under MONAI's CUDA AMP, so the batched
augmentation stage (in ``prepare_batch``) and the loss stay float32; bfloat16 keeps float32's exponent range and
needs no ``GradScaler``. A wrapper module would change the state-dict keys; running ``engine.run()`` inside
``torch.autocast`` would put the augmentation stage and the metrics under autocast too.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import SimpleInferer

CPU_DTYPE = torch.bfloat16


class AutocastInferer(SimpleInferer):
    """MONAI's SimpleInferer with the forward under ``torch.autocast``; logits returned as float32.

    The float32 logits are what the loss sees under MONAI's CUDA AMP (its BCE-with-logits autocasts to float32).
    """

    def __init__(self, device_type: str = "cpu", dtype: torch.dtype = CPU_DTYPE) -> None:
        super().__init__()
        self.device_type, self.dtype = device_type, dtype

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = network(inputs, *args, **kwargs)
        return out.float()


def engine_precision(device: torch.device, amp: bool, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Keyword arguments for a MONAI engine: ``amp`` (and ``amp_kwargs``) on CUDA, an autocast inferer on CPU.

    Args:
        device: where the engine runs.
        amp: the run's resolved ``amp``.
        dtype: the autocast dtype (default: float16 on CUDA, bfloat16 on CPU).
    """
    if not amp:
        return {"amp": False}
    if device.type == "cuda":
        return {"amp": True, "amp_kwargs": {"dtype": dtype} if dtype is not None else None}
    return {"amp": False, "inferer": AutocastInferer(device.type, dtype or CPU_DTYPE)}


def trained_dtype(raw: dict) -> torch.dtype | None:
    """The autocast dtype a run trained with (None: float32), from its ``config.yaml``.

    A run without a resolved device or ``amp`` predates both: it is taken as trained on CUDA with ``--amp`` unset.
    """
    resolved = raw.get("resolved") or {}
    amp = resolved.get("amp", raw.get("amp"))
    device = str(resolved.get("device", "cuda"))
    on_cuda = device.startswith("cuda")
    if not (on_cuda if amp is None else bool(amp)):
        return None
    return torch.float16 if on_cuda else CPU_DTYPE


def inference_dtype(trained: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for inference on ``device``: the trained one, except float16 on CPU (float32 there)."""
    if trained == torch.float16 and device.type != "cuda":
        return None
    return trained
