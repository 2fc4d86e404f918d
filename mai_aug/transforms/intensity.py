"""The 8-bit cache boundary of every regime."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


class ToUint8d(MapTransform):
    """Round an image in [0, 1] to uint8 (0..255), dropping its metadata.

    Written here because MONAI has no rounding cast (``CastToTyped`` truncates). The cached 8-bit image is
    what the rest of the pipeline sees on both the cached and the uncached path, so the two agree exactly.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key]).as_tensor() if hasattr(d[key], "as_tensor") else torch.as_tensor(d[key])
            d[key] = (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return d
