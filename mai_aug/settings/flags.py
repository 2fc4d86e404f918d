"""Command-line flags generated from :data:`mai_aug.settings.schema.FIELDS`: no setting's flag is written by hand.

``train`` has a flag for every setting that has one (:func:`add_train_flags`), ``compare`` those tagged
``compare_routes`` (:func:`add_compare_train_flags`), and any command the flags of settings it names
(:func:`add_setting_flags`: ``split``'s data options, ``evaluate --threads``). A flag's value is parsed and
checked against its field's range and count limit as a file's value is (one rule, one message).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from mai_aug.core.errors import MaiAugError
from mai_aug.settings.checks import bound_problem
from mai_aug.settings.schema import BY_NAME, FIELDS, Field


def yaml_mapping(text: str) -> dict:
    """A YAML (or JSON) mapping given on the command line: data only (no aliases), see core.user_yaml.load_user_yaml."""
    from mai_aug.core.user_yaml import load_user_yaml

    try:
        value = load_user_yaml(text, repr(text))
    except MaiAugError as e:
        raise argparse.ArgumentTypeError(str(e).replace(": not valid YAML", " is not valid YAML", 1)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mapping such as '{{patch_size: 8}}'")
    return value


def metric_name(text: str) -> str:
    """A registered metric name (``auc``, ``ap``, ``ece``, ``sens@spec``, ``sens@spec0.95``); the nearest named if not."""
    from mai_aug.stats.scores import get_metric  # here: the command line imports nothing heavy before a command runs

    try:
        return get_metric(text).name
    except MaiAugError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("`metrics`: ")) from None


def integer(text: str) -> int:
    """An integer, or one line saying it is not one."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def number(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


#: The command-line parsers a :class:`~mai_aug.settings.schema.Field` names in ``parse``.
PARSERS: dict[str, Callable[[str], Any]] = {"path": Path, "yaml": yaml_mapping, "metric": metric_name}
_BY_TYPE: dict[Any, Callable[[str], Any]] = {int: integer, float: number}


def _item_type(kind: Any) -> Any:
    """``int`` of ``int | None`` and of ``list[int]``: the type one command-line word becomes."""
    import typing

    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is list:
        return _item_type(args[0])
    return _item_type(args[0]) if len(args) == 1 else kind


def setting_type(field: Field | str) -> Callable[[str], Any] | None:
    """argparse's ``type`` for ``field``: its parser, then its range and count limit (None: a plain string)."""
    field = BY_NAME[field] if isinstance(field, str) else field
    parse = PARSERS[field.parse] if field.parse else _BY_TYPE.get(_item_type(field.type))
    if parse not in _BY_TYPE.values():  # a string, path, YAML mapping or metric: nothing to bound
        return parse

    def parse_checked(text: str) -> Any:
        value = parse(text)
        problem = bound_problem(field, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse_checked.__name__ = parse.__name__  # argparse names it in "invalid <name> value"
    return parse_checked


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, field: Field, default: Any, help: str,
         required: bool = False) -> argparse.Action:
    """One setting's flag with ``default`` and ``help``; its value lands under the setting's name."""
    options: dict[str, Any] = {"dest": field.name, "default": default, "help": help}
    if required:
        options["required"] = True
    if field.action == "bool":
        return parser.add_argument(field.option, action=argparse.BooleanOptionalAction, **options)
    if field.action in ("store_true", "store_false"):
        return parser.add_argument(field.option, action=field.action, **options)
    choices = field.flag_choices or field.choices
    more = {"nargs": field.nargs, "metavar": field.metavar, "choices": list(choices) if choices else None}
    action = {"action": field.action} if field.action else {}
    return parser.add_argument(field.option, type=setting_type(field), **action,
                               **{k: v for k, v in more.items() if v is not None}, **options)


def _shown(help: str, default: Any) -> str:
    """``help`` with its ``%(default)s`` written out (argparse would print SUPPRESS's text)."""
    return help.replace("%(default)s", str(default).replace("%", "%%"))


def flagged(fields: Iterable[Field] = FIELDS) -> tuple[Field, ...]:
    """The fields that have a ``train`` flag."""
    return tuple(f for f in fields if f.option)


def add_train_flags(parser: argparse.ArgumentParser, fields: Iterable[Field] = FIELDS) -> None:
    """``train``'s flag of every setting that has one, in the schema's order.

    A flag leaves its setting out of the parsed arguments unless given (``argparse.SUPPRESS``), so that it
    overrides a ``--settings`` file only then; ``--help`` still shows the schema's default.
    """
    for f in flagged(fields):
        _add(parser, f, argparse.SUPPRESS, _shown(f.help, f.default_value()))


def add_compare_train_flags(parser: argparse.ArgumentParser, fields: Iterable[Field] = FIELDS) -> None:
    """``compare``'s flags of the settings tagged ``compare_routes``: None unless given (the preset's value then)."""
    for f in fields:
        if f.compare_routes:
            _add(parser, f, None, f.compare_help)


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str], required: Collection[str] = (),
                      fields: Mapping[str, Field] = BY_NAME) -> None:
    """The flags of the settings ``names`` with their defaults (a command that reads its arguments directly)."""
    for name in names:
        f = fields[name]
        _add(parser, f, f.default_value(), f.help, required=name in required)


def settings_given(args: argparse.Namespace, fields: Mapping[str, Field] = BY_NAME) -> dict[str, Any]:
    """The settings among parsed arguments (``train``'s: only those given on the command line)."""
    return {k: v for k, v in vars(args).items() if k in fields}
