"""Cold decode + resize: the regime's load steps today against Pillow's ``Image.reduce`` before the area resize.

    python benchmarks/decode_speed.py --n 200 --sizes 64 320

Writes ``--n`` phantom images (256 px, as the demo's phantom) and NIH-sized copies (1024 px: the phantom enlarged
bicubically with grey-level noise, so PNG compression sees texture), then for each source size and training size
times, once, over all files:

- ``decode``: Pillow's open + load only (the floor: PNG has no draft mode, so decoding is never skipped);
- ``today``: the regime's cache transform (PILReader, SmoothResized's area shrink, ScaleIntensityd, ToUint8d);
- ``reduce``: the same steps with ``Image.reduce(k)`` first, ``k`` the largest integer keeping the image at least the
  training size, in mode F (exact block means; mode L would round each block mean to an integer first).

and the largest difference between the two paths' uint8 outputs, with the share of pixels that differ. Pillow's
``draft`` (decode at 1/2, 1/4, 1/8) exists for JPEG only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.transforms import ScaleIntensity
from PIL import Image

from mai_aug.data.phantom import PhantomSpec, write_phantom
from mai_aug.transforms.io import ToGrayscale
from mai_aug.transforms.regimes import load_regime
from mai_aug.transforms.resize import SmoothResized


def write_images(folder: Path, n: int, seed: int = 0) -> dict[int, list[Path]]:
    """``n`` phantom PNGs at 256 px and their 1024 px copies (bicubic, plus noise of 3 grey levels)."""
    write_phantom(PhantomSpec(out=folder / "phantom", n=n, size=256, seed=seed), workers=1)
    small = sorted((folder / "phantom").rglob("*.png"))[:n]
    rng = np.random.default_rng(seed)
    (folder / "large").mkdir()
    large = []
    for path in small:
        big = np.asarray(Image.open(path).convert("L").resize((1024, 1024), Image.BICUBIC), dtype=np.float32)
        big = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).round().astype(np.uint8)
        large.append(folder / "large" / path.name)
        Image.fromarray(big).save(large[-1])
    return {256: small, 1024: large}


def reduced_load(size: int) -> Callable[[Path], torch.Tensor]:
    """File -> (1, size, size) uint8 tensor: ``Image.reduce`` in mode F, then today's area resize and scaling."""
    to_gray, resize, scale = ToGrayscale(), SmoothResized("image", (size, size)), ScaleIntensity(minv=0.0, maxv=1.0)

    def load(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            gray = to_gray(image).convert("F")
            k = min(gray.width // size, gray.height // size)
            if k > 1:
                gray = gray.reduce(k)
            img = torch.from_numpy(np.asarray(gray, dtype=np.float32).copy())[None]
        img = scale(resize.resize(img))
        return (img.float().clamp(0, 1) * 255).round().to(torch.uint8)

    return load


def today_load(size: int) -> Callable[[Path], torch.Tensor]:
    """File -> (1, size, size) uint8 tensor: the regime's cache transform as training runs it."""
    transform = load_regime("none", size).cache_transform()
    return lambda path: torch.as_tensor(transform({"image": str(path), "label": [0]})["image"])


def decode(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


def timed(fn: Callable[[Path], object], paths: list[Path]) -> tuple[float, list]:
    start = time.perf_counter()
    out = [fn(p) for p in paths]
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 320])
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_images(Path(tmp), args.n)
        print(f"{args.n} images; one pass each (cold: nothing cached); torch threads 1")
        print("| source px | training px | decode s | today s | reduce s | today img/s | reduce img/s "
              "| max diff (uint8 levels) | pixels differing |")
        print("|---|---|---|---|---|---|---|---|---|")
        for source, paths in files.items():
            t_decode, _ = timed(decode, paths)
            for size in [s for s in args.sizes if s < source]:
                t_today, old = timed(today_load(size), paths)
                t_reduce, new = timed(reduced_load(size), paths)
                diff = torch.stack([(a.int() - b.int()).abs() for a, b in zip(old, new)])
                print(f"| {source} | {size} | {t_decode:.2f} | {t_today:.2f} | {t_reduce:.2f} "
                      f"| {len(paths) / t_today:.0f} | {len(paths) / t_reduce:.0f} "
                      f"| {int(diff.max())} | {float((diff > 0).float().mean()):.2%} |")


if __name__ == "__main__":
    main()
