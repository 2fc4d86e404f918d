"""Lazy package exports: a package names its public API in ``__all__`` without importing torch on import.

Written here because PEP 562's module ``__getattr__`` is the whole mechanism: ``import mai_aug.engine`` stays
cheap (the command line imports packages before it knows which command runs, and must not load torch for
``--help``), while ``from mai_aug.engine import train`` imports ``mai_aug.engine.train`` on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[list[str], Callable, Callable]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` exporting ``names`` (name -> its module).

    Args:
        package: the package's ``__name__``.
        names: each public name and the submodule (relative to the package) that defines it.
    """

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return sorted(names), __getattr__, __dir__
