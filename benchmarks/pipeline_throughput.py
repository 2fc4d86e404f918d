"""Images/s of mai_aug's input pipeline (8-bit cache + random part on cached tensors) against the reference
article's Keras ImageDataGenerator, on the same files.

    python benchmarks/pipeline_throughput.py --images DIR --size 320 --regime complex --epochs 3 --batch-size 8 \
        [--baseline keras] [--workers N] [--limit N]

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
from monai.data import DataLoader

from mai_aug.data.loader import build_dataset
from mai_aug.data.nih import FINDINGS, index_images, read_nih
from mai_aug.transforms.regimes import load_regime


def items_for(images: Path, limit: int | None) -> list[dict]:
    nih = images if any(images.glob("Data_Entry_2017*.csv")) else images.parent
    if any(nih.glob("Data_Entry_2017*.csv")):
        table = read_nih(nih)
        items = [{"image": p, "label": lab.tolist()} for p, lab in zip(table.frame["image"], table.labels)]
    else:
        items = [{"image": p, "label": [0] * 14} for p in sorted(index_images(images).values())]
    return items[:limit] if limit else items


def bench_mai_aug(items: list[dict], size: int, regime: str, epochs: int, batch: int, workers: int) -> list[float]:
    rates = []
    t0 = time.perf_counter()
    dataset = build_dataset(items, load_regime(regime, size), train=True, cache="memory", workers=workers, progress=False)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for epoch in range(epochs):
        start = t0 if epoch == 0 else time.perf_counter()  # epoch 1 includes decoding into the cache
        n = sum(len(b["image"]) for b in loader)
        rates.append(n / (time.perf_counter() - start))
        print(f"mai_aug {regime} epoch {epoch + 1}: {rates[-1]:.0f} images/s" + (" (includes caching)" if epoch == 0 else ""))
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
    args = p.parse_args()
    items = items_for(args.images, args.limit)
    print(f"{len(items)} images at {args.size} px, batch {args.batch_size}, {args.workers} workers")
    ours = bench_mai_aug(items, args.size, args.regime, args.epochs, args.batch_size, args.workers)
    if args.baseline == "keras":
        theirs = bench_keras(items, args.size, args.epochs, args.batch_size)
        for e, (a, b) in enumerate(zip(ours, theirs), 1):
            print(f"epoch {e}: mai_aug / keras = {a / b:.1f}x")
        later = slice(1, None) if args.epochs > 1 else slice(None)
        print(f"steady state (epochs 2+): mai_aug {np.mean(ours[later]):.0f} vs keras {np.mean(theirs[later]):.0f} "
              f"images/s = {np.mean(ours[later]) / np.mean(theirs[later]):.1f}x")


if __name__ == "__main__":
    main()
