"""Training images/s of DenseNet121 on MONAI's SupervisedTrainer, per speed option, size and batch size.

    python benchmarks/train_throughput.py [--sizes 64 320] [--batch-sizes 8 32 128] [--steps 10] [--device auto]
        [--options plain channels_last amp fused compile ...] [--data DIR --regime complex --workers N]

An option is ``plain`` or ``+``-joined tokens, each the training setting mai_aug resolves and applies itself
(``mai_aug.engine.step``, ``mai_aug.engine.precision``): ``channels_last`` (the network in NHWC), ``amp`` (autocast:
float16 on CUDA, bfloat16 on CPU, the forward only), ``bf16`` (bfloat16 autocast on CUDA too), ``fused`` (Adam's
fused kernel), ``compile`` / ``reduce-overhead`` (``torch.compile`` of the network, the latter with CUDA graphs),
``deterministic`` (``cudnn.deterministic`` as MONAI's ``set_determinism`` leaves it; otherwise ``cudnn.benchmark``).
Batches are synthetic tensors already on the device (the network's cost alone); warm-up steps are left out and the
first step's time (a compile's cost) is printed. With ``--data`` (an NIH-layout folder, e.g. the phantom), each
option is also timed with batches from mai_aug's own input path as ``mai-aug train --augment-on device`` feeds them
(the image store, a pinned DataLoader, the batched stage of ``--regime`` on the device), and the loader's cost
against synthetic batches is printed.
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

from mai_aug.core.devices import StepOptions, resolve_device
from mai_aug.data.loader import build_dataset
from mai_aug.data.nih import read_nih
from mai_aug.engine.inference import PrepareBatch
from mai_aug.engine.loss import WeightedBCEWithLogits
from mai_aug.engine.precision import engine_precision
from mai_aug.engine.step import make_adam, prepare_network
from mai_aug.transforms.batched import compile_regime
from mai_aug.transforms.regimes import load_regime

TOKENS = ("channels_last", "amp", "bf16", "fused", "compile", "reduce-overhead", "deterministic")
DEFAULT_OPTIONS = ("plain", "channels_last", "amp", "fused", "compile", "channels_last+amp+fused")
WARMUP = 3  # steps left out of the rate (the first one: a compile's cost)


def option(text: str) -> frozenset[str]:
    """``channels_last+amp`` as its tokens (``plain``: none), each known."""
    tokens = frozenset() if text == "plain" else frozenset(text.split("+"))
    unknown = sorted(tokens - set(TOKENS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown option {unknown[0]!r} (tokens: {', '.join(TOKENS)})")
    return tokens


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
    dataset = build_dataset(items, regime, train=True, cache="store", workers=max(workers, 1), progress=False,
                            online=False)
    pin = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0)
    return loader, PrepareBatch(1, stage)


def rate(device: torch.device, source: tuple[Iterable, PrepareBatch], steps: int, tokens: frozenset[str]
         ) -> tuple[float, float]:
    """Training images/s of one option over ``steps`` timed iterations, and the first step's seconds."""
    torch.backends.cudnn.deterministic = "deterministic" in tokens
    torch.backends.cudnn.benchmark = device.type == "cuda" and "deterministic" not in tokens
    mode = "reduce-overhead" if "reduce-overhead" in tokens else "default" if "compile" in tokens else "off"
    step = StepOptions(channels_last="channels_last" in tokens, fused_adam="fused" in tokens, compile=mode)
    data, prepare = source
    torch.manual_seed(0)
    net = prepare_network(DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).to(device), step)
    amp = bool(tokens & {"amp", "bf16"})
    dtype = torch.bfloat16 if "bf16" in tokens else None
    trainer = SupervisedTrainer(device=device, max_epochs=1, epoch_length=steps + WARMUP, train_data_loader=data,
                                network=net, optimizer=make_adam(net.parameters(), 1e-4, 0.0, step),
                                loss_function=WeightedBCEWithLogits(), prepare_batch=prepare,
                                non_blocking=device.type == "cuda", decollate=False,
                                **engine_precision(device, amp, dtype))
    prepare.attach(trainer)
    times: list[float] = [time.perf_counter()]
    sizes: list[int] = []

    def tick(engine) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        sizes.append(len(engine.state.output[CommonKeys.PRED]))  # decollate=False: one dict per batch

    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    trainer.run()
    return sum(sizes[WARMUP:]) / (times[-1] - times[WARMUP]), times[1] - times[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 320])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--options", nargs="+", type=option, default=[option(o) for o in DEFAULT_OPTIONS])
    p.add_argument("--data", type=Path, help="NIH-layout folder: also time batches from mai_aug's device path")
    p.add_argument("--regime", default="complex", help="the regime of the --data batches")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the --data batches")
    args = p.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} torch threads"
    print(f"{device} ({name}), {args.steps} timed steps after {WARMUP} warm-up ones; torch {torch.__version__}")
    for size in args.sizes:
        for batch in args.batch_sizes:
            loader = (from_loader(args.data, args.regime, device, size, batch, args.workers) if args.data else None)
            for tokens in args.options:
                label = "+".join(sorted(tokens)) or "plain"
                fast, first = rate(device, synthetic(device, size, batch, args.steps + WARMUP), args.steps, tokens)
                line = (f"{size} px, batch {batch}, {label}: {fast:.1f} training images/s (synthetic batches on the "
                        f"device; first step {first:.1f} s)")
                if loader is not None:
                    fed, _ = rate(device, loader, args.steps, tokens)
                    line += f"; {fed:.1f} from the loader ({args.regime}, device path): loader costs {1 - fed / fast:.1%}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
