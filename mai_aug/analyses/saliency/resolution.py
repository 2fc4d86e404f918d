"""Is Grad-CAM's map fine enough for the pointing game? Its side at the target layer, against ``MIN_MAP_SIDE``.

A 2x2 map (ResNet18 or DenseNet121 at 64 px: stride 32) has its peaks on the image's corners, so hits say nothing
about where the network looks. ``mai-aug saliency`` warns below ``MIN_MAP_SIDE``; ``compare --saliency`` refuses
before any training unless ``--saliency-force``.
"""

from __future__ import annotations

import math

import torch

from mai_aug.core.errors import MaiAugError
from mai_aug.settings.config import TrainConfig

#: The smallest Grad-CAM map side (cells) at which the pointing game's peaks mean something.
MIN_MAP_SIDE = 8


def layer_output_size(network: torch.nn.Module, layer: str, example: torch.Tensor) -> tuple[int, int]:
    """(height, width) of ``layer``'s output for ``example`` (one forward, no gradients)."""
    shape: list[tuple[int, int]] = []
    hook = dict(network.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: shape.append(tuple(out.shape[-2:])))
    try:
        with torch.no_grad():
            network(example)
    finally:
        hook.remove()
    return shape[0]


def needed_side(feature: tuple[int, int], side: int) -> int:
    """The image side that gives a ``MIN_MAP_SIDE`` map at the same stride (``side / feature`` pixels a cell)."""
    return math.ceil(side * MIN_MAP_SIDE / min(feature))


def coarse_map(layer: str, feature: tuple[int, int], side: int, network: str = "the network") -> str | None:
    """One line saying the map is too coarse (None where it is at least ``MIN_MAP_SIDE`` on each side)."""
    if min(feature) >= MIN_MAP_SIDE:
        return None
    h, w = feature
    return (f"Grad-CAM's map ({layer} of {network}) is {h}x{w} at `image_size` {side}: too coarse for the pointing "
            f"game (peaks fall on a few cells, the image's corners at 2x2); `image_size` {needed_side(feature, side)} "
            f"gives {MIN_MAP_SIDE}x{MIN_MAP_SIDE}")


def dry_map_size(config: TrainConfig) -> tuple[str, tuple[int, int]]:
    """The default target layer and its map size for a run of ``config``: a dry forward of the untrained network
    on one zero image at ``config.image_size``."""
    from mai_aug.analyses.saliency.run import target_layer
    from mai_aug.networks.build import instantiate
    from mai_aug.networks.spec import resolve_network

    side, channels = int(config.image_size), int(config.in_channels)
    spec = resolve_network(config.network, config.network_args, 2, channels, side)
    network = instantiate(spec, channels, side).eval()
    example = torch.zeros(1, channels, side, side)
    layer = target_layer(network, example)
    return layer, layer_output_size(network, layer, example)


def check_saliency_map(config: TrainConfig, force: bool = False) -> None:
    """``compare --saliency``: refuse a map smaller than ``MIN_MAP_SIDE`` (before anything trains) unless ``force``.

    Raises:
        MaiAugError: the map size, the network and the image size that would give an 8x8 map, in one line.
    """
    if force:
        return
    layer, feature = dry_map_size(config)
    message = coarse_map(layer, feature, int(config.image_size), str(config.network))
    if message is not None:
        raise MaiAugError(f"`saliency`: {message}, or pass `saliency_force`")
