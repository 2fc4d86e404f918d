"""Augmentation regimes: named MONAI dictionary-transform pipelines parsed from YAML with ConfigParser."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.bundle.utils import ID_REF_KEY
from monai.transforms import Compose, EnsureTyped, ScaleIntensityRanged

from mai_aug.core.errors import MaiAugError
from mai_aug.core.names import check_name
from mai_aug.core.trust import check_data_only, monai_locator, resolve_trust, walk_config
from mai_aug.core.user_yaml import read_user_yaml
from mai_aug.transforms.guard import check_deterministic, check_no_mirror
from mai_aug.transforms.intensity import ToUint8d
from mai_aug.transforms.lazy import fused

IMAGE, LABEL = "image", "label"
MIN_IMAGE_SIZE = 32
PARTS = ("load", "deterministic", "random")
SPEC_KEYS = frozenset({"description", *PARTS, "allow_lateral_flip"})
MAX_REFERENCE_DEPTH = 20
MAX_MAGNITUDE = 1e12  # no transform argument (probability, range, size, angle) is anywhere near this
_GUARDED: set[tuple[str, str, int]] = set()  # (regime, spec, size) whose transforms passed the guards: _guard


def default_regimes_file() -> Path:
    """The regimes shipped with the package."""
    return Path(str(resources.files("mai_aug") / "configs" / "regimes.yaml"))


def _read_yaml(path: Path) -> dict:
    content = read_user_yaml(path, f"`regimes_file` {path}")
    if not isinstance(content, dict) or not isinstance(content.get("regimes"), dict):
        keys = f" (it has {', '.join(map(repr, content))})" if isinstance(content, dict) else ""
        raise MaiAugError(f"`regimes_file` {path}: expected a mapping with a 'regimes' mapping{keys}")
    return content


def merged_config(regimes_files: Sequence[str | Path] = (), trust: bool | None = None) -> dict:
    """The shipped regimes with each user file's regimes (and ``load``) added or overriding, in order.

    Each file is checked to be data only (see :mod:`mai_aug.core.trust`) before anything parses it.
    """
    config = _read_yaml(default_regimes_file())
    for path in regimes_files:
        user = _read_yaml(Path(path))
        for name in user["regimes"]:  # names become folders (OUT/<regime>/seed-<k>) and ConfigParser ids
            check_name(name, f"`regimes_file` {path}: regime")
        check_data_only(user, f"`regimes_file` {path}", trust)
        config["regimes"].update(user.get("regimes", {}))
        if "load" in user:
            config["load"] = user["load"]
    return config


def _parser(config: dict) -> ConfigParser:
    """A ConfigParser over a copy of ``config`` with ``%`` macros and relative ids resolved (nothing evaluated)."""
    parser = ConfigParser(copy.deepcopy(config))
    try:
        parser.resolve_macro_and_relative_ids()
    except (KeyError, ValueError, IndexError, TypeError) as e:
        where, macro = _unresolved_macro(config, parser) or ("regimes", "a '%' macro")
        raise MaiAugError(f"{where}: cannot resolve {macro} (it points at nothing: {e}); "
                          f"macros look like '%regimes#complex#random'") from None
    return parser


def _unresolved_macro(node: Any, parser: ConfigParser, where: str = "") -> tuple[str, str] | None:
    """The first ``%`` macro in ``node`` whose target is missing, with its place (``regimes.mine.random``)."""
    if isinstance(node, str) and node.startswith("%"):
        try:
            parser[node[1:]]
        except (KeyError, ValueError, IndexError, TypeError):
            return where, repr(node)
        return None
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found = _unresolved_macro(child, parser, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def expanded_regimes(config: dict) -> dict[str, dict]:
    """The regimes with ``%`` macros (e.g. ``"%regimes#basic"``) replaced by what they point at."""
    regimes = _parser(config).get("regimes")
    bad = [name for name, spec in regimes.items() if spec is not None and not isinstance(spec, dict)]
    if bad:
        raise MaiAugError(f"regime {bad[0]!r}: expected a mapping (description, deterministic, random, ...)")
    return {name: spec or {} for name, spec in regimes.items()}


def available_regimes(regimes_files: Sequence[str | Path] = (), trust: bool | None = None) -> dict[str, str]:
    """Regime name -> description."""
    regimes = expanded_regimes(merged_config(regimes_files, trust))
    return {name: str(spec.get("description", "")) for name, spec in regimes.items()}


def resolved_spec(name: str, config: dict) -> dict:
    """Regime ``name`` of ``config`` as plain data: macros expanded, ``@`` references (``@image_size``...)
    replaced by their values, its ``load`` (own or shared) included. This is what a run folder stores."""
    parser = _parser(config)
    spec = dict(parser.get(f"regimes#{name}") or {})
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise MaiAugError(f"regime {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
    spec = {
        "description": str(spec.get("description", "")),
        "load": spec.get("load", parser.get("load")),
        "deterministic": spec.get("deterministic") or [],
        "random": spec.get("random") or [],
        "allow_lateral_flip": _lateral_flip_opt_in(name, spec),
    }
    return _substitute(spec, parser, name, 0)


def _lateral_flip_opt_in(name: str, spec: dict) -> bool:
    """The regime's ``allow_lateral_flip``: a real YAML boolean only (a quoted "false" would read as true)."""
    value = spec.get("allow_lateral_flip", False)
    if not isinstance(value, bool):
        raise MaiAugError(f"regime {name!r}: allow_lateral_flip must be true or false (unquoted), not {value!r}")
    return value


def _substitute(node: Any, parser: ConfigParser, name: str, depth: int) -> Any:
    """``node`` with every ``"@id"`` string replaced by (a copy of) the config value it references."""
    if depth > MAX_REFERENCE_DEPTH:
        raise MaiAugError(f"regime {name!r}: references nest deeper than {MAX_REFERENCE_DEPTH} (a cycle?)")
    if isinstance(node, dict):
        return {k: _substitute(v, parser, name, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, parser, name, depth) for v in node]
    if isinstance(node, str) and node.startswith(ID_REF_KEY):
        try:
            target = parser.get(node[len(ID_REF_KEY):])
        except (KeyError, ValueError, IndexError, TypeError):
            raise MaiAugError(f"regime {name!r}: reference {node!r} points at nothing") from None
        return _substitute(copy.deepcopy(target), parser, name, depth + 1)
    return node


@dataclass
class Regime:
    """One augmentation regime, instantiated for an image size.

    Attributes:
        name: the regime's name.
        description: one line for listings.
        load: decode, channel, resize and scale transforms: computed once per image and cached as uint8.
        deterministic: transforms applied to the cached image on every pass (training and evaluation).
        random: transforms applied in training only.
        allow_lateral_flip: the regime explicitly accepts transforms that mirror the image.
        spec: the fully resolved plain-data spec (see :func:`resolved_spec`); rebuild with :func:`regime_from_spec`.
        load_size: the training image size.
        load_spec: the resolved ``load`` part (keys the disk cache).
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
    online_parts: tuple[list, list] = field(default_factory=lambda: ([], []), repr=False)

    def cache_transform(self) -> Compose:
        """File -> uint8 tensor at the training size: the part worth caching."""
        return Compose([*self.load, ToUint8d(IMAGE), EnsureTyped(LABEL, dtype=torch.float32, track_meta=False)])

    def online_transform(self, train: bool) -> Compose:
        """Cached uint8 -> the network's float input: the deterministic part, and the random part in training.

        Consecutive spatial transforms that lazy resampling reproduces exactly run as one lazy block (one
        interpolation instead of several); any other transform runs on its own with its own options
        (:mod:`mai_aug.transforms.lazy`). Evaluation runs exactly the deterministic part training runs.
        """
        head = [EnsureTyped(IMAGE, track_meta=True),
                ScaleIntensityRanged(IMAGE, a_min=0, a_max=255, b_min=0, b_max=1, dtype=torch.float32)]
        tail = [EnsureTyped(IMAGE, dtype=torch.float32, track_meta=False)]
        deterministic, random = self.online_parts
        # lazy=None: each block keeps its own setting (a Compose-level False would switch the blocks off)
        return Compose([*head, *deterministic, *(random if train else []), *tail], lazy=None)

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


def regime_from_spec(name: str, spec: dict, image_size: int, trust: bool = False) -> Regime:
    """Build regime ``name`` from a resolved spec (:func:`resolved_spec`, or a run folder's stored one).

    The spec is checked to be data only unless ``trust``; the built regime passes the mirror guard (unless
    ``allow_lateral_flip``) and the deterministic check.

    Raises:
        MaiAugError: code in an untrusted spec, unknown keys, a transform that cannot be built, a mirror, or
            a random transform in ``deterministic``.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("load"), list):
        raise MaiAugError(f"regime {name!r}: not a resolved regime spec (it has no 'load' list)")
    check_data_only(spec, f"regime {name!r}", trust)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise MaiAugError(f"regime {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
    _check_numbers(name, spec)
    parser = ConfigParser({"image_size": int(image_size), "spec": copy.deepcopy(spec)})
    parser.locator = monai_locator()  # its table is the one ConfigParser builds, kept (see monai_locator)
    parts = {part: _instantiate(parser, name, part) for part in PARTS}
    regime = Regime(
        name=name,
        description=str(spec.get("description", "")),
        load=parts["load"],
        deterministic=parts["deterministic"],
        random=parts["random"],
        allow_lateral_flip=_lateral_flip_opt_in(name, spec),
        spec=copy.deepcopy(spec),
        load_size=int(image_size),
        load_spec=copy.deepcopy(spec["load"]),
        online_parts=(fused(parts["deterministic"]), fused(parts["random"])),
    )
    _guard(regime, spec, trust)
    return regime


def _guard(regime: Regime, spec: dict, trust: bool) -> None:
    """The mirror and determinism guards, probed once per process for each data-only spec and image size.

    A study builds each regime many times (its plan, each job's training, evaluation and analyses) and probing costs
    about 80 ms. A data-only spec builds the same transforms each time, so its verdict is kept; a trusted spec may
    compute its transforms, so it is probed every time.
    """
    key = None if trust else _guard_key(regime, spec)
    if key is not None and key in _GUARDED:
        return
    if not regime.allow_lateral_flip:
        check_no_mirror(regime.name, regime.load, regime.deterministic, regime.random)
    check_deterministic(regime.name, regime.deterministic)
    if key is not None:
        _GUARDED.add(key)


def _guard_key(regime: Regime, spec: dict) -> tuple[str, str, int] | None:
    """The spec as canonical JSON with the regime's name and size; None (probe every time) where JSON cannot sort
    it (a mapping with both number and string keys)."""
    try:
        return regime.name, json.dumps(spec, sort_keys=True, default=repr), regime.load_size
    except TypeError:
        return None


def _check_numbers(name: str, spec: dict) -> None:
    """Refuse a number no transform takes (``prob: 1e400``, a 400-digit integer) before MONAI tries to build it.

    Raises:
        MaiAugError: one line naming the regime, part, transform, argument and value.
    """
    for part in PARTS:
        entries = spec.get(part) or []
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            target = entry.get("_target_", f"entry {i}") if isinstance(entry, dict) else f"entry {i}"
            for where, _, value in walk_config(entry, "", None):
                if _out_of_range(value):
                    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:20]}... ({len(repr(value))} characters)"
                    raise MaiAugError(f"regime {name!r}, {part}[{i}] {target}: {where} = {shown} is not a finite "
                                      f"number of at most {MAX_MAGNITUDE:g} in size")


def _out_of_range(value: Any) -> bool:
    """A number (or a string YAML left unparsed, such as ``1e400``) that is infinite, NaN or beyond MAX_MAGNITUDE."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except (ValueError, OverflowError):
            return False
    if isinstance(value, int):
        return abs(value) > MAX_MAGNITUDE
    return isinstance(value, float) and not abs(value) <= MAX_MAGNITUDE


def _instantiate(parser: ConfigParser, name: str, part: str) -> list:
    """The transforms of one part of the spec."""
    try:
        value = parser.get_parsed_content(f"spec#{part}", instantiate=True) if f"spec#{part}" in parser else []
    except Exception as e:  # ConfigParser wraps any instantiation error; keep its message, drop the traceback
        raise MaiAugError(f"regime {name!r}, part {part!r}: cannot build transforms: {e}") from None
    if value is not None and not isinstance(value, (list, tuple)):
        raise MaiAugError(f"regime {name!r}, part {part!r}: expected a list of transforms")
    for i, t in enumerate(value or []):
        if not callable(t):
            raise MaiAugError(f"regime {name!r}, part {part!r}: entry {i} is a {type(t).__name__}, not a transform")
    return list(value or [])


def load_regime(name: str, image_size: int = 320, regimes_files: Sequence[str | Path] = (),
                trust: bool | None = None) -> Regime:
    """Parse and instantiate regime ``name`` for ``image_size`` px images.

    Args:
        name: the regime.
        image_size: the training image size.
        regimes_files: user YAML files adding or overriding regimes.
        trust: allow code in the files (``--trust-config``); None: the command line's setting.

    Raises:
        MaiAugError: unknown regime, code in an untrusted file, bad YAML entry, image size too small, a
            transform that mirrors the image, or a random transform in ``deterministic``.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise MaiAugError(f"`image_size` {image_size}: must be at least {MIN_IMAGE_SIZE} (DenseNet121 downsamples 32x)")
    config = merged_config(regimes_files, trust)
    if name not in config["regimes"]:
        raise MaiAugError(f"`regime`: unknown regime {name!r} (available: {', '.join(config['regimes'])})")
    config["image_size"] = int(image_size)
    return regime_from_spec(name, resolved_spec(name, config), image_size, resolve_trust(trust))


def stored_regime(run_config: dict, source: str, trust: bool | None = None) -> Regime:
    """The regime a run trained with, rebuilt from the resolved spec in its ``config.yaml`` (never a file).

    Args:
        run_config: the run's ``config.yaml`` content.
        source: the run folder, for messages.
        trust: allow code in the stored spec; also allows rebuilding an old run (no stored spec) from its
            regimes files. None: the command line's setting.

    Raises:
        MaiAugError: the run predates stored regimes (and is not trusted), or the spec fails the rules.
    """
    name, size = str(run_config.get("regime", "")), int(run_config.get("image_size", 320))
    spec = (run_config.get("resolved") or {}).get("regime")
    if isinstance(spec, dict) and isinstance(spec.get("load"), list):
        return regime_from_spec(name, spec, size, resolve_trust(trust))
    if resolve_trust(trust):
        return load_regime(name, size, run_config.get("regimes_file") or (), trust=True)
    raise MaiAugError(f"{source}: the run predates stored regimes (its config.yaml has no resolved regime spec); "
                      f"retrain it, or pass `trust_config` to rebuild regime {name!r} from its regimes files")
