"""The data side at NIH's full size: an NIH-layout folder of 112,120 rows, the image store, test evaluation.

The folder has NIH's row count, image names, ~3.6 images per patient and official split lists (test_list.txt:
whole patients, NIH's 25,596 images at 112,120 rows); its pixel files are hard links to ``--distinct``
1024x1024 8-bit PNGs (~380 KB each, like NIH's), so disk use stays small while every decode is real. Measured,
each with the peak RSS of this process and its children so far:

- the single-core decode rate (the regime's load part on one image, one process);
- the store build over ``--store-rows`` images (all 112,120 by default) with one process per core: images/s
  against cores x the single-core rate, its size on disk;
- opening it again (the identity check of every image: a stat each) and warm reads (rows/s, one positioned read each);
- test evaluation of DenseNet121 over ``--test-images`` test images at ``--eval-size`` px: images/s and the share of
  the time spent outside the network (the loader: store read + the deterministic part);
- one robustness level (``--sweep-level``, rotation 10 degrees by default) over the same images, its shift applied
  to each batch as ``mai-aug robustness`` does: images/s and the share outside the network (store read + shift);
- the comparison's statistics on the whole test split (4 regimes x 3 seeds of synthetic predictions, 14 findings,
  1000 patient resamples: ``score_regimes`` + ``summary_table``, as ``compare`` scores a study and each sweep level).

- with ``--device cuda`` (or ``auto`` on a GPU machine): the same test images at ``--device-size`` px (320: the
  ``full`` preset's) evaluated as ``mai-aug evaluate`` does it (``predict_probabilities``: the store, a pinned
  DataLoader with ``--workers`` processes, autocast on CUDA), its wall time end to end.

It then projects the data side of ``compare --preset full --seeds 3`` (one store build, 12 test evaluations, the
default sweep of 12 runs and its statistics).

    python benchmarks/full_scale.py                                # the full size (about 13 min of decoding here)
    python benchmarks/full_scale.py --store-rows 8000 --test-images 2000    # a quicker sample of the same rates
    python benchmarks/full_scale.py --store-rows 1000 --device cuda          # + the full test split at 320 px on a GPU
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bootstrap_speed import NIH_PREVALENCE  # this folder: the scripts run as python benchmarks/NAME.py
from PIL import Image

from mai_aug.data.images import NameBadImage
from mai_aug.data.loader import StoreDataset, build_dataset
from mai_aug.data.nih import FINDINGS, HEADER
from mai_aug.data.store_build import _decode, default_workers, ensure_store
from mai_aug.transforms.regimes import load_regime
from mai_aug.transforms.shift_levels import SHIFT_TYPES

NIH_ROWS, NIH_TEST_SHARE = 112_120, 25_596 / 112_120


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its finished children, in MiB (the larger)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def radiograph_like(rng: np.random.Generator, size: int = 1024) -> np.ndarray:
    """A smooth 8-bit image with fine noise: compresses like a radiograph (~300-400 KB as PNG)."""
    coarse = rng.normal(0, 1, (size // 32, size // 32))
    smooth = np.kron(coarse, np.ones((32, 32)))
    image = 128 + 40 * smooth + rng.normal(0, 6, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_nih_full(root: Path, rows: int, distinct: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """NIH's layout with ``rows`` rows whose images are hard links to ``distinct`` PNGs: every path, the test ones."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    sources = [root / f"source_{k:03d}.png" for k in range(distinct)]
    for path in sources:
        Image.fromarray(radiograph_like(rng)).save(path)
    counts = rng.geometric(1 / 3.64, size=rows)
    patients = np.repeat(np.arange(1, rows + 1), counts)[:rows]
    follow = np.concatenate([np.arange(c) for c in counts])[:rows]
    test_patients = official_test_patients(rng, patients, round(NIH_TEST_SHARE * rows))
    lines, test, train_val = [",".join(HEADER)], [], []
    for i, (pid, f) in enumerate(zip(patients, follow)):
        name = f"{pid:08d}_{f:03d}.png"
        labels = "|".join(n for n in FINDINGS if rng.random() < 0.05) or "No Finding"
        lines.append(f"{name},{labels},{f},{pid},50,M,PA,1024,1024,0.143,0.143")
        os.link(sources[i % distinct], images / name)
        (test if pid in test_patients else train_val).append(name)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return [str(images / line.split(",", 1)[0]) for line in lines[1:]], [str(images / n) for n in test]


def official_test_patients(rng: np.random.Generator, patients: np.ndarray, images: int) -> set[int]:
    """Whole patients, in random order, whose images add up to exactly ``images`` (NIH's 25,596 at full size)."""
    ids, counts = np.unique(patients, return_counts=True)
    chosen, total = set(), 0
    for k in rng.permutation(len(ids)):
        if total + counts[k] <= images:
            chosen.add(int(ids[k]))
            total += int(counts[k])
        if total == images:
            break
    return chosen


def single_core_rate(paths: list[str], size: int, count: int = 40) -> float:
    """Images per second of the load part on one core (torch on one thread)."""
    torch.set_num_threads(1)
    load = NameBadImage(load_regime("none", size).cache_transform())
    start = time.perf_counter()
    for path in paths[:count]:
        _decode(load, path)
    return count / (time.perf_counter() - start)


def measure_store(paths: list[str], size: int, cache: Path, workers: int) -> dict:
    """Build, open again, read warm: the store's figures."""
    regime = load_regime("none", size)
    start = time.perf_counter()
    store = ensure_store(paths, regime, cache / "images", workers=workers, say=print)
    build = time.perf_counter() - start
    start = time.perf_counter()
    ensure_store(paths, regime, cache / "images", workers=workers, say=print)
    opened = time.perf_counter() - start
    dataset = StoreDataset([{"image": p, "label": [0] * 14} for p in paths], store)
    order = np.random.default_rng(0).permutation(len(paths))[:20000]
    start = time.perf_counter()
    for i in order:
        dataset[int(i)]
    reads = len(order) / (time.perf_counter() - start)
    return {"build_s": build, "build_rate": len(paths) / build, "store_mb": store.images_file.stat().st_size / 2**20,
            "open_s": opened, "read_rate": reads, "rss_mb": peak_rss_mb()}


def measure_evaluation(paths: list[str], size: int, cache: Path, workers: int, batch: int = 64,
                       shift: str | None = None) -> dict:
    """DenseNet121 over ``paths`` from the store: images/s, and the share spent outside the network (the loader,
    and with ``shift`` (``NAME=LEVEL``) that test-time shift applied to each batch, as a robustness level runs)."""
    from monai.networks.nets import DenseNet121
    from torch.utils.data import DataLoader

    from mai_aug.data.loader import IndexedDataset
    from mai_aug.transforms.shifts import build_batch_shift

    torch.set_num_threads(workers)
    regime = load_regime("none", size)
    dataset = build_dataset([{"image": p, "label": [0] * 14} for p in paths], regime, train=False, cache_dir=cache,
                            workers=workers, progress=False)
    name, _, level = (shift or "=").partition("=")
    shifted = build_batch_shift(name, float(level)) if shift else None
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).eval()
    outside_s = network_s = 0.0
    start = time.perf_counter()
    with torch.no_grad():
        tick = time.perf_counter()
        for batch_items in DataLoader(IndexedDataset(dataset), batch_size=batch, num_workers=0):
            images = batch_items["image"]
            if shifted is not None:
                images = shifted(images, batch_items["index"])
            loaded = time.perf_counter()
            net(images)
            done = time.perf_counter()
            outside_s, network_s, tick = outside_s + loaded - tick, network_s + done - loaded, done
    total = time.perf_counter() - start
    return {"eval_rate": len(paths) / total, "outside_share": outside_s / total, "rss_mb": peak_rss_mb(),
            "network_s": network_s}


def measure_statistics(test: list[str], regimes: int = 4, seeds: int = 3, n_boot: int = 1000) -> dict:
    """The comparison's statistics (``score_regimes`` + ``summary_table``, as ``compare`` runs them) over synthetic
    predictions of ``regimes`` x ``seeds`` runs on these test images (their patients; NIH's prevalences)."""
    from mai_aug.stats.paired import score_regimes, summary_table

    rng = np.random.default_rng(0)
    patients = np.asarray([int(Path(p).name[:8]) for p in test])
    labels = (rng.random((len(test), len(FINDINGS))) < NIH_PREVALENCE).astype(np.int64)
    predictions = {f"regime{r}": [np.round(1 / (1 + np.exp(-(labels * 1.2 + rng.normal(0, 1, labels.shape)))), 6)
                                  for _ in range(seeds)] for r in range(regimes)}
    start = time.perf_counter()
    scores = score_regimes(labels, patients, predictions, n_boot=n_boot)
    table = summary_table(scores, list(FINDINGS), baseline="regime0")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(table), "patients": len(np.unique(patients)), "rss_mb": peak_rss_mb()}


def measure_device_evaluation(paths: list[str], size: int, cache: Path, workers: int, device: torch.device,
                              batch: int = 64) -> dict:
    """``paths`` evaluated on ``device`` as ``mai-aug evaluate`` does (the store, a pinned loader, autocast on CUDA):
    wall seconds end to end, after the store is built and one warm-up batch (cuDNN's choice of kernels)."""
    from monai.networks.nets import DenseNet121
    from torch.utils.data import DataLoader

    from mai_aug.engine.inference import predict_probabilities

    dataset = build_dataset([{"image": p, "label": [0] * 14} for p in paths], load_regime("none", size), train=False,
                            cache_dir=cache, workers=workers, progress=False)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=14).to(device).eval()
    amp = device.type == "cuda"

    def run(items) -> float:
        loader = DataLoader(items, batch_size=batch, num_workers=workers, pin_memory=amp, persistent_workers=False)
        start = time.perf_counter()
        predict_probabilities(net, loader, device, amp, 1, 14)  # returns on the host: the device has finished
        return time.perf_counter() - start

    run(torch.utils.data.Subset(dataset, range(min(batch, len(dataset)))))
    seconds = run(dataset)
    return {"seconds": seconds, "rate": len(paths) / seconds, "rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=NIH_ROWS)
    p.add_argument("--distinct", type=int, default=300)
    p.add_argument("--size", type=int, default=320, help="the store's training size")
    p.add_argument("--store-rows", type=int, default=None, help="images stored (default: every row)")
    p.add_argument("--test-images", type=int, default=None, help="test images evaluated (default: the whole split)")
    p.add_argument("--eval-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--dir", type=Path)
    p.add_argument("--sweep-level", default="rotation=10", help="the robustness level timed (SHIFT=LEVEL)")
    p.add_argument("--device", default="none", help="also evaluate the test split on this device (cuda, auto)")
    p.add_argument("--device-size", type=int, default=320, help="the image size of the --device evaluation")
    args = p.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="nih-full-"))
    start = time.perf_counter()
    paths, test = write_nih_full(root / "nih", args.rows, args.distinct)
    print(f"NIH-layout folder: {len(paths)} rows, {len(test)} test images, {args.distinct} distinct PNGs "
          f"({np.mean([os.path.getsize(root / 'nih' / f'source_{k:03d}.png') for k in range(args.distinct)]) / 1024:.0f}"
          f" KB each) in {time.perf_counter() - start:.0f} s")
    one = single_core_rate(paths, args.size)
    print(f"single-core decode at {args.size} px: {one:.1f} images/s ({1000 / one:.1f} ms per image)")
    stored = paths[: args.store_rows or len(paths)]
    store = measure_store(stored, args.size, root / "cache", args.workers)
    print(f"store build: {len(stored)} images in {store['build_s']:.0f} s = {store['build_rate']:.1f} images/s "
          f"({store['build_rate'] / (args.workers * one):.0%} of {args.workers} cores x the single-core rate); "
          f"{store['store_mb']:.0f} MiB; opened again in {store['open_s']:.2f} s; warm reads "
          f"{store['read_rate']:.0f} images/s; peak RSS {store['rss_mb']:.0f} MiB")
    evaluated = test[: args.test_images or len(test)]
    ev = measure_evaluation(evaluated, args.eval_size, root / "cache", args.workers)
    print(f"test evaluation at {args.eval_size} px: {len(evaluated)} images, {ev['eval_rate']:.0f} images/s, "
          f"{ev['outside_share']:.1%} of the time outside the network; peak RSS {ev['rss_mb']:.0f} MiB")
    sweep = measure_evaluation(evaluated, args.eval_size, root / "cache", args.workers, shift=args.sweep_level)
    print(f"robustness level {args.sweep_level} at {args.eval_size} px: {len(evaluated)} images, "
          f"{sweep['eval_rate']:.0f} images/s, {sweep['outside_share']:.1%} of the time outside the network (store "
          f"read + the shift on each batch); peak RSS {sweep['rss_mb']:.0f} MiB")
    stats = measure_statistics(test)
    print(f"comparison statistics (4 regimes x 3 seeds, {len(test)} test images, {stats['patients']} patients, 14 "
          f"findings, 1000 patient resamples; summary of {stats['rows']} rows): {stats['seconds']:.1f} s; peak RSS "
          f"{stats['rss_mb']:.0f} MiB")
    if args.device != "none":
        report_device_evaluation(evaluated, args, root / "cache")
    report_projection(args, store, len(test) / ev["eval_rate"], len(test) / sweep["eval_rate"], stats["seconds"])


def report_projection(args: argparse.Namespace, store: dict, eval_s: float, level_s: float, stats_s: float) -> None:
    """Print the projected data side of ``compare --preset full --seeds 3`` (12 runs) on this CPU."""
    levels = sum(len(t.levels) - 1 for t in SHIFT_TYPES.values())  # the identity level reuses evaluate's predictions
    print(f"projected data side of compare --preset full --seeds 3 on this CPU at {args.eval_size} px: store build "
          f"{NIH_ROWS / store['build_rate'] / 60:.0f} min (once), 12 test evaluations {12 * eval_s / 60:.0f} min, "
          f"the default sweep ({levels} levels) {12 * levels * level_s / 3600:.1f} h for 12 runs, its statistics "
          f"{(1 + levels) * stats_s / 60:.0f} min, the summary's {stats_s:.0f} s (training not included)")


def report_device_evaluation(paths: list[str], args: argparse.Namespace, cache: Path) -> None:
    """Print the ``--device`` evaluation of ``paths`` at ``--device-size`` px."""
    from mai_aug.core.devices import resolve_device

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    ev = measure_device_evaluation(paths, args.device_size, cache, args.workers, device)
    print(f"test evaluation on {device} ({name}) at {args.device_size} px: {len(paths)} images in {ev['seconds']:.1f} s"
          f" = {ev['rate']:.0f} images/s (store built beforehand; peak RSS {ev['rss_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
