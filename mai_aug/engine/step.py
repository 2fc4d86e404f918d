"""How the training step runs on its device: memory format, Adam's kernel, torch.compile.

Resolved per device like ``amp`` (:func:`mai_aug.core.devices.resolve_step`): unset means the faster choice measured
on that device (``benchmarks/train_throughput.py``, BENCHMARKS.md), so the fingerprint records what a run used.
``channels_last`` and the fused Adam change the order of floating-point sums, so a run trained with them differs from
one without in the last bits (each is deterministic for itself under ``set_determinism``). ``compile`` compiles the
network in place (``nn.Module.compile``: the state dict keeps its keys); training batches have one shape
(``drop_last``), validation's last partial batch compiles once more, not once per batch.
"""

from __future__ import annotations

from typing import Any

import torch

from mai_aug.core.devices import StepOptions


def prepare_network(net: torch.nn.Module, step: StepOptions) -> torch.nn.Module:
    """``net`` (on its device) in channels_last and compiled in place, as ``step`` says."""
    if step.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if step.compile != "off":
        net.compile(mode=None if step.compile == "default" else step.compile, dynamic=False)
    return net


def make_adam(params: Any, lr: float, weight_decay: float, step: StepOptions) -> torch.optim.Adam:
    """Adam with its fused kernel where ``step`` asks for it (one kernel for every parameter's update)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if step.fused_adam else {}))
