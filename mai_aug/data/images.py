"""Image files that cannot be decoded: found quickly up front (``--verify-images``), dropped on request
(``--skip-bad-images``), and named with their cause when a loader meets one."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from monai.transforms import Transform
from PIL import Image

from mai_aug.errors import MaiAugError, first_line
from mai_aug.utils import Progress

SPLITS: tuple[str, ...] = ("training", "validation", "test")
# Pillow decodes these; DICOM (.dcm) goes through MONAI's reader and is not pre-checked.
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be decoded (missing, empty, truncated, not an image), or None when it decodes."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        if path.suffix.lower() not in PIL_SUFFIXES:
            return None
        with Image.open(path) as image:
            image.load()  # a full decode: verify() alone misses truncated pixel data
    except FileNotFoundError:
        return "file not found"
    except Image.DecompressionBombError as e:
        return f"refused by Pillow ({e})"
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for bad, truncated or unknown files
        return f"cannot decode image ({first_line(e, limit=None)})"
    return None


def find_bad_images(paths: Sequence[str], workers: int | None = None, progress: bool = True) -> list[tuple[str, str]]:
    """``(path, cause)`` for every file of ``paths`` that does not decode, checked by a pool of threads.

    Pillow releases the GIL while it inflates, so threads check several files at once.
    """
    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    show = Progress("verifying images", len(paths)) if progress else None
    bad: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, problem) in enumerate(zip(paths, pool.map(image_problem, paths)), 1):
            if problem is not None:
                bad.append((path, problem))
            if show is not None:
                show(done)
    return bad


def check_datalist_images(datalist: dict, skip: bool = False, report: Callable[[str], Any] | None = print,
                          bad_list: Path | None = None, progress: bool = True) -> dict:
    """Decode every image of ``datalist``; raise on the first bad one, or with ``skip`` drop them all.

    Args:
        datalist: the split (``training``/``validation``/``test`` items with ``image``).
        skip: drop unreadable images (counted, listed in ``bad_list``) instead of stopping.
        report: hears the outcome.
        bad_list: CSV (image, split, cause) written when images are dropped.
        progress: print a progress line while checking.

    Returns:
        ``datalist``, or a copy without the unreadable images.
    """
    paths = [it["image"] for key in SPLITS for it in datalist[key]]
    bad = dict(find_bad_images(paths, progress=progress))
    if not bad:
        if report is not None:
            report(f"verified {len(paths)} images: all decode")
        return datalist
    first = next(iter(bad))
    if not skip:
        raise MaiAugError(f"{first}: {bad[first]} ({len(bad)} of {len(paths)} listed images cannot be read; "
                          "--skip-bad-images drops them)")
    kept = {**datalist, **{key: [it for it in datalist[key] if it["image"] not in bad] for key in SPLITS}}
    if bad_list is not None:
        write_bad_list(datalist, bad, bad_list)
    if report is not None:
        where = f"; list in {bad_list}" if bad_list is not None else ""
        report(f"--skip-bad-images: dropped {len(bad)} of {len(paths)} images that cannot be read "
               f"(e.g. {first}: {bad[first]}){where}")
    return kept


def write_bad_list(datalist: dict, bad: dict[str, str], path: Path) -> Path:
    """``image,split,cause`` for each dropped image."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "split", "cause"])
            writer.writerows([it["image"], key, bad[it["image"]]] for key in SPLITS for it in datalist[key]
                             if it["image"] in bad)
    except OSError as e:
        raise MaiAugError(f"{path}: cannot write the list of bad images ({e.strerror})") from None
    return path


class NameBadImage(Transform):
    """Run ``transform`` (the loading part); when it fails on a file that does not decode, raise a
    :class:`MaiAugError` naming the file and the cause instead of MONAI's nested transform traceback.

    Any other failure is re-raised unchanged. A MONAI ``Transform``, so cached datasets still cache through it.
    """

    def __init__(self, transform: Callable, key: str = "image") -> None:
        self.transform = transform
        self.key = key

    def __call__(self, data: Any) -> Any:
        try:
            return self.transform(data)
        except Exception:
            path = data.get(self.key) if isinstance(data, dict) else None
            problem = image_problem(path) if isinstance(path, str | Path) else None
            if problem is None:
                raise
            raise MaiAugError(f"{path}: {problem}") from None


def check_images_if_asked(datalist: dict, options: Any, report: Callable[[str], Any] | None,
                          bad_list: Path, progress: bool = True) -> dict:
    """:func:`check_datalist_images` when ``options`` (parsed arguments, a TrainConfig or CompareOptions) has
    ``verify_images`` or ``skip_bad_images`` set; else ``datalist`` unchanged."""
    skip = bool(getattr(options, "skip_bad_images", False))
    if not (skip or getattr(options, "verify_images", False)):
        return datalist
    return check_datalist_images(datalist, skip=skip, report=report, bad_list=bad_list, progress=progress)
