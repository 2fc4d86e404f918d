"""Image decoding helpers for MONAI's PILReader."""

from __future__ import annotations

from PIL import Image

# 16- and 32-bit PNG modes keep their range; ScaleIntensityd maps it to [0, 1] afterwards.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ToGrayscale:
    """PILReader ``converter``: any PNG mode (L, LA, P, RGB, RGBA, 1, 16-bit) to one grayscale channel.

    MONAI's PILReader keeps colour channels as they are, so an RGB file would load with three channels;
    NIH's own files are mostly L but some are RGBA.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode == "L":
            return image
        if image.mode in _WIDE_MODES:
            return image if image.mode in ("I", "F") else image.convert("I")
        if image.mode in ("LA", "PA", "P", "RGBA", "RGBa", "La"):
            image = image.convert("RGBA") if image.mode in ("P", "PA") else image
        return image.convert("L")

    def __repr__(self) -> str:
        return "ToGrayscale()"
