"""MONAI's DenseNet121 for 14 findings, with ImageNet weights from the web or from a local torchvision file."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets import DenseNet121

from mai_aug.errors import MaiAugError

IMAGENET_URL = "https://download.pytorch.org/models/densenet121-a639ec97.pth"  # what MONAI's pretrained=True fetches
# torchvision names dense-layer parts either ``norm1`` (current) or ``norm.1`` (old checkpoints such as the one
# above); MONAI nests them under ``layers``.
_DENSE_LAYER = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
MIN_LOADED_FRACTION = 0.9

logger = logging.getLogger("mai_aug")


@dataclass
class LoadReport:
    """What a pretrained state dict gave the network."""

    loaded: int
    total: int
    skipped: list[str]
    source: str

    def __str__(self) -> str:
        return f"pretrained weights from {self.source}: loaded {self.loaded} of {self.total} tensors"


def build_network(n_classes: int, in_channels: int = 1, pretrained: str = "none") -> tuple[torch.nn.Module, LoadReport | None]:
    """DenseNet121(spatial_dims=2) with ``n_classes`` logits.

    Args:
        n_classes: outputs (one logit per finding).
        in_channels: 1 (grayscale) or 3 (the grayscale repeated, as ImageNet models expect).
        pretrained: ``none``, ``imagenet`` (downloads torchvision's weights) or a path to a torchvision-format
            densenet121 state dict.
    """
    if in_channels not in (1, 3):
        raise MaiAugError(f"--in-channels {in_channels}: expected 1 or 3")
    net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=n_classes, pretrained=False)
    if pretrained == "none":
        return net, None
    if pretrained == "imagenet":
        try:
            state = torch.hub.load_state_dict_from_url(IMAGENET_URL, progress=True, weights_only=True)
        except Exception as e:  # no network, proxy, certificate...: one clear line
            raise MaiAugError(f"--pretrained imagenet: cannot download {IMAGENET_URL} ({e}); "
                              "download it elsewhere and pass --pretrained PATH") from None
        source = IMAGENET_URL
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise MaiAugError(f"--pretrained {pretrained}: not 'none', 'imagenet' or an existing file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MaiAugError(f"--pretrained {path}: cannot read a state dict ({type(e).__name__}: {e})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        source = str(path)
    report = load_torchvision_densenet(net, state, source)
    logger.info(str(report))
    return net, report


def load_torchvision_densenet(net: torch.nn.Module, state: dict, source: str = "state dict") -> LoadReport:
    """Copy a torchvision densenet121 state dict into MONAI's DenseNet121; count what loaded.

    MONAI's own ``pretrained=True`` keeps only shape-matching tensors and says nothing, so a one-channel
    network silently keeps a random first convolution. Here the RGB filters are summed into one channel
    instead (a grayscale image seen as R = G = B gives the same response), and the count is reported.

    Raises:
        MaiAugError: if fewer than 90 % of the feature tensors match (not a densenet121 state dict).
    """
    if not isinstance(state, dict):
        raise MaiAugError(f"{source}: not a state dict")
    target = net.state_dict()
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        m = _DENSE_LAYER.match(key)
        if m:
            key = f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}"
        renamed[key] = value
    conv0 = "features.conv0.weight"
    if conv0 in renamed and conv0 in target and renamed[conv0].shape[1] == 3 and target[conv0].shape[1] == 1:
        renamed[conv0] = renamed[conv0].sum(dim=1, keepdim=True)
    loaded = {k: v for k, v in renamed.items() if k in target and target[k].shape == v.shape}
    features = [k for k in target if k.startswith("features.")]
    matched = sum(k in loaded for k in features)
    if matched < MIN_LOADED_FRACTION * len(features):
        raise MaiAugError(f"{source}: only {matched} of {len(features)} DenseNet121 feature tensors match; "
                          "is this a torchvision densenet121 state dict?")
    target.update(loaded)
    net.load_state_dict(target)
    skipped = sorted(k for k in renamed if k not in loaded)  # e.g. the 1000-class ImageNet classifier
    return LoadReport(loaded=len(loaded), total=len(target), skipped=skipped, source=source)


def torchvision_state_dict(net: DenseNet121, old_format: bool = False) -> dict[str, torch.Tensor]:
    """The inverse mapping: a MONAI DenseNet121 state dict under torchvision's names (for tests and exports)."""
    out = {}
    for key, value in net.state_dict().items():
        m = re.match(r"^(.*denselayer\d+)\.layers\.(norm|relu|conv)([12])\.(.*)$", key)
        if m:
            sep = "." if old_format else ""
            key = f"{m.group(1)}.{m.group(2)}{sep}{m.group(3)}.{m.group(4)}"
        key = key.replace("class_layers.out", "classifier")
        out[key] = value.clone()
    return out
