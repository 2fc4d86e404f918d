"""A run's inference transforms as MONAI bundle config entries that need MONAI, torch and Pillow but not mai_aug.

Each of the three transforms mai_aug adds to every regime is rewritten as the same operations in MONAI's config
syntax (``Lambdad`` with a ``$`` expression, or a PILReader converter), so the bundle's preprocessing gives the
same tensors as ``mai-aug predict`` bit for bit:

- ``mai_aug.transforms.io.ToGrayscale`` (PILReader converter): the same Pillow mode conversions in a lambda;
- ``mai_aug.transforms.resize.SmoothResized``: the same two ``monai.transforms.Resize`` calls (area to shrink,
  then ``enlarge_mode`` to grow, clamped to the shrunk image's range), each a ``Lambdad``;
- ``mai_aug.transforms.intensity.ToUint8d`` (the 8-bit cache boundary): the same rounding cast in a ``Lambdad``.

Only validated numbers and names from a fixed list go into an expression: a run folder's config is data.
Any other dotted ``_target_`` (only possible in a run trained with --trust-config) is kept as it is, and
:func:`foreign_packages` names the packages the bundle then imports.
"""

from __future__ import annotations

import copy
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.transforms.io import _WIDE_MODES

GRAYSCALE = "mai_aug.transforms.io.ToGrayscale"
SMOOTH_RESIZE = "mai_aug.transforms.resize.SmoothResized"
TO_UINT8 = "mai_aug.transforms.intensity.ToUint8d"
OWN_PACKAGES = ("monai", "torch")  # what a bundle imports anyway
ENLARGE_MODES = ("bicubic", "bilinear", "nearest", "nearest-exact", "area", "linear", "trilinear")
PALETTE_MODES = ("P", "PA")

# ToGrayscale's branches, in its order: L, I and F as they are; 16-bit to I; palettes via RGBA; the rest to L.
_KEPT_MODES = ("L", "I", "F")
GRAYSCALE_EXPR = (
    f"$lambda im: im if im.mode in {_KEPT_MODES!r} "
    f"else im.convert('I') if im.mode in {tuple(sorted(_WIDE_MODES - set(_KEPT_MODES)))!r} "
    f"else (im.convert('RGBA') if im.mode in {PALETTE_MODES!r} else im).convert('L')"
)
# ToUint8d: [0, 1] -> 0..255 rounded (MONAI's CastToTyped truncates), metadata dropped.
TO_UINT8_EXPR = ("$lambda x: (x.as_tensor() if isinstance(x, monai.data.MetaTensor) else torch.as_tensor(x))"
                 ".float().clamp(0, 1).mul(255).round().to(torch.uint8)")


def to_uint8(keys: Any, allow_missing_keys: bool = False) -> dict[str, Any]:
    """The config entry that does what ``ToUint8d(keys, allow_missing_keys)`` does."""
    return {"_target_": "Lambdad", "keys": keys, "allow_missing_keys": bool(allow_missing_keys), "func": TO_UINT8_EXPR}


def smooth_resize(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Two ``Lambdad`` entries that do what the ``SmoothResized`` config ``entry`` does."""
    unknown = set(entry) - {"_target_", "keys", "spatial_size", "enlarge_mode", "allow_missing_keys"}
    if unknown:
        raise MaiAugError(f"{where}: SmoothResized: unknown argument(s) {', '.join(sorted(map(str, unknown)))}")
    size = entry.get("spatial_size")
    if not (isinstance(size, list) and size and all(type(s) is int and s > 0 for s in size)):
        raise MaiAugError(f"{where}: SmoothResized: spatial_size {size!r} is not a list of positive integers")
    mode = entry.get("enlarge_mode", "bicubic")
    if mode not in ENLARGE_MODES:
        raise MaiAugError(f"{where}: SmoothResized: enlarge_mode {mode!r} is not one of {', '.join(ENLARGE_MODES)}")
    target = tuple(size)
    shrink = (f"$lambda img: monai.transforms.Resize(tuple(min(int(s), t) for s, t in zip(img.shape[1:], {target})), "
              f"mode='area')(img) if any(int(s) > t for s, t in zip(img.shape[1:], {target})) else img")
    enlarge = (f"$lambda img: monai.transforms.Resize({target}, mode={mode!r}, align_corners=False)(img)"
               f".clamp(float(img.min()), float(img.max())) if tuple(img.shape[1:]) != {target} else img")
    common = {"keys": entry.get("keys", "image"), "allow_missing_keys": bool(entry.get("allow_missing_keys", False))}
    return [{"_target_": "Lambdad", **common, "func": shrink}, {"_target_": "Lambdad", **common, "func": enlarge}]


def monai_only(entries: list[Any], where: str) -> list[Any]:
    """``entries`` (a stored regime part) with mai_aug's transforms rewritten as MONAI ones (see the module)."""
    out: list[Any] = []
    for i, entry in enumerate(entries):
        entry = copy.deepcopy(entry)
        target = entry.get("_target_") if isinstance(entry, dict) else None
        if target == SMOOTH_RESIZE:
            out += smooth_resize(entry, f"{where}[{i}]")
            continue
        if target == TO_UINT8 and set(entry) <= {"_target_", "keys", "allow_missing_keys"}:
            out.append(to_uint8(entry.get("keys", "image"), entry.get("allow_missing_keys", False)))
            continue
        _replace_converters(entry)
        out.append(entry)
    return out


def _replace_converters(node: Any) -> None:
    """Replace every ``{_target_: ToGrayscale}`` value in ``node`` (a PILReader's converter) by its lambda."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(children):
        if isinstance(child, dict) and child.get("_target_") == GRAYSCALE and set(child) == {"_target_"}:
            node[key] = GRAYSCALE_EXPR
        else:
            _replace_converters(child)


def foreign_packages(config: Any) -> list[str]:
    """The top-level packages that dotted ``_target_`` values in ``config`` import, beyond MONAI and torch."""
    found: set[str] = set()
    if isinstance(config, dict):
        target = config.get("_target_")
        if isinstance(target, str) and "." in target and target.split(".")[0] not in OWN_PACKAGES:
            found.add(target.split(".")[0])
        children = list(config.values())
    else:
        children = list(config) if isinstance(config, list) else []
    for child in children:
        found.update(foreign_packages(child))
    return sorted(found)
