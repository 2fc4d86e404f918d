"""Images/s of the batched augmentation stage alone: cached uint8 batches already on the device -> augmented float.

    python benchmarks/stage_throughput.py [--regime complex] [--size 320] [--batch-sizes 8 64 256] [--device auto]
        [--steps 20]

What ``--augment-on device`` costs per training step, without the loader and the network: the figure to hold
against the network's training images/s (``benchmarks/train_throughput.py``). Two warm-up calls are left out; on
CUDA each timing waits for the device to finish.
"""

from __future__ import annotations

import argparse
import time

import torch

from mai_aug.core.devices import resolve_device
from mai_aug.transforms.batched import compile_regime
from mai_aug.transforms.regimes import load_regime


def rate(regime_name: str, size: int, batch_size: int, steps: int, device: torch.device) -> float:
    """Augmented images/s of ``regime_name`` at ``size`` px in batches of ``batch_size`` on ``device``."""
    stage = compile_regime(load_regime(regime_name, size))
    if isinstance(stage, str):
        raise SystemExit(f"regime {regime_name!r} cannot run batched: {stage}")
    images = torch.randint(0, 256, (batch_size, 1, size, size), dtype=torch.uint8, device=device)
    times = []
    for i in range(steps + 2):
        stage(images, 1, i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return batch_size * steps / (times[-1] - times[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", default="complex")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64, 256])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"batched stage, regime {args.regime}, {args.size} px, on {device} ({name})")
    for batch_size in args.batch_sizes:
        print(f"batch {batch_size}: {rate(args.regime, args.size, batch_size, args.steps, device):.0f} augmented images/s",
              flush=True)


if __name__ == "__main__":
    main()
