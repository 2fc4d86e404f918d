"""Configs are data unless trusted: what a regimes file may name before MONAI's ConfigParser sees it.

``monai.bundle.ConfigParser`` evaluates ``$`` expressions and instantiates any importable ``_target_``, and some
MONAI transforms import what a string names (``LoadImage``'s ``reader``, ``SaveImage``'s ``writer``), so a
regimes file would otherwise be a program. By default a file may name only transforms (``monai.transforms``,
``mai_aug.transforms``) and MONAI's image readers, and may not hold ``$`` expressions, macros that read other
files, or strings naming importable code. ``--trust-config`` lifts the rules for files you wrote yourself.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from typing import Any

import monai.data
import monai.transforms
import torch
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.bundle.utils import EXPR_KEY, MACRO_KEY
from monai.transforms import Transform

from mai_aug.core.errors import MaiAugError

TRUST_HINT = "pass `trust_config` to run it if you wrote this file yourself"
READERS = frozenset({"PILReader", "ITKReader", "NibabelReader", "NumpyReader", "PydicomReader", "NrrdReader"})
READER_PATHS = frozenset(f"monai.data.{r}" for r in READERS)
TRANSFORM_PREFIXES = ("monai.transforms.", "mai_aug.transforms.")
HELPERS = frozenset({"mai_aug.transforms.io.ToGrayscale"})  # PILReader's converter: not a transform, but ours
# transforms that import what a string argument names, or write files: never from an untrusted file
REFUSED_TRANSFORMS = {
    **dict.fromkeys(["TorchVision", "TorchVisiond", "RandTorchVision", "RandTorchVisiond", "TorchIO", "TorchIOd",
                     "RandTorchIO", "RandTorchIOd", "CuCIM", "CuCIMd", "RandCuCIM", "RandCuCIMd"],
                    "looks up a callable by name in another package"),
    **dict.fromkeys(["SaveImage", "SaveImaged", "WriteFileMapping", "WriteFileMappingd", "SaveClassification",
                     "SaveClassificationd"], "writes files"),
}
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_TRUST: contextvars.ContextVar[bool] = contextvars.ContextVar("mai_aug_trust_config", default=False)


@contextlib.contextmanager
def trusted_configs(trust: bool) -> Iterator[None]:
    """Within the block, regimes load under ``trust`` unless a call says otherwise (the CLI's --trust-config)."""
    token = _TRUST.set(bool(trust))
    try:
        yield
    finally:
        _TRUST.reset(token)


def resolve_trust(trust: bool | None) -> bool:
    """``trust`` if given, else the enclosing :func:`trusted_configs` setting (default: not trusted)."""
    return _TRUST.get() if trust is None else bool(trust)


def check_data_only(config: Any, source: str, trust: bool | None = None) -> None:
    """Refuse any entry of ``config`` that would run code when parsed, unless trusted.

    Args:
        config: raw YAML content (before ConfigParser), or a stored regime spec.
        source: what to name in the message (a file, a run folder).
        trust: allow everything (``--trust-config``); None: the enclosing setting.

    Raises:
        MaiAugError: one line naming the entry and how to opt in.
    """
    if resolve_trust(trust):
        return
    locator = monai_locator()
    for where, key, value in walk_config(config, "", None):
        problem = _problem(key, value, locator)
        if problem:
            raise MaiAugError(f"{source}: {where or 'top level'}: {problem}; configs are data by default, "
                              f"{TRUST_HINT}")


def monai_locator() -> ComponentLocator:
    """A ComponentLocator over the MONAI modules imported now: the one ConfigParser's own would build.

    MONAI builds a new one per ConfigParser, and its table scans every MONAI module (10-40 ms); it changes only
    when another MONAI module is imported, so one is kept per set of imported modules.
    """
    return _locator_of(tuple(m for m in sys.modules if m.startswith(ComponentLocator.MOD_START)))


@functools.lru_cache(maxsize=1)
def _locator_of(modules: tuple[str, ...]) -> ComponentLocator:
    """The locator of one set of imported MONAI ``modules`` (it scans them on its first lookup)."""
    return ComponentLocator()


def walk_config(node: Any, where: str, parent: str | None) -> Iterator[tuple[str, str | None, Any]]:
    """Every (location, key, value) in a YAML tree; a list's items come with the list's key."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{where}.{k}" if where else str(k)
            yield here, str(k), v
            yield from walk_config(v, here, str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            here = f"{where}[{i}]"
            yield here, parent, v
            yield from walk_config(v, here, parent)


def _problem(key: str | None, value: Any, locator: ComponentLocator) -> str | None:
    """Why this entry is code rather than data, or None."""
    if key == "_target_":
        return _target_problem(value, locator)
    if key == "_mode_" and value != "default":
        return f"_mode_ {value!r} is not allowed (only 'default')"
    if key == "_requires_":
        return "_requires_ is not allowed"
    if key == "writer":  # SaveImage imports a string writer by its dotted path
        return "a 'writer' is not allowed (regimes only read images)"
    if not isinstance(value, str):
        return None
    if key == "reader" and value not in READERS | READER_PATHS:
        # LoadImage imports a string reader with pydoc.locate and calls it with the transform's other arguments
        return f"reader {value!r} is not one of MONAI's image readers ({', '.join(sorted(READERS))})"
    text = value.lstrip()
    if text.startswith(MACRO_KEY) and _macro_reads_file(text):
        return f"macro {value!r} reads another file"
    if text.startswith(EXPR_KEY):
        return f"'$' expression {value!r} is Python code"
    if _names_importable_code(value):
        return f"{value!r} names importable code outside monai.transforms and mai_aug.transforms"
    return None


def _macro_reads_file(value: str) -> bool:
    path, _ = ConfigParser.split_path_id(value[len(MACRO_KEY):])
    return bool(path)


def _names_importable_code(value: str) -> bool:
    """A dotted path whose top-level module exists, other than a transform, a reader or a torch dtype.

    Only the top-level module is looked up (``find_spec`` of a top-level name imports nothing).
    """
    if not DOTTED.fullmatch(value) or value.startswith(TRANSFORM_PREFIXES):
        return False
    top, _, rest = value.partition(".")
    if value in READER_PATHS or (top == "torch" and isinstance(getattr(torch, rest, None), torch.dtype)):
        return False
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _target_problem(name: Any, locator: ComponentLocator) -> str | None:
    """Why ``_target_`` ``name`` may not be instantiated, or None."""
    obj = _resolve(name, locator) if isinstance(name, str) and "__" not in name else None
    if not _allowed_class(obj):
        if isinstance(name, str) and _allowed_class(getattr(monai.transforms, name, None)):  # a bare name MONAI resolves elsewhere
            return f"_target_ {name!r} is ambiguous (MONAI finds another {name} first): write 'monai.transforms.{name}'"
        return f"_target_ {name!r} is not a MONAI or mai_aug transform"
    refused = REFUSED_TRANSFORMS.get(obj.__name__) if obj.__module__.startswith("monai.") else None
    return f"_target_ {name!r} {refused}" if refused else None


def _resolve(name: str, locator: ComponentLocator) -> Any:
    """What ConfigParser would instantiate for ``name``, found without importing outside the allowed packages."""
    if "." not in name:  # ConfigParser looks a bare name up in the imported monai modules: the first one wins
        modules = locator.get_component_module_name(name)
        module = modules[0] if isinstance(modules, list) else modules
        return getattr(sys.modules.get(module or ""), name, None)
    if not name.startswith((*TRANSFORM_PREFIXES, "monai.data.")):
        return None
    parts = name.split(".")
    obj: Any = None
    for i in range(2, len(parts) + 1):  # as pydoc.locate: the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:  # within MONAI's and mai_aug's own packages only
            break
    else:
        return obj
    for attribute in parts[i - 1:]:
        obj = getattr(obj, attribute, None)
    return obj


def _allowed_class(obj: Any) -> bool:
    """A transform class of monai.transforms or mai_aug.transforms, one of MONAI's readers, or a listed helper."""
    if not isinstance(obj, type):
        return False
    if obj in {getattr(monai.data, r, None) for r in READERS}:
        return True
    if f"{obj.__module__}.{obj.__qualname__}" in HELPERS:
        return True
    return obj.__module__.startswith(TRANSFORM_PREFIXES) and issubclass(obj, Transform)


def trusted_callable(target: Any, where: str, trust: bool | None = None) -> Any:
    """The function or class a settings entry's ``_target_`` names (a user's dataset adapter or metric).

    A ``_target_`` outside mai_aug is code, so it is imported only under ``--trust-config``; it is looked up as
    MONAI's ConfigParser looks up a ``_target_`` (``pydoc.locate``).

    Raises:
        MaiAugError: one line: not trusted, not a dotted name, or nothing callable there.
    """
    from pydoc import locate

    if not isinstance(target, str) or not DOTTED.fullmatch(target):
        raise MaiAugError(f"{where}: _target_ {target!r} is not a dotted name such as my_module.my_function")
    if not resolve_trust(trust):
        raise MaiAugError(f"{where}: _target_ {target!r} is code; configs are data by default, {TRUST_HINT}")
    try:
        obj = locate(target)
    except Exception as e:  # pydoc.ErrorDuringImport: the module raised while being imported
        raise MaiAugError(f"{where}: cannot import _target_ {target!r} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())})") from None
    if obj is None:
        raise MaiAugError(f"{where}: cannot import _target_ {target!r} (no such module or attribute on the path)")
    if not callable(obj):
        raise MaiAugError(f"{where}: _target_ {target!r} is a {type(obj).__name__}, not a function")
    return obj
