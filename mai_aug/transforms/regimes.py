"""Augmentation regimes: named MONAI dictionary-transform pipelines parsed from YAML with ConfigParser."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged

from mai_aug.errors import MaiAugError
from mai_aug.transforms.guard import check_lateral_flip, lateral_axis
from mai_aug.transforms.intensity import ToUint8d

IMAGE, LABEL = "image", "label"
MIN_IMAGE_SIZE = 32


def default_regimes_file() -> Path:
    """The regimes shipped with the package."""
    return Path(str(resources.files("mai_aug") / "configs" / "regimes.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise MaiAugError(f"--regimes-file {path}: file not found") from None
    except yaml.YAMLError as e:
        raise MaiAugError(f"--regimes-file {path}: not valid YAML ({e})") from None
    if not isinstance(content, dict) or not isinstance(content.get("regimes", {}), dict):
        raise MaiAugError(f"--regimes-file {path}: expected a mapping with a 'regimes' mapping")
    return content


def merged_config(regimes_files: Sequence[str | Path] = ()) -> dict:
    """The shipped regimes with each user file's regimes (and ``load``) added or overriding, in order."""
    config = _read_yaml(default_regimes_file())
    for path in regimes_files:
        user = _read_yaml(Path(path))
        config["regimes"].update(user.get("regimes", {}))
        if "load" in user:
            config["load"] = user["load"]
    return config


def expanded_regimes(config: dict) -> dict[str, dict]:
    """The regimes with ``%`` macros (e.g. ``"%regimes#basic"``) replaced by what they point at."""
    parser = ConfigParser(copy.deepcopy(config))
    parser.resolve_macro_and_relative_ids()
    regimes = parser.get("regimes")
    bad = [name for name, spec in regimes.items() if spec is not None and not isinstance(spec, dict)]
    if bad:
        raise MaiAugError(f"regime {bad[0]!r}: expected a mapping (description, deterministic, random, ...)")
    return {name: spec or {} for name, spec in regimes.items()}


def available_regimes(regimes_files: Sequence[str | Path] = ()) -> dict[str, str]:
    """Regime name -> description."""
    return {name: str(spec.get("description", "")) for name, spec in expanded_regimes(merged_config(regimes_files)).items()}


@dataclass
class Regime:
    """One augmentation regime, instantiated for an image size.

    Attributes:
        name: the regime's name.
        description: one line for listings.
        load: decode, channel, resize and scale transforms: computed once per image and cached as uint8.
        deterministic: transforms applied to the cached image on every pass (training and evaluation).
        random: transforms applied in training only.
        allow_lateral_flip: the regime explicitly accepts a left-right flip.
        spec: the regime's YAML entry, for the run's config file.
    """

    name: str
    description: str
    load: list
    deterministic: list
    random: list
    allow_lateral_flip: bool = False
    spec: dict = field(default_factory=dict)
    load_size: int = 0
    load_spec: Any = None

    def cache_transform(self) -> Compose:
        """File -> uint8 tensor at the training size: the part worth caching."""
        return Compose([*self.load, ToUint8d(IMAGE), EnsureTyped(LABEL, dtype=torch.float32, track_meta=False)])

    def online_transform(self, train: bool) -> Compose:
        """Cached uint8 -> the network's float input: the deterministic part, and the random part in training.

        Runs with MONAI's lazy resampling, so consecutive spatial transforms (rotate, zoom, shear, crop) are fused
        into one interpolation: faster, and the image is resampled once instead of blurred three times.
        """
        head = [EnsureTyped(IMAGE, track_meta=True),
                ScaleIntensityRanged(IMAGE, a_min=0, a_max=255, b_min=0, b_max=1, dtype=torch.float32)]
        tail = [EnsureTyped(IMAGE, dtype=torch.float32, track_meta=False)]
        return Compose([*head, *self.deterministic, *(self.random if train else []), *tail], lazy=True)

    def full_transform(self, train: bool) -> Compose:
        """The uncached path: file -> network input in one Compose."""
        return Compose([self.cache_transform(), self.online_transform(train)])

    def describe(self) -> list[str]:
        """One line per transform, in order, with the part it belongs to."""
        lines = []
        for part, transforms in (("load", self.load), ("deterministic", self.deterministic), ("random", self.random)):
            lines += [f"{part:>13}: {_name(t)}" for t in transforms]
        return lines


def _name(transform: Any) -> str:
    return type(transform).__name__


def load_regime(name: str, image_size: int = 320, regimes_files: Sequence[str | Path] = ()) -> Regime:
    """Parse and instantiate regime ``name`` for ``image_size`` px images, refusing left-right flips.

    Raises:
        MaiAugError: unknown regime, bad YAML entry, image size too small, or a forbidden flip.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise MaiAugError(f"--image-size {image_size}: must be at least {MIN_IMAGE_SIZE} (DenseNet121 downsamples 32x)")
    config = merged_config(regimes_files)
    regimes = config["regimes"]
    if name not in regimes:
        raise MaiAugError(f"--regime: unknown regime {name!r} (available: {', '.join(regimes)})")
    config = copy.deepcopy(config)
    config["image_size"] = int(image_size)
    parser = ConfigParser(config)
    spec = expanded_regimes(config)[name]
    unknown = set(spec) - {"description", "load", "deterministic", "random", "allow_lateral_flip"}
    if unknown:
        raise MaiAugError(f"regime {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
    parts = {}
    for part in ("load", "deterministic", "random"):
        ref = f"regimes#{name}#{part}" if part in spec else ("load" if part == "load" else None)
        try:
            value = parser.get_parsed_content(ref, instantiate=True) if ref else []
        except Exception as e:  # ConfigParser wraps any instantiation error; keep its message, drop the traceback
            raise MaiAugError(f"regime {name!r}, part {part!r}: cannot build transforms: {e}") from None
        parts[part] = list(value or [])
    regime = Regime(
        name=name,
        description=str(spec.get("description", "")),
        load=parts["load"],
        deterministic=parts["deterministic"],
        random=parts["random"],
        allow_lateral_flip=bool(spec.get("allow_lateral_flip", False)),
        spec=copy.deepcopy(spec),
        load_size=int(image_size),
        load_spec=copy.deepcopy(spec.get("load", config["load"])),
    )
    if not regime.allow_lateral_flip:
        axis = lateral_axis(regime.load)
        for part in (regime.deterministic, regime.random):
            check_lateral_flip(name, part, axis)
    return regime
