"""Image files that cannot be used: refused by content before any long work (:func:`check_image_headers`: magic
bytes and header, for split, train, evaluate, predict and compare), fully decoded up front on request
(``--verify-images``), dropped on request (``--skip-bad-images``), and named with their cause when a loader meets
one (:class:`NameBadImage`)."""

from __future__ import annotations

import csv
import importlib.util
import os
import stat
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import torch
from monai.transforms import Transform
from PIL import Image

from mai_aug.core.errors import MaiAugError, first_line, note
from mai_aug.core.progress import Progress

SPLITS: tuple[str, ...] = ("training", "validation", "test")
# What the load step (PILReader) reads, recognised by the file's first bytes rather than its name.
MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
                                       (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
DICOM_MAGIC = (128, b"DICM")  # the preamble, then the marker
DICOM_HINT = ("a DICOM file, and pydicom is not installed: convert it to PNG, or pip install mai-aug[dicom] and "
              "give a `regimes_file` whose load step uses MONAI's PydicomReader")
MIN_SIDE = 8  # px: a smaller "image" (1x1, 2x2) is a placeholder or a thumbnail, not a radiograph
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 is "as stored"
HEADER_BYTES = 132  # enough for every magic number above, DICOM's included


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a readable, non-empty regular file (missing, a folder, a device...), or None."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def content_kind(head: bytes) -> str | None:
    """The image format named by a file's first bytes (``PNG``, ``JPEG``, ``BMP``, ``TIFF``, ``DICOM``), or None."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    offset, marker = DICOM_MAGIC
    return "DICOM" if head[offset:offset + len(marker)] == marker else None


def dicom_readable() -> bool:
    """Whether pydicom (the ``dicom`` extra, behind MONAI's PydicomReader) is installed."""
    return importlib.util.find_spec("pydicom") is not None


def _is_dicom(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return content_kind(f.read(HEADER_BYTES)) == "DICOM"


def header_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable image, from its first bytes and header alone (no pixels decoded), or None.

    Checked: a regular non-empty file; PNG, JPEG, BMP or TIFF content whatever its name says (a text file, a
    DICOM, an HTML error page saved as ``.png`` are refused); a size of at least :data:`MIN_SIDE` px and within
    Pillow's decompression-bomb limit; no EXIF orientation other than "as stored".
    """
    problem = file_problem(path)
    if problem is not None:
        return problem
    kind = "image"
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            kind = content_kind(head)
            if kind is None:
                return f"not an image (its content starts with {head[:16]!r}; expected PNG, JPEG, BMP or TIFF)"
            if kind == "DICOM":  # MONAI's PydicomReader decodes it, in a load step that uses it
                return None if dicom_readable() else DICOM_HINT
            f.seek(0)
            with _header(f, str(path), kind) as image:
                return _size_problem(image.size) or _orientation_problem(image)
    except OSError as e:
        return f"cannot read ({e.strerror})" if e.strerror else f"cannot decode the {kind} header ({first_line(e)})"
    except (SyntaxError, ValueError, struct.error, EOFError) as e:  # Pillow's errors for damaged headers
        return f"cannot decode the {kind} header ({first_line(e)})"


def _header(f: IO[bytes], name: str, kind: str) -> Image.Image:
    """The image's header, read by Pillow's plugin for ``kind`` directly: ``Image.open`` would warn (without
    naming the file) or raise on a decompression bomb before the size can be checked here."""
    Image.init()
    factory, _ = Image.OPEN[kind]
    return factory(f, name)


def _size_problem(size: tuple[int, int]) -> str | None:
    width, height = size
    if min(width, height) < MIN_SIDE:
        return f"{width}x{height} px image (below {MIN_SIDE} px: not a radiograph)"
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (f"{width}x{height} px image: above Pillow's decompression-bomb limit of {limit} pixels "
                "(not decoded; a corrupt or hostile file)")
    return None


def _orientation_problem(image: Image.Image) -> str | None:
    """Refuse an EXIF orientation other than 1 ("as stored").

    The load step ignores the tag, so the network would see the pixels as stored while a viewer shows them turned
    or mirrored; applying the tag instead would rotate or mirror the radiograph (a mirror moves the heart to the
    other side). Neither may happen without a word, and a warning in a long log is easily missed: the file must
    be fixed (saved with the orientation applied, or the tag removed) or dropped with ``--skip-bad-images``.
    """
    if image.format == "PNG":  # PNG's getexif() decodes every pixel when the chunk is absent; read it from info
        raw = image.info.get("exif")
        exif = Image.Exif()
        if raw:
            exif.load(raw)
    else:
        exif = image.getexif()
    orientation = exif.get(ORIENTATION_TAG, 1)
    if orientation in (None, 1, 0):
        return None
    return (f"EXIF orientation tag {orientation} (turned or mirrored): the loader uses the pixels as stored, so "
            "a viewer and the network would disagree; save it with the orientation applied or strip the tag")


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be used: :func:`header_problem`, or pixel data that does not decode (truncated); or None."""
    problem = header_problem(path)
    if problem is not None or _is_dicom(path):  # a DICOM gets this far only when pydicom reads it, not Pillow
        return problem
    try:
        with Image.open(path) as image:
            image.load()  # a full decode: verify() alone misses truncated pixel data
    except FileNotFoundError:
        return "file not found"
    except Image.DecompressionBombError as e:
        return f"refused by Pillow ({e})"
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for bad, truncated or unknown files
        return f"cannot decode image ({first_line(e, limit=None)})"
    return None


def check_image_headers(paths: Sequence[str], hint: str = "", workers: int | None = None) -> None:
    """Raise one :class:`MaiAugError` naming the first of ``paths`` that :func:`header_problem` refuses.

    Cheap (the first bytes and the header of each file, read by threads): run before any long work (training,
    inference), so that a bad file stops the command at once with its name rather than deep in a transform.
    ``hint`` ends the message when several files are refused (what the command offers to drop them).
    """
    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bad = [(p, problem) for p, problem in zip(paths, pool.map(header_problem, paths)) if problem is not None]
    if bad:
        more = f" ({len(bad)} of {len(paths)} images are not usable{hint})" if len(bad) > 1 else ""
        raise MaiAugError(f"{bad[0][0]}: {bad[0][1]}{more}")


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


def check_datalist_images(datalist: dict, skip: bool = False, report: Callable[[str], Any] | None = note,
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
                          "`skip_bad_images` drops them)")
    kept = {**datalist, **{key: [it for it in datalist[key] if it["image"] not in bad] for key in SPLITS}}
    if bad_list is not None:
        write_bad_list(datalist, bad, bad_list)
    if report is not None:
        where = f"; list in {bad_list}" if bad_list is not None else ""
        report(f"`skip_bad_images`: dropped {len(bad)} of {len(paths)} images that cannot be read "
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
        path = data.get(self.key) if isinstance(data, dict) else None
        try:
            out = self.transform(data)
        except Exception:
            problem = load_problem(path) if isinstance(path, str | Path) else None
            if problem is None:
                raise
            raise MaiAugError(f"{path}: {problem}") from None
        if isinstance(out, dict):
            warn_if_constant(path, out.get(self.key))
        return out


def load_problem(path: str | Path) -> str | None:
    """Why the load step failed on ``path``: :func:`image_problem`, or a DICOM (accepted because pydicom is
    installed) that the load step's reader cannot read; None when the file is not the cause."""
    problem = image_problem(path)
    if problem is None and file_problem(path) is None and _is_dicom(path):
        return ("a DICOM file that the load step cannot read (the shipped one reads with PILReader): give a "
                "`regimes_file` whose load step uses MONAI's PydicomReader, or convert it to PNG")
    return problem


def warn_if_constant(path: Any, image: Any) -> None:
    """Warn (one line, naming the file) when a loaded image has one value everywhere: a blank or failed
    exposure carries nothing to learn from or to predict on, but is not an unreadable file."""
    if isinstance(image, torch.Tensor) and image.numel() and bool(image.amin() == image.amax()):
        warnings.warn(f"{path}: constant image (every pixel the same value): it carries no information; "
                      "check the file or drop it from the list", stacklevel=2)


def check_images_if_asked(datalist: dict, verify: bool, skip: bool, report: Callable[[str], Any] | None,
                          bad_list: Path, progress: bool = True) -> dict:
    """:func:`check_datalist_images` (a full decode) with ``verify`` (``verify_images``) or ``skip``
    (``skip_bad_images``); else the cheap :func:`check_image_headers` of every listed image, and ``datalist``
    unchanged."""
    if not (skip or verify):
        check_image_headers([it["image"] for key in SPLITS for it in datalist[key]], "; `skip_bad_images` drops them")
        return datalist
    return check_datalist_images(datalist, skip=skip, report=report, bad_list=bad_list, progress=progress)
