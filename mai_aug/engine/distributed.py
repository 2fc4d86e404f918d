"""torchrun / DistributedDataParallel support: process group, device per rank, shards and gathers.

Under ``torchrun --nproc_per_node=N`` every rank runs the same command; rank 0 alone writes logs, TensorBoard,
checkpoints and reports. Without torchrun (``WORLD_SIZE`` unset) everything here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mai_aug.core.errors import MaiAugError


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's disjoint share (every ``world_size``-th item), without padding duplicates.

        The same partition as MONAI's ``DistributedSampler(even_divisible=False, shuffle=False)``: each rank then
        caches only its own images.
        """
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def current() -> DistContext:
    """The context of this process, from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


#: How long a rank waits at a barrier for the others. The other ranks wait there while rank 0 alone evaluates a run
#: and brings its analyses up to date (a full NIH test split with a shift sweep is an hour or more on one GPU), far
#: past torch's default of 10 minutes for NCCL.
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


def init(device_type: str) -> DistContext:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) if there is one; return the context."""
    ctx = current()
    if ctx.enabled and not dist.is_initialized():
        if device_type == "cuda":
            if torch.cuda.device_count() <= ctx.local_rank:
                raise MaiAugError(f"LOCAL_RANK {ctx.local_rank}: only {torch.cuda.device_count()} CUDA device(s) here")
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return ctx


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per process: ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (ranks may hold different numbers of rows) on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = tensor.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(n.item())] for o, n in zip(out, sizes)]).to(tensor.device)


def check_same_everywhere(value: float, what: str) -> None:
    """Fail on every rank if ranks disagree (for example on a config-derived number of steps)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    t = torch.tensor([value], dtype=torch.float64)
    lo, hi = t.clone(), t.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise MaiAugError(f"ranks disagree on {what}: {lo.item()} vs {hi.item()}")
