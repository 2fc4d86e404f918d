"""User YAML read as data only (no aliases, no tags) and YAML written without anchors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mai_aug.core.errors import MaiAugError

if TYPE_CHECKING:  # pandas and matplotlib are imported by the commands that write tables and figures
    pass


class _AliasRefused(yaml.YAMLError):
    """An alias met by :class:`_DataOnlyLoader`."""


class _DataOnlyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases: shared anchors (``b: [*a, *a, ...]``) expand exponentially when
    walked, so a 1 KB file could keep a command busy indefinitely."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(f"alias *{event.anchor} at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def load_user_yaml(text: str | bytes, label: str) -> Any:
    """Parse YAML typed by a user (the command line, a file's content): data only, no aliases.

    Raises:
        MaiAugError: one line, ``label: not valid YAML (...)`` or ``label: YAML alias ... is not accepted``.
    """
    try:
        return yaml.load(text, Loader=_DataOnlyLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as e:
        raise MaiAugError(f"{label}: YAML {e} is not accepted (anchors and aliases can expand without bound; "
                          f"write the values out)") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: an integer of over 4300 digits
        raise MaiAugError(f"{label}: not valid YAML ({' '.join(str(e).split())})") from None


def read_user_yaml(path: str | Path, label: str) -> Any:
    """Read a user's YAML file (regimes file, preset, settings, a run's ``config.yaml``) with :func:`load_user_yaml`.

    Args:
        path: the file.
        label: what named it, for messages (``--preset mine.yaml``).

    Raises:
        MaiAugError: one line naming ``label``: missing, unreadable, not UTF-8, not valid YAML, or with aliases.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MaiAugError(f"{label}: file not found") from None
    except OSError as e:
        raise MaiAugError(f"{label}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MaiAugError(f"{label}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
    return load_user_yaml(text, label)


class _NoAliasDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing a value shared twice in full instead of as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any, **options: Any) -> str:
    """``data`` as YAML without anchors or aliases, so that :func:`read_user_yaml` reads back what mai_aug wrote."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, **options)
