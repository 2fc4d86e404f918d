"""A regime's online part compiled into one batched stage that runs on the training device.

The loader path runs a regime's deterministic and random transforms per image in the DataLoader workers. When
every one of them is a transform this module knows (MONAI's affine ``RandRotated``, ``RandZoomd``, ``RandAffined``;
``NormalizeIntensityd``, ``RandGaussianNoised``, ``RandAdjustContrastd``), the DataLoader only gathers the cached
uint8 images and :class:`BatchedStage` runs the rest on the whole batch where the network runs: consecutive affine
transforms with the same interpolation and padding become one matrix per image and one ``grid_sample`` call.

Draws come from a ``torch.Generator`` seeded by (seed, epoch, iteration, rank): a pure function of the position in
the run, so a resumed run draws what an uninterrupted one would. Evaluation never runs the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.utils import to_norm_affine
from monai.transforms import NormalizeIntensityd, RandAdjustContrastd, RandGaussianNoised

from mai_aug.core.choices import AUGMENT_ON as AUGMENT_ON
from mai_aug.core.errors import MaiAugError
from mai_aug.transforms.batched_affine import Draw, compile_draw, fired, mirrored, uniform
from mai_aug.transforms.guard import SITUS_INVERSUS

logger = logging.getLogger("mai_aug")

# MONAI padding names (grid_sample's, numpy's as RandZoomd uses them, torch.pad's) -> grid_sample's, where equal
PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection", "edge": "border",
           "replicate": "border", "constant": "zeros", "symmetric": "reflection"}
GRID_MODES = ("bilinear", "nearest", "bicubic")
SEED_TAG = 0xA5  # keeps the stage's seeds apart from the loader's per-sample seeds


def affine_grid_2d(theta: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=False)`` for 2-D.

    Hand-written because torch's affine_grid multiplies a ``(H * W, 3)`` base grid by each matrix; each grid
    coordinate is a column term plus a row term, so one broadcast sum per coordinate does: on one CPU thread at
    320 px, batch 8, 8.4 ms for torch's against about 2 ms here (same values to 2e-7).
    """
    h, w = shape
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    grid = torch.empty(len(theta), h, w, 2, device=theta.device, dtype=theta.dtype)
    for k in range(2):
        row = theta[:, k, 1, None] * ys + theta[:, k, 2, None]
        torch.add(row[:, :, None], (theta[:, k, 0, None] * xs)[:, None, :], out=grid[..., k])
    return grid


def stage_seed(seed: int, epoch: int, iteration: int, rank: int = 0) -> int:
    """A 63-bit seed for one batch of the run."""
    state = np.random.SeedSequence([seed, epoch, iteration, rank, SEED_TAG]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


@dataclass
class Resample:
    """Consecutive affine transforms with one interpolation and padding: one matrix per image, one resampling."""

    draws: list[Draw]
    names: list[str]
    mode: str
    padding: str
    allow_mirror: bool = False

    def matrices(self, gen: torch.Generator, n: int, shape: tuple[int, int]) -> torch.Tensor:
        """The composed ``(n, 3, 3)`` index-space matrices (output pixel -> input point), first transform left."""
        out = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        for draw in self.draws:
            out = out @ draw(gen, n, shape)[0]
        return out

    def __call__(self, images: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        shape = (int(images.shape[-2]), int(images.shape[-1]))
        theta = self.matrices(gen, len(images), shape)
        bad = mirrored(theta)
        if not self.allow_mirror and bool(bad.any()):
            det = float(torch.linalg.det(theta[bad][0, :2, :2]))
            raise MaiAugError(f"batched augmentation ({' + '.join(self.names)}): a drawn matrix has a negative "
                              f"determinant ({det:.3f}), i.e. it mirrors the image: {SITUS_INVERSUS}")
        # MONAI's AffineTransform(normalized=False, reverse_indexing=True) steps, with a faster grid on CPU
        norm = to_norm_affine(theta, shape, shape, align_corners=False)[:, [1, 0, 2]][:, :, [1, 0, 2]]
        grid = affine_grid_2d(norm.to(images.device, images.dtype), shape)
        return F.grid_sample(images, grid, mode=self.mode, padding_mode=self.padding, align_corners=False)


@dataclass
class Normalize:
    """``NormalizeIntensityd`` with its defaults: ``(x - mean) / std`` per image (per channel if channel_wise)."""

    channel_wise: bool = False

    def __call__(self, images: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        dims = (-2, -1) if self.channel_wise else (-3, -2, -1)
        # two passes (mean, then the centred squares) instead of torch.std_mean: 4.5 ms -> 0.5 ms on CPU at 320 px
        centred = images - images.mean(dim=dims, keepdim=True)
        std = centred.square().mean(dim=dims, keepdim=True).sqrt_()
        return centred.div_(std.masked_fill_(std == 0, 1.0))  # MONAI divides by 1 when std is 0


@dataclass
class GaussianNoise:
    """``RandGaussianNoised``: with probability ``prob``, noise N(mean, s) with s from U[0, std) (or std)."""

    prob: float
    mean: float
    std: float
    sample_std: bool

    def __call__(self, images: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        n = len(images)
        on = fired(gen, n, self.prob)
        std = uniform(gen, n, 0.0, self.std) if self.sample_std else torch.full((n,), self.std, dtype=torch.float64)
        std = std.to(images.device, images.dtype).view(-1, 1, 1, 1)
        noise = torch.randn(images.shape, generator=noise_gen, device=images.device, dtype=images.dtype)
        return torch.where(on.to(images.device).view(-1, 1, 1, 1), images + noise * std + self.mean, images)


@dataclass
class AdjustContrast:
    """``RandAdjustContrastd`` (no inversion, no retained stats): with probability ``prob``, a gamma from
    U[low, high) on the image's own range: ``((x - min) / (range + 1e-7)) ** gamma * range + min``."""

    prob: float
    low: float
    high: float

    def __call__(self, images: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        n = len(images)
        on = fired(gen, n, self.prob)
        gamma = torch.where(on, uniform(gen, n, self.low, self.high), 1.0).to(images.device, images.dtype)
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        span = images.amax(dim=(1, 2, 3), keepdim=True) - lo
        out = ((images - lo) / (span + 1e-7)) ** gamma.view(-1, 1, 1, 1) * span + lo
        return torch.where(on.to(images.device).view(-1, 1, 1, 1), out, images)


Step = Resample | Normalize | GaussianNoise | AdjustContrast


@dataclass
class BatchedStage:
    """Cached uint8 batches -> the network's float input: a regime's deterministic and random parts, batched.

    Attributes:
        steps: the compiled transforms, in the regime's order.
        names: the MONAI transforms they stand for, for the log line.
        seed: the run's seed.
        rank: the process's rank (each rank draws its own parameters).
    """

    steps: list[Step]
    names: list[str]
    seed: int = 0
    rank: int = 0
    calls: int = field(default=0, repr=False)

    def __call__(self, images: torch.Tensor, epoch: int, iteration: int) -> torch.Tensor:
        """Augment one batch ``(B, C, H, W)`` of uint8 images (0..255) drawn at ``(epoch, iteration)``."""
        self.calls += 1
        x = images.div(255.0)  # uint8 -> float32 in one pass, as the loader path's ScaleIntensityRanged
        seed = stage_seed(self.seed, epoch, iteration, self.rank)
        gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=x.device).manual_seed(seed)
        for step in self.steps:
            x = step(x, gen, noise_gen)
        return x.contiguous()

    def describe(self) -> str:
        """One phrase: the steps, with how many resamplings."""
        resamples = sum(isinstance(s, Resample) for s in self.steps)
        return f"{' -> '.join(self.names)} ({resamples} batched resampling{'s' * (resamples != 1)})"


def _image_only(t: Any) -> bool:
    return tuple(getattr(t, "keys", ())) == ("image",)


def _spatial_settings(t: Any) -> tuple[str, str] | str:
    """(grid_sample mode, padding) of an affine MONAI transform, or why they have no grid_sample equivalent."""
    mode, padding = str(t.mode[0]), str(t.padding_mode[0])
    align = getattr(t, "align_corners", (False,))[0]
    zoom = hasattr(t, "rand_zoom")
    if zoom and (mode != "bilinear" or t.rand_zoom.kwargs):
        return f"{type(t).__name__} mode {mode!r} (only bilinear zooms resample like grid_sample)"
    if mode not in GRID_MODES or padding not in PADDING or align:
        return f"{type(t).__name__} mode {mode!r}, padding {padding!r}, align_corners {align!r}"
    return mode, PADDING[padding]


def _intensity_step(t: Any) -> Step | str:
    """The batched step of an intensity transform, or why there is none."""
    if isinstance(t, NormalizeIntensityd):
        n = t.normalizer
        if n.subtrahend is not None or n.divisor is not None or n.nonzero:
            return "NormalizeIntensityd with subtrahend, divisor or nonzero"
        return Normalize(bool(n.channel_wise))
    if isinstance(t, RandGaussianNoised):
        g = t.rand_gaussian_noise
        return GaussianNoise(float(t.prob), float(g.mean), float(g.std), bool(g.sample_std))
    if isinstance(t, RandAdjustContrastd):
        a = t.adjuster
        if a.invert_image or a.retain_stats:
            return "RandAdjustContrastd with invert_image or retain_stats"
        return AdjustContrast(float(t.prob), float(a.gamma[0]), float(a.gamma[1]))
    return f"{type(t).__name__} has no batched equivalent here"


def compile_transforms(transforms: Sequence[Any], allow_mirror: bool = False) -> tuple[list[Step], list[str]] | str:
    """The batched steps of ``transforms`` (consecutive affine ones with equal settings fused), or why not."""
    steps: list[Step] = []
    names: list[str] = []
    for t in transforms:
        name = type(t).__name__
        if not _image_only(t):
            return f"{name} acts on keys {list(getattr(t, 'keys', []))}, not just 'image'"
        draw = compile_draw(t)
        if isinstance(draw, str):
            return draw
        if draw is None:
            step = _intensity_step(t)
            if isinstance(step, str):
                return step
            steps.append(step)
            names.append(name)
            continue
        settings = _spatial_settings(t)
        if isinstance(settings, str):
            return settings
        last = steps[-1] if steps else None
        if isinstance(last, Resample) and (last.mode, last.padding) == settings:
            last.draws.append(draw)
            last.names.append(name)
            names[-1] += f"+{name}"
            continue
        steps.append(Resample([draw], [name], *settings, allow_mirror=allow_mirror))
        names.append(name)
    return steps, names


def compile_regime(regime: Any, seed: int = 0, rank: int = 0) -> BatchedStage | str:
    """``regime``'s deterministic and random parts as one :class:`BatchedStage`, or why they cannot be compiled."""
    compiled = compile_transforms([*regime.deterministic, *regime.random], regime.allow_lateral_flip)
    if isinstance(compiled, str):
        return compiled
    return BatchedStage(*compiled, seed=seed, rank=rank)


def choose_stage(setting: str, regime: Any, device: torch.device, seed: int = 0, rank: int = 0) -> BatchedStage | None:
    """The device stage to train ``regime`` with, or None for the per-sample loader path; logs which runs.

    Args:
        setting: ``loader``, ``device`` or ``auto`` (device on CUDA and on CPU: the faster path in
            ``benchmarks/pipeline_throughput.py`` on both).
        regime: the regime.
        device: the training device.
        seed: the run's seed.
        rank: the process's rank.

    Raises:
        MaiAugError: an unknown setting.
    """
    if setting not in AUGMENT_ON:
        raise MaiAugError(f"`augment_on` {setting!r}: expected one of {', '.join(AUGMENT_ON)}")
    if setting == "loader":
        logger.info(f"augmentation: per-sample loader path (`augment_on` loader), regime {regime.name!r}")
        return None
    stage = compile_regime(regime, seed, rank)
    if isinstance(stage, str):
        logger.info(f"augmentation: per-sample loader path; regime {regime.name!r} cannot run batched ({stage})")
        return None
    logger.info(f"augmentation: batched on {device.type} (`augment_on` {setting}): "
                f"{stage.describe() if stage.steps else 'uint8 to float only'}")
    return stage
