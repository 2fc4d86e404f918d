"""The one check of settings typed by hand or read back: known keys, types, choices, ranges and count limits.

A ``--settings`` file, a preset's sections and a run's ``config.yaml`` are checked here against their
:class:`~mai_aug.settings.schema.Field`; messages name the setting as the file or preset spells it (``image_size``).
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.core.limits import limit_problem
from mai_aug.settings.schema import Field

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def type_problem(value: Any, kind: Any) -> str | None:
    """Why ``value`` (from YAML) does not fit the type hint ``kind`` (``int``, ``str | None``, ``list[str]``...)."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is dict:
        return None if isinstance(value, dict) else f"expected a mapping, got {value!r}"
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        items = tuple(typing.get_origin(a) or a for a in typing.get_args(item) or (item,))
        if isinstance(value, list) and all(isinstance(v, items) for v in value):
            return None
        return f"expected a list of {'strings' if items == (str,) else 'names or mappings'}, got {value!r}"
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(kind, True)
    return None if ok else f"expected {_TYPE_NAMES.get(kind, kind)}{' (finite)' if kind is float else ''}, got {value!r}"


def value_problem(field: Field, value: Any) -> str | None:
    """Why a value of the right type is refused: not one of the choices, out of range, above its count limit."""
    if field.choices is not None:
        for item in value if isinstance(value, list) else [value]:
            if item is not None and item not in field.choices:
                return f"{item!r} is not one of {', '.join(map(str, field.choices))}"
    return bound_problem(field, value)


def bound_problem(field: Field, value: Any) -> str | None:
    """Why a number is refused: out of the field's range or above its count limit (other values pass)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if field.range is not None and number and not field.range.holds(value):
        return f"{value!r} must be {field.range.words()}"
    return limit_problem(field.name, value)


def check_value(field: Field, value: Any, where: str, types_only: bool = False) -> None:
    """Raise one line naming ``where`` unless ``value`` fits ``field`` (its type only, and limit, if ``types_only``)."""
    problem = type_problem(value, field.type)
    if problem is None:
        problem = limit_problem(field.name, value) if types_only else value_problem(field, value)
    if problem:
        raise MaiAugError(f"{where}: {problem}")


def nearest(key: str, names: list[str]) -> str | None:
    """The valid name nearest ``key``: difflib's closest, else the one ``key``'s initials spell (learning_rate: lr)."""
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return close[0]
    initials = "".join(word[:1] for word in key.lower().split("_"))
    return initials if "_" in key and initials in names else None


def check_mapping(label: str, values: Any, fields: Mapping[str, Field], sep: str = ".") -> None:
    """Check a mapping's keys and values; messages name ``label``, and ``label{sep}key`` for a key's value."""
    if not isinstance(values, dict):
        raise MaiAugError(f"{label}: expected a mapping, got {values!r}")
    for key, value in values.items():
        if key not in fields:
            near = nearest(str(key), list(fields))
            hint = f" (did you mean {near!r}?)" if near else f" (valid: {', '.join(sorted(fields))})"
            raise MaiAugError(f"{label}: unknown key {key!r}{hint}")
        check_value(fields[key], value, f"{label}{sep}{key}")
