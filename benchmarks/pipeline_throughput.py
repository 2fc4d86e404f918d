"""Images/s of mai_aug's input pipeline (8-bit cache + the regime on cached tensors) against the reference
article's Keras ImageDataGenerator, on the same files.

    python benchmarks/pipeline_throughput.py --images DIR --size 320 --regime complex --epochs 3 --batch-size 8 \
        [--augment-on both|loader|device] [--device auto|cpu|cuda] [--baseline keras] [--workers N] [--limit N]

``loader``: the regime per image in the DataLoader workers (float batches). ``device``: the DataLoader gathers the
cached uint8 images and the batched stage (``mai_aug.transforms.batched``) runs the regime on the whole batch on
``--device``; its figures include the copy to the device and, on CUDA, wait for the device to finish.
Epoch 1 ("cold") includes decoding and resizing every file into the cache.

DIR is a folder of PNGs, or an NIH-layout folder (its CSV gives the labels). The Keras baseline needs the
``bench`` extra (keras-preprocessing 1.1.2, which runs without TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader

from mai_aug.core.devices import resolve_device
from mai_aug.data.loader import build_dataset
from mai_aug.data.nih import FINDINGS, index_images, read_nih
from mai_aug.transforms.batched import compile_regime
from mai_aug.transforms.regimes import load_regime


def items_for(images: Path, limit: int | None) -> list[dict]:
    nih = images if any(images.glob("Data_Entry_2017*.csv")) else images.parent
    if any(nih.glob("Data_Entry_2017*.csv")):
        table = read_nih(nih)
        items = [{"image": p, "label": lab.tolist()} for p, lab in zip(table.frame["image"], table.labels)]
    else:
        items = [{"image": p, "label": [0] * 14} for p in sorted(index_images(images).values())]
    return items[:limit] if limit else items


def bench_mai_aug(items: list[dict], size: int, regime_name: str, epochs: int, batch: int, workers: int,
                  where: str = "loader", device: torch.device | None = None) -> list[float]:
    """Images/s per epoch of the loader path, or of the device path (uint8 batches + the batched stage)."""
    device = device or torch.device("cpu")
    regime = load_regime(regime_name, size)
    stage = compile_regime(regime) if where == "device" else None
    if isinstance(stage, str):
        raise SystemExit(f"regime {regime_name!r} cannot run on the device path: {stage}")
    t0 = time.perf_counter()
    dataset = build_dataset(items, regime, train=True, cache="memory", workers=max(workers, 1), progress=False,
                            online=stage is None)
    pin = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=pin,
                        persistent_workers=workers > 0)
    rates = []
    for epoch in range(epochs):
        start = t0 if epoch == 0 else time.perf_counter()  # epoch 1 includes decoding into the cache
        n = 0
        for i, b in enumerate(loader):
            images = b["image"]
            if stage is not None:
                images = stage(images.to(device, non_blocking=pin), epoch + 1, i + 1)
            n += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
        print(f"mai_aug {regime_name} {where} path ({device.type if stage else f'{workers} workers'}) epoch {epoch + 1}: "
              f"{rates[-1]:.0f} images/s" + (" (cold: includes decoding into the cache)" if epoch == 0 else ""))
    return rates


def bench_keras(items: list[dict], size: int, epochs: int, batch: int) -> list[float]:
    from keras_preprocessing.image import ImageDataGenerator

    frame = pd.DataFrame({"path": [it["image"] for it in items]})
    for j, name in enumerate(FINDINGS):
        frame[name] = [it["label"][j] for it in items]
    gen = ImageDataGenerator(rotation_range=5, shear_range=0.02, zoom_range=0.02,
                             samplewise_center=True, samplewise_std_normalization=True)
    flow = gen.flow_from_dataframe(frame, x_col="path", y_col=list(FINDINGS), class_mode="raw",
                                   target_size=(size, size), batch_size=batch, shuffle=True, seed=0)
    rates = []
    for epoch in range(epochs):
        start, n = time.perf_counter(), 0
        for _ in range(len(flow)):
            x, _ = next(flow)
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
        print(f"keras ImageDataGenerator epoch {epoch + 1}: {rates[-1]:.0f} images/s")
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--regime", default="complex")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--baseline", choices=["keras"])
    p.add_argument("--augment-on", default="both", choices=["both", "loader", "device"])
    p.add_argument("--device", default="auto", help="where the device path runs: auto (CUDA when present), cpu, cuda")
    p.add_argument("--device-workers", type=int, default=0,
                   help="DataLoader workers of the device path (they only gather uint8 tensors)")
    args = p.parse_args()
    items = items_for(args.images, args.limit)
    device = resolve_device(args.device)
    print(f"{len(items)} images at {args.size} px, batch {args.batch_size}, {args.workers} loader workers, "
          f"device path on {device} with {args.device_workers} workers, {torch.get_num_threads()} torch threads")
    paths = ["loader", "device"] if args.augment_on == "both" else [args.augment_on]
    ours = {where: bench_mai_aug(items, args.size, args.regime, args.epochs, args.batch_size,
                                 args.device_workers if where == "device" else args.workers, where, device)
            for where in paths}
    later = slice(1, None) if args.epochs > 1 else slice(None)
    if args.baseline == "keras":
        theirs = bench_keras(items, args.size, args.epochs, args.batch_size)
        for where, rates in ours.items():
            for e, (a, b) in enumerate(zip(rates, theirs), 1):
                print(f"epoch {e}: mai_aug {where} / keras = {a / b:.1f}x")
            print(f"steady state (epochs 2+): mai_aug {where} {np.mean(rates[later]):.0f} vs keras "
                  f"{np.mean(theirs[later]):.0f} images/s = {np.mean(rates[later]) / np.mean(theirs[later]):.1f}x")
    for where, rates in ours.items():
        print(f"mai_aug {where} path: cold epoch {rates[0]:.0f}, steady state {np.mean(rates[later]):.0f} images/s")


if __name__ == "__main__":
    main()
