"""Configs are data unless trusted: what a regimes file may name before MONAI's ConfigParser sees it.

``monai.bundle.ConfigParser`` evaluates ``$`` expressions and instantiates any importable ``_target_``, so a
regimes file would otherwise be a program. By default a file may name only transforms (``monai.transforms``,
``mai_aug.transforms``) and MONAI's image readers, and may not hold ``$`` expressions or macros that read other
files. ``--trust-config`` lifts the rules for files you wrote yourself.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import pydoc
from collections.abc import Iterator
from typing import Any

import monai.transforms
from monai.bundle import ConfigParser
from monai.bundle.utils import EXPR_KEY, MACRO_KEY

from mai_aug.errors import MaiAugError

TRUST_HINT = "pass --trust-config to run it if you wrote this file yourself"
READERS = frozenset({"PILReader", "ITKReader", "NibabelReader", "NumpyReader", "PydicomReader", "NrrdReader"})
DOTTED_PREFIXES = ("monai.transforms.", "mai_aug.transforms.") + tuple(f"monai.data.{r}" for r in READERS)
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
    for where, key, value in _walk(config, ""):
        problem = _problem(key, value)
        if problem:
            raise MaiAugError(f"{source}: {where or 'top level'}: {problem}; configs are data by default, "
                              f"{TRUST_HINT}")


def _walk(node: Any, where: str) -> Iterator[tuple[str, str | None, Any]]:
    """Every (location, key, value) in a YAML tree, keys included as values with key None."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{where}.{k}" if where else str(k)
            yield here, str(k), v
            yield from _walk(v, here)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            here = f"{where}[{i}]"
            yield here, None, v
            yield from _walk(v, here)


def _problem(key: str | None, value: Any) -> str | None:
    """Why this entry is code rather than data, or None."""
    if key == "_target_":
        return None if _allowed_target(value) else f"_target_ {value!r} is not a MONAI or mai_aug transform"
    if key == "_mode_" and value != "default":
        return f"_mode_ {value!r} is not allowed (only 'default')"
    if key == "_requires_":
        return "_requires_ is not allowed"
    if isinstance(value, str) and value.lstrip().startswith(MACRO_KEY) and _macro_reads_file(value):
        return f"macro {value!r} reads another file"
    if isinstance(value, str) and value.lstrip().startswith(EXPR_KEY):
        return f"'$' expression {value!r} is Python code"
    return None


def _macro_reads_file(value: str) -> bool:
    path, _ = ConfigParser.split_path_id(value.lstrip()[len(MACRO_KEY):])
    return bool(path)


def _allowed_target(name: Any) -> bool:
    """A transform class from monai.transforms or mai_aug.transforms, or one of MONAI's image readers."""
    if not isinstance(name, str):
        return False
    if "." in name:  # importing within these packages is safe; the name must still be a class there
        return name.startswith(DOTTED_PREFIXES) and "__" not in name and inspect.isclass(pydoc.locate(name))
    return name in READERS or inspect.isclass(getattr(monai.transforms, name, None))
