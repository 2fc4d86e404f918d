"""Which network a run trains: a name or a ``_target_`` of ``monai.networks.nets``, resolved into constructor arguments.

MONAI's 2D classifiers name their arguments differently (``in_channels`` or ``n_input_channels``, ``out_channels`` or
``num_classes``) and some need more (EfficientNetBN's ``model_name``, ViT's ``img_size``); :data:`FAMILIES` is the one
table that says, per family, what mai_aug sets. A network's name is case-insensitive (``ResNet18``, ``resnet18``,
``efficientnet_b0``). A ``_target_`` from a user's file is data: only ``monai.networks.nets`` unless ``--trust-config``.

This module imports neither torch nor MONAI at import time (the config and preset checks use its names).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mai_aug.core.errors import MaiAugError

NETS = "monai.networks.nets"


@dataclass(frozen=True)
class Family:
    """How mai_aug builds one family of MONAI classifiers for 2D images.

    Attributes:
        channels: the constructor's keyword for input channels.
        classes: its keyword for the number of outputs.
        fixed: what every 2D classifier of the family gets (a user's args may not change these).
        defaults: what it gets unless the user's args say otherwise.
        sized: the constructor takes the image size (``img_size``).
        tuple_output: the forward returns ``(logits, extras)`` (ViT): mai_aug keeps the logits.
    """

    channels: str
    classes: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    sized: bool = False
    tuple_output: bool = False


FAMILIES: dict[str, Family] = {
    "densenet": Family("in_channels", "out_channels", {"spatial_dims": 2}),
    # torchvision's layout (7x7 stride-2 stem, bias-free 1x1 shortcuts), which MONAI's ResNet reproduces name for
    # name with these settings: ImageNet weights then fit, and the stem costs what an ImageNet ResNet costs
    "resnet": Family("n_input_channels", "num_classes", {"spatial_dims": 2},
                     {"conv1_t_size": 7, "conv1_t_stride": 2, "shortcut_type": "B", "bias_downsample": False}),
    "senet": Family("in_channels", "num_classes", {"spatial_dims": 2}),
    "efficientnet": Family("in_channels", "num_classes", {"spatial_dims": 2, "pretrained": False}),
    # post_activation None: logits, not MONAI's default Tanh of them
    "vit": Family("in_channels", "num_classes", {"spatial_dims": 2, "classification": True},
                  {"patch_size": 16, "post_activation": None}, sized=True, tuple_output=True),
    "custom": Family("", ""),  # a trusted _target_ outside monai.networks.nets: its args as given
}

# name -> (family, what monai.networks.nets calls it, fixed extra arguments)
NAMES: dict[str, tuple[str, str, dict[str, Any]]] = {
    **{f"densenet{d}": ("densenet", f"DenseNet{d}", {}) for d in (121, 169, 201, 264)},
    "densenet": ("densenet", "DenseNet", {}),
    **{f"resnet{d}": ("resnet", f"resnet{d}", {}) for d in (10, 18, 34, 50, 101, 152, 200)},
    "resnet": ("resnet", "ResNet", {}),
    "senet154": ("senet", "SENet154", {}),
    **{f"seresnet{d}": ("senet", f"SEResNet{d}", {}) for d in (50, 101, 152)},
    **{f"seresnext{d}": ("senet", f"SEResNext{d}", {}) for d in (50, 101)},
    "senet": ("senet", "SENet", {}),
    **{f"efficientnet-{v}": ("efficientnet", "EfficientNetBN", {"model_name": f"efficientnet-{v}"})
       for v in (*(f"b{i}" for i in range(9)), "l2")},
    "efficientnetbn": ("efficientnet", "EfficientNetBN", {}),
    "vit": ("vit", "ViT", {}),
}


def _key(name: str) -> str:
    """The lookup key of a name: case, ``-`` and ``_`` do not matter (``EfficientNet_B0`` is ``efficientnet-b0``)."""
    return re.sub(r"[-_]", "", name.lower())


_BY_KEY = {_key(n): n for n in NAMES}
# MONAI's own aliases of the same classes (``Densenet121``, ``SEResNeXt50``, ``seresnet50``) reduce to these keys.


def canonical_name(network: str) -> str:
    """The registry name of ``network`` (``ResNet18`` -> ``resnet18``, ``monai.networks.nets.DenseNet121`` ->
    ``densenet121``); anything else unchanged."""
    bare = network.removeprefix(f"{NETS}.") if isinstance(network, str) else network
    return _BY_KEY.get(_key(bare), network) if isinstance(bare, str) else network


@dataclass(frozen=True)
class NetworkSpec:
    """A network resolved: its name, family, the callable to build it and every argument it gets."""

    name: str
    family: str
    target: str
    args: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "target": self.target, "args": dict(self.args)}


def network_fields(value: Any, where: str, network_args: Any = None) -> dict[str, Any]:
    """A preset's ``network:`` entry as TrainConfig's ``network`` and ``network_args``.

    ``value`` is a name, ``{name: resnet18, args: {...}}`` or ``{_target_: monai.networks.nets.ResNet, ...}``.
    """
    if isinstance(value, str):
        return {"network": value, **({} if network_args is None else {"network_args": network_args})}
    if not isinstance(value, dict):
        raise MaiAugError(f"{where}: expected a name or a mapping with name or _target_, got {value!r}")
    if network_args is not None:
        raise MaiAugError(f"{where}: give the arguments inside network: or in network_args, not both")
    if "_target_" in value:
        name, args = value["_target_"], {k: v for k, v in value.items() if k != "_target_"}
    elif "name" in value:
        unknown = set(value) - {"name", "args"}
        if unknown:
            raise MaiAugError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected name and args)")
        name, args = value["name"], value.get("args") or {}
    else:
        raise MaiAugError(f"{where}: expected a name or a mapping with name or _target_, got {value!r}")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise MaiAugError(f"{where}: the name must be a string and args a mapping, got {name!r} and {args!r}")
    return {"network": name, "network_args": args}


def resolve_network(network: str, network_args: Mapping[str, Any] | None, n_classes: int, in_channels: int,
                    image_size: int, trust: bool | None = None, where: str = "`network`") -> NetworkSpec:
    """``network`` and its user arguments as a :class:`NetworkSpec` for this run's channels, size and findings.

    Raises:
        MaiAugError: one line: an unknown name (with the nearest valid ones), a ``_target_`` outside
            ``monai.networks.nets`` without ``--trust-config``, an argument mai_aug sets given another value,
            or a ViT whose patches do not tile the image.
    """
    args = dict(network_args or {})
    name, family_name, target, extra = lookup_network(network, args, trust, where)
    family = FAMILIES[family_name]
    args = {**family.defaults, **args}
    _check_set_by_mai_aug(args, family, extra, n_classes, in_channels, where, name)
    args.update(family.fixed)
    args.update(extra)
    if family.channels:
        args[family.channels], args[family.classes] = in_channels, n_classes
    if family.sized:
        if args.get("img_size", image_size) != image_size:
            raise MaiAugError(f"{where} {name}: network_args.img_size is {args['img_size']!r} but the run's "
                              f"`image_size` is {image_size}; leave it out")
        args["img_size"] = image_size
        _check_patches(args.get("patch_size"), image_size, where, name)
    return NetworkSpec(name=name, family=family_name, target=target, args=args)


def lookup_network(network: str, network_args: Mapping[str, Any] | None, trust: bool | None = None,
                   where: str = "`network`") -> tuple[str, str, str, dict[str, Any]]:
    """``(name, family, target, fixed extra arguments)`` of ``network``; its args checked to be plain data.

    Raises:
        MaiAugError: an unknown name (with the nearest valid ones), a ``_target_`` outside ``monai.networks.nets``
            or code in the arguments, without ``--trust-config``.
    """
    from mai_aug.core.trust import TRUST_HINT, check_data_only, resolve_trust

    trusted = resolve_trust(trust)
    check_data_only(dict(network_args or {}), f"{where} {network}: network_args", trusted)
    name = canonical_name(network)
    if name in NAMES:
        family, attr, extra = NAMES[name]
        return name, family, f"{NETS}.{attr}", dict(extra)
    if isinstance(network, str) and "." in network and not network.startswith(f"{NETS}."):
        if not trusted:
            raise MaiAugError(f"{where} {network}: _target_ is not a class of {NETS}; configs are data by default, "
                              f"{TRUST_HINT}")
        return network, "custom", network, {}
    raise MaiAugError(_unknown(network, where))


def _unknown(network: Any, where: str) -> str:
    """The message for a name that is no 2D classifier mai_aug can build, with the nearest valid names."""
    bare = network.removeprefix(f"{NETS}.") if isinstance(network, str) else str(network)
    near = difflib.get_close_matches(_key(bare), list(_BY_KEY), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(_BY_KEY[k] for k in near)}?" if near
            else f"known: {', '.join(sorted(NAMES))}")
    return f"{where} {network!r}: not a 2D classifier of {NETS} that mai-aug can build ({hint})"


def _check_set_by_mai_aug(args: dict[str, Any], family: Family, extra: Mapping[str, Any], n_classes: int,
                          in_channels: int, where: str, name: str) -> None:
    """Refuse user arguments that contradict what the run sets (outputs, channels, dimensions, weights)."""
    if args.get("pretrained", False) is not False:
        raise MaiAugError(f"{where} {name}: network_args.pretrained {args['pretrained']!r}: weights come from "
                          f"`pretrained` only")
    args.pop("pretrained", None)  # false: the constructors' own default (EfficientNetBN's is set below)
    required = {**family.fixed, **extra}
    if family.channels:
        required.update({family.channels: in_channels, family.classes: n_classes})
    for key, value in required.items():
        if key in args and args[key] != value:
            why = {family.classes: f"the run has {n_classes} findings",
                   family.channels: f"`in_channels` is {in_channels}"}.get(key, "mai-aug sets it")
            raise MaiAugError(f"{where} {name}: network_args.{key} is {args[key]!r} but must be {value!r} ({why}); "
                              f"leave it out")


def _check_patches(patch_size: Any, image_size: int, where: str, name: str) -> None:
    """A ViT's patches must tile the image: MONAI's conv patch embedding silently drops a remainder."""
    sizes = patch_size if isinstance(patch_size, (list, tuple)) else [patch_size]
    if not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in sizes) or len(sizes) not in (1, 2):
        raise MaiAugError(f"{where} {name}: patch_size {patch_size!r} is not a positive integer (or two)")
    for p in sizes:
        if image_size % p:
            raise MaiAugError(f"{where} {name}: `image_size` {image_size} is not a multiple of patch_size {p} "
                              f"(the last {image_size % p} px would be dropped); use `image_size` "
                              f"{image_size - image_size % p} or {image_size - image_size % p + p}, or another "
                              f"patch_size")


def stored_network(run_config: Mapping[str, Any], n_classes: int, source: str,
                   trust: bool | None = None) -> NetworkSpec:
    """The network a run trained, from the resolved spec in its ``config.yaml`` (else from its settings).

    The stored spec is data from a run folder: its target must be in ``monai.networks.nets`` and its arguments
    plain data unless trusted, as for a user's file.
    """
    from mai_aug.core.trust import TRUST_HINT, check_data_only, resolve_trust

    stored = (run_config.get("resolved") or {}).get("network")
    if not isinstance(stored, dict):  # a run from before networks were configurable: its settings say all
        return resolve_network(str(run_config.get("network", "densenet121")), run_config.get("network_args") or {},
                               n_classes, int(run_config.get("in_channels", 1)),
                               int(run_config.get("image_size", 320)), trust, f"{source}: network")
    try:
        spec = NetworkSpec(name=str(stored["name"]), family=str(stored["family"]), target=str(stored["target"]),
                           args=dict(stored["args"]))
    except (KeyError, TypeError, ValueError):
        raise MaiAugError(f"{source}: resolved.network in config.yaml is not a network spec "
                          f"(expected name, family, target and args)") from None
    if spec.family not in FAMILIES:
        raise MaiAugError(f"{source}: resolved.network.family {spec.family!r} is not one of {', '.join(FAMILIES)}")
    trusted = resolve_trust(trust)
    if not trusted and (spec.family == "custom" or spec.target not in {f"{NETS}.{a}" for _, a, _ in NAMES.values()}):
        raise MaiAugError(f"{source}: resolved.network.target {spec.target!r} is not a classifier of {NETS}; "
                          f"run folders are data by default, {TRUST_HINT}")
    check_data_only(spec.args, f"{source}: resolved.network.args", trusted)
    return spec
