"""Training images/s of DenseNet121 on MONAI's SupervisedTrainer, per speed option, at a few sizes.

    python benchmarks/train_throughput.py [--sizes 64 320] [--batch-size 8] [--steps 10] [--device auto]
        [--options plain channels_last amp channels_last+amp] [--data DIR --regime complex --workers N]

Options: ``plain`` (float32, contiguous), ``channels_last`` (network and batches in NHWC), ``amp`` (autocast:
float16 on CUDA, bfloat16 on CPU), and their combinations; on CUDA ``cudnn.benchmark`` is on for all of them except
``+deterministic`` ones (``cudnn.deterministic`` as MONAI's ``set_determinism`` leaves it, benchmark off).
Batches are synthetic tensors already on the device (the network's cost alone); two warm-up steps are left out.
With ``--data`` (an NIH-layout folder, e.g. the phantom), each option is also timed with batches from mai_aug's own
input path as ``mai-aug train --augment-on device`` feeds them (uint8 memory cache, pinned DataLoader, batched stage
of ``--regime`` on the device), and the loader's cost against synthetic batches is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.networks.nets import DenseNet121
from monai.utils import CommonKeys

from mai_aug.core.devices import resolve_device
from mai_aug.data.loader import build_dataset
from mai_aug.data.nih import read_nih
from mai_aug.engine.inference import PrepareBatch
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.transforms.batched import compile_regime
from mai_aug.transforms.regimes import load_regime

OPTIONS = ("plain", "channels_last", "amp", "channels_last+amp", "amp+deterministic", "channels_last+amp+deterministic")


def synthetic(device: torch.device, size: int, batch_size: int, steps: int) -> tuple[Iterable, PrepareBatch]:
    """The same float batch, already on the device, ``steps`` times."""
    image = torch.rand(batch_size, 1, size, size, device=device)
    batch = {"image": image, "label": (torch.rand(batch_size, 14, device=device) < 0.1).float()}
    return [batch] * steps, PrepareBatch(1)


def from_loader(data: Path, regime_name: str, device: torch.device, size: int, batch_size: int,
                workers: int) -> tuple[Iterable, PrepareBatch]:
    """mai_aug's device path: cached uint8 images gathered by a pinned DataLoader, the batched stage on the device."""
    table = read_nih(data)
    items = [{"image": p, "label": lab.tolist()} for p, lab in zip(table.frame["image"], table.labels)]
    regime = load_regime(regime_name, size)
    stage = compile_regime(regime)
    if isinstance(stage, str):
        raise SystemExit(f"regime {regime_name!r} cannot run batched: {stage}")
    dataset = build_dataset(items, regime, train=True, cache="memory", workers=max(workers, 1), progress=False,
                            online=False)
    pin = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0)
    return loader, PrepareBatch(1, stage)


def rate(device: torch.device, source: tuple[Iterable, PrepareBatch], steps: int, option: str) -> float:
    """Training images/s of one option over ``steps`` timed iterations (after two warm-up ones)."""
    channels_last, amp = "channels_last" in option, "amp" in option
    torch.backends.cudnn.deterministic = "deterministic" in option
    torch.backends.cudnn.benchmark = device.type == "cuda" and "deterministic" not in option
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    data, prepare = source
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).to(device, memory_format=fmt)
    kwargs = {"amp": amp} if device.type == "cuda" else {}
    trainer = SupervisedTrainer(device=device, max_epochs=1, epoch_length=steps + 2, train_data_loader=data,
                                network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-4),
                                loss_function=WeightedBCEWithLogits(), prepare_batch=prepare,
                                non_blocking=device.type == "cuda", decollate=False, **kwargs)
    prepare.attach(trainer)
    times: list[float] = []
    sizes: list[int] = []

    def tick(engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        sizes.append(len(engine.state.output[CommonKeys.PRED]))  # decollate=False: one dict per batch

    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    if amp and device.type == "cpu":  # MONAI's amp flag is CUDA float16 only; bfloat16 autocast on CPU
        with torch.autocast("cpu", dtype=torch.bfloat16):
            trainer.run()
    else:
        trainer.run()
    return sum(sizes[2:]) / (times[-1] - times[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 320])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--options", nargs="+", default=list(OPTIONS[:4]), choices=OPTIONS)
    p.add_argument("--data", type=Path, help="NIH-layout folder: also time batches from mai_aug's device path")
    p.add_argument("--regime", default="complex", help="the regime of the --data batches")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the --data batches")
    args = p.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} torch threads"
    print(f"{device} ({name}), batch {args.batch_size}, {args.steps} timed steps")
    for size in args.sizes:
        loader = from_loader(args.data, args.regime, device, size, args.batch_size, args.workers) if args.data else None
        for option in args.options:
            fast = rate(device, synthetic(device, size, args.batch_size, args.steps + 2), args.steps, option)
            line = f"{size} px, {option}: {fast:.1f} training images/s (synthetic batches on the device)"
            if loader is not None:
                fed = rate(device, loader, args.steps, option)
                line += f"; {fed:.1f} from the loader ({args.regime}, device path): loader costs {1 - fed / fast:.1%}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
