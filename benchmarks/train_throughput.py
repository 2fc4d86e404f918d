"""Training images/s of DenseNet121 on MONAI's SupervisedTrainer at a few sizes (CPU or CUDA with AMP).

    python benchmarks/train_throughput.py [--sizes 64 320] [--batch-size 8] [--steps 10] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.networks.nets import DenseNet121

from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.engine.runtime import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 320])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    amp = device.type == "cuda"
    for size in args.sizes:
        batch = {"image": torch.rand(args.batch_size, 1, size, size), "label": (torch.rand(args.batch_size, 14) < 0.1).float()}
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).to(device)
        trainer = SupervisedTrainer(device=device, max_epochs=1, train_data_loader=[batch] * (args.steps + 2), network=net,
                                    optimizer=torch.optim.Adam(net.parameters(), 1e-4), loss_function=WeightedBCEWithLogits(),
                                    amp=amp, decollate=False)
        times: list[float] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, t=times: t.append(time.perf_counter()))
        trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = args.batch_size * (len(times) - 2) / (times[-1] - times[1])  # two warm-up steps left out
        print(f"{device.type}{' + AMP' if amp else ''} {size} px, batch {args.batch_size}: {rate:.1f} training images/s")


if __name__ == "__main__":
    main()
