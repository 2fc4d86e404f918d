"""A MONAI classifier for 14 findings (DenseNet121 by default), checked on the run's images, with ImageNet weights.

ImageNet weights load for the families whose torchvision layout is known (DenseNet, ResNet), from the web or a local
torchvision state dict, with the one-channel first-layer adaptation and a count of the tensors loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mai_aug.core.choices import IN_CHANNELS
from mai_aug.core.errors import MaiAugError, first_line
from mai_aug.networks.spec import FAMILIES, NetworkSpec, resolve_network

# torchvision's ImageNet weights (for DenseNet, the files MONAI's own ``pretrained=True`` fetches)
IMAGENET_URLS = {
    "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
    "densenet169": "https://download.pytorch.org/models/densenet169-b2777c0a.pth",
    "densenet201": "https://download.pytorch.org/models/densenet201-c1103571.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}
IMAGENET_URL = IMAGENET_URLS["densenet121"]
# torchvision names dense-layer parts either ``norm1`` (current) or ``norm.1`` (old checkpoints such as the one
# above); MONAI nests them under ``layers``.
_DENSE_LAYER = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
MIN_LOADED_FRACTION = 0.9

logger = logging.getLogger("mai_aug")


def _densenet_key(key: str) -> str:
    m = _DENSE_LAYER.match(key)
    return f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else key


@dataclass(frozen=True)
class WeightLayout:
    """How a torchvision state dict maps onto a MONAI family: key renaming, first convolution, classifier head."""

    rename: Callable[[str], str]
    first_conv: str
    head: str  # prefix of the (never loaded) classifier in MONAI's names


LAYOUTS = {
    "densenet": WeightLayout(_densenet_key, "features.conv0.weight", "class_layers."),
    # MONAI's ResNet (built by FAMILIES["resnet"]) uses torchvision's names: conv1, bn1, layerN.K.convM, downsample.0
    "resnet": WeightLayout(lambda key: key, "conv1.weight", "fc."),
}


@dataclass
class LoadReport:
    """What a pretrained state dict gave the network."""

    loaded: int
    total: int
    skipped: list[str]
    source: str

    def __str__(self) -> str:
        return f"pretrained weights from {self.source}: loaded {self.loaded} of {self.total} tensors"


class FirstOutput(torch.nn.Module):
    """A network whose forward returns ``(logits, extras)`` (MONAI's ViT), seen as one that returns the logits."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def build_network(n_classes: int, in_channels: int = 1, pretrained: str = "none", spec: NetworkSpec | None = None,
                  image_size: int | None = None, where: str = "`network`",
                  trust: bool | None = None) -> tuple[torch.nn.Module, LoadReport | None]:
    """The network of ``spec`` (default: DenseNet121) with ``n_classes`` logits, checked and maybe pretrained.

    Args:
        n_classes: outputs (one logit per finding).
        in_channels: 1 (grayscale) or 3 (the grayscale repeated, as ImageNet models expect).
        pretrained: ``none``, ``imagenet`` (downloads torchvision's weights) or a path to a torchvision-format
            state dict of the same architecture (DenseNet and ResNet families only).
        spec: from :func:`mai_aug.networks.spec.resolve_network`; None: DenseNet121.
        image_size: when given, a forward pass on one ``(1, in_channels, S, S)`` image must give ``(1, n_classes)``.
        where: what to name in messages.
        trust: build through MONAI's ConfigParser (``$`` expressions, any ``_target_``); None: the command line's.
    """
    if in_channels not in IN_CHANNELS:
        raise MaiAugError(f"`in_channels` {in_channels}: expected {' or '.join(map(str, IN_CHANNELS))}")
    spec = spec or resolve_network("densenet121", {}, n_classes, in_channels, image_size or 320)
    net = instantiate(spec, in_channels, image_size, where, trust)
    if image_size is not None:
        check_forward(net, spec, n_classes, in_channels, image_size, where)
    if pretrained == "none":
        return net, None
    state, source = read_pretrained(pretrained, spec)
    report = load_torchvision(net, state, spec, source)
    logger.info(str(report))
    return net, report


def instantiate(spec: NetworkSpec, in_channels: int = 1, image_size: int | None = None,
                where: str = "`network`", trust: bool | None = None) -> torch.nn.Module:
    """Build ``spec``: a plain call of the ``monai.networks.nets`` class, or MONAI's ConfigParser when trusted."""
    from mai_aug.core.trust import resolve_trust

    try:
        if resolve_trust(trust):  # --trust-config: `$` expressions and any importable _target_, as in regimes files
            from monai.bundle import ConfigParser

            net = ConfigParser({"net": {"_target_": spec.target, **spec.args}}).get_parsed_content("net")
        else:  # data only: the class is looked up in monai.networks.nets, never imported from elsewhere
            import monai.networks.nets as nets

            net = getattr(nets, spec.target.rpartition(".")[2])(**spec.args)
    except Exception as e:  # a constructor's ValueError, TypeError (bad args), OptionalImportError (einops)...
        size = f"{image_size} px " if image_size else ""
        hint = "; install the missing package (pip install einops for ViT)" if isinstance(e, ImportError) else ""
        raise MaiAugError(f"{where} {spec.name}: cannot build it for {in_channels}-channel {size}images "
                          f"({type(e).__name__}: {first_line(e)}){hint}") from None
    if not isinstance(net, torch.nn.Module):
        raise MaiAugError(f"{where} {spec.name}: {spec.target} made a {type(net).__name__}, not a torch module")
    return FirstOutput(net) if FAMILIES[spec.family].tuple_output else net


@torch.no_grad()
def check_forward(net: torch.nn.Module, spec: NetworkSpec, n_classes: int, in_channels: int, image_size: int,
                  where: str = "`network`") -> None:
    """One forward pass of a blank ``(1, C, S, S)`` image in eval mode: the network must take it, give (1, n)."""
    was_training = net.training
    net.eval()  # batch norm's statistics stay untouched and a batch of one is allowed
    try:
        out = net(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as e:  # too small an image for the network's downsampling, a channel mismatch...
        raise MaiAugError(f"{where} {spec.name} cannot take {in_channels}-channel {image_size} px images "
                          f"({type(e).__name__}: {first_line(e)})") from None
    finally:
        net.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, n_classes):
        raise MaiAugError(f"{where} {spec.name}: gives {shape} for one {image_size} px image, expected "
                          f"(1, {n_classes}) (one logit per finding)")


def read_pretrained(pretrained: str, spec: NetworkSpec) -> tuple[dict, str]:
    """The state dict named by ``--pretrained`` (``imagenet`` or a file) and where it came from."""
    if spec.family not in LAYOUTS:
        raise MaiAugError(f"`pretrained` {pretrained}: weights load only into the DenseNet and ResNet families "
                          f"(torchvision layouts); {spec.name} is a {spec.family}: use `pretrained` none")
    if pretrained == "imagenet":
        url = IMAGENET_URLS.get(spec.name)
        if url is None:
            raise MaiAugError(f"`pretrained` imagenet: no ImageNet weights known for {spec.name} (known: "
                              f"{', '.join(IMAGENET_URLS)}); pass `pretrained` PATH to a torchvision state dict")
        try:
            return torch.hub.load_state_dict_from_url(url, progress=True, weights_only=True), url
        except Exception as e:  # no network, proxy, certificate...: one clear line
            raise MaiAugError(f"`pretrained` imagenet: cannot download {url} ({e}); "
                              "download it elsewhere and pass `pretrained` PATH") from None
    path = Path(pretrained)
    if not path.is_file():
        raise MaiAugError(f"`pretrained` {pretrained}: not 'none', 'imagenet' or an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MaiAugError(f"`pretrained` {path}: cannot read a state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state, str(path)


def load_torchvision(net: torch.nn.Module, state: dict, spec: NetworkSpec, source: str = "state dict") -> LoadReport:
    """Copy a torchvision state dict into the MONAI network of ``spec``; count what loaded.

    MONAI's own loaders keep only shape-matching tensors and say nothing (DenseNet) or demand an exact match
    (ResNet's local file), so a one-channel network would keep a random first convolution or fail. Here the RGB
    filters are summed into one channel instead (a grayscale image seen as R = G = B gives the same response),
    and the count is reported.

    Raises:
        MaiAugError: if fewer than 90 % of the feature tensors (all but the classifier) match.
    """
    if not isinstance(state, dict):
        raise MaiAugError(f"{source}: not a state dict")
    layout = LAYOUTS[spec.family]
    target = net.state_dict()
    renamed = {layout.rename(str(key).removeprefix("module.")): value for key, value in state.items()}
    conv = layout.first_conv
    if conv in renamed and conv in target and renamed[conv].ndim == 4 and renamed[conv].shape[1] == 3 \
            and target[conv].shape[1] == 1:
        renamed[conv] = renamed[conv].sum(dim=1, keepdim=True)
    loaded = {k: v for k, v in renamed.items() if k in target and target[k].shape == v.shape}
    features = [k for k in target if not k.startswith(layout.head)]
    matched = sum(k in loaded for k in features)
    if matched < MIN_LOADED_FRACTION * len(features):
        raise MaiAugError(f"{source}: only {matched} of {len(features)} {spec.name} feature tensors match; "
                          f"is this a torchvision {spec.name} state dict?")
    target.update(loaded)
    net.load_state_dict(target)
    skipped = sorted(k for k in renamed if k not in loaded)  # e.g. the 1000-class ImageNet classifier
    return LoadReport(loaded=len(loaded), total=len(target), skipped=skipped, source=source)


def load_torchvision_densenet(net: torch.nn.Module, state: dict, source: str = "state dict") -> LoadReport:
    """:func:`load_torchvision` for MONAI's DenseNet121."""
    return load_torchvision(net, state, NetworkSpec("densenet121", "densenet", "", {}), source)


def torchvision_state_dict(net: torch.nn.Module, old_format: bool = False) -> dict[str, torch.Tensor]:
    """The inverse mapping: a MONAI DenseNet state dict under torchvision's names (for tests and exports)."""
    out = {}
    for key, value in net.state_dict().items():
        m = re.match(r"^(.*denselayer\d+)\.layers\.(norm|relu|conv)([12])\.(.*)$", key)
        if m:
            sep = "." if old_format else ""
            key = f"{m.group(1)}.{m.group(2)}{sep}{m.group(3)}.{m.group(4)}"
        key = key.replace("class_layers.out", "classifier")
        out[key] = value.clone()
    return out
