"""Training images/s of DenseNet121 on MONAI's SupervisedTrainer, per speed option, at a few sizes.

    python benchmarks/train_throughput.py [--sizes 64 320] [--batch-size 8] [--steps 10] [--device auto]
        [--options plain channels_last amp channels_last+amp]

Options: ``plain`` (float32, contiguous), ``channels_last`` (network and batches in NHWC), ``amp`` (autocast:
float16 on CUDA, bfloat16 on CPU), and their combination; on CUDA ``cudnn.benchmark`` is on for all of them.
Batches are synthetic tensors already on the device (the network's cost alone); two warm-up steps are left out.
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

OPTIONS = ("plain", "channels_last", "amp", "channels_last+amp")


def rate(device: torch.device, size: int, batch_size: int, steps: int, option: str) -> float:
    """Training images/s of one option at one size."""
    channels_last, amp = "channels_last" in option, "amp" in option
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    image = torch.rand(batch_size, 1, size, size, device=device).contiguous(memory_format=fmt)
    batch = {"image": image, "label": (torch.rand(batch_size, 14, device=device) < 0.1).float()}
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).to(device, memory_format=fmt)
    kwargs = {"amp": amp} if device.type == "cuda" else {}
    trainer = SupervisedTrainer(device=device, max_epochs=1, train_data_loader=[batch] * (steps + 2), network=net,
                                optimizer=torch.optim.Adam(net.parameters(), 1e-4), loss_function=WeightedBCEWithLogits(),
                                decollate=False, **kwargs)
    times: list[float] = []

    def tick(_engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    if amp and device.type == "cpu":  # MONAI's amp flag is CUDA float16 only; bfloat16 autocast on CPU
        with torch.autocast("cpu", dtype=torch.bfloat16):
            trainer.run()
    else:
        trainer.run()
    return batch_size * (len(times) - 2) / (times[-1] - times[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 320])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    print(f"{device}, {torch.get_num_threads()} torch threads, batch {args.batch_size}, {args.steps} timed steps")
    for size in args.sizes:
        for option in args.options:
            print(f"{size} px, {option}: {rate(device, size, args.batch_size, args.steps, option):.1f} training images/s",
                  flush=True)


if __name__ == "__main__":
    main()
