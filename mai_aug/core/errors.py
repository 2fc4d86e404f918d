"""The one error type the command line turns into a clear message and exit status 2, and how messages name settings.

A message of the library names a setting by its name in a settings file, a preset or the Python API, in
backticks: ```image_size` 12: must be at least 32``. The command line prints the flag of the command that ran
instead (``--image-size 12: ...``; :func:`show_settings_as`, installed by :mod:`mai_aug.cli`); a library user sees
the setting's name. Flags appear in messages only inside a quoted command line (``re-run `mai-aug evaluate --run R```).
"""

import logging
import re
import sys
from collections.abc import Callable

from mai_aug.core.interrupts import interrupted_message

MAX_MESSAGE = 600  # characters of a user error; a library's message embedded in it can run to pages

#: A setting named in a message: its name in backticks (a quoted command line has spaces, so it never matches).
SETTING_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")

_naming: Callable[[str], str | None] | None = None


def show_settings_as(naming: Callable[[str], str | None] | None) -> None:
    """Show each setting a message names as ``naming(name)`` (the command line: the flag); None there or here: as named."""
    global _naming
    _naming = naming


def shown(message: object, naming: Callable[[str], str | None] | None = None) -> str:
    """``message`` with each setting it names as ``naming`` (default: :func:`show_settings_as`'s) shows it.

    Without a naming, and for a setting it does not know, the setting stays as named (`name`).
    """
    text = str(message)
    naming = naming or _naming
    if naming is None:
        return text
    return SETTING_NAME.sub(lambda found: naming(found.group(1)) or found.group(0), text)


def say(message: object) -> None:
    """Print a warning or a note for the user on stderr, with its settings shown as the command line names them."""
    print(shown(message), file=sys.stderr)


def note(message: object) -> None:
    """Print a line of a command's own output on stdout, with its settings shown as the command line names them."""
    print(shown(message))


def one_line(message: object, limit: int = MAX_MESSAGE) -> str:
    """``message`` as one line: each run of whitespace (newlines included) becomes one space.

    Over ``limit`` characters the middle is cut, keeping the start (the file or value named) and the end
    (what to do about it).
    """
    text = " ".join(str(message).split())
    if len(text) <= limit:
        return text
    head = (limit * 2) // 3
    return f"{text[:head]} [...] {text[len(text) - (limit - head - 7):]}"


class MaiAugError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The command line prints the message on one line and exits with status 2, without a traceback. The
    message is made one line here, so an embedded multi-line library message (torch's unpickling advice,
    YAML's marks, pandas' parser errors) cannot spread the error over several lines.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


def first_line(error: BaseException, limit: int | None = 300) -> str:
    """An exception's first line of text (a library's message can run to a page), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def wrapped_message(error: BaseException) -> str | None:
    """The message of a MaiAugError that arrived wrapped, or None.

    MONAI wraps an error raised inside a transform in ``RuntimeError("applying transform ...")`` (the
    MaiAugError is in the cause chain); a DataLoader worker re-raises only the formatted traceback as text,
    where the error is the ``mai_aug.core.errors.MaiAugError: ...`` line.
    """
    seen: BaseException | None = error
    for _ in range(20):  # a cause chain is short; the bound guards against a cycle
        if seen is None:
            break
        if isinstance(seen, MaiAugError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    found = re.search(rf"^{re.escape(MaiAugError.__module__)}\.MaiAugError: (.+)$", str(error), re.MULTILINE)
    return found.group(1) if found else None


def _short_message(error: BaseException) -> str | None:
    """What a user error or an interrupt (Ctrl-C, SIGTERM) logs instead of its traceback; None for other errors."""
    if isinstance(error, KeyboardInterrupt):
        return interrupted_message(error)
    return wrapped_message(error)


class ShortUserErrors(logging.Filter):
    """Log a user error (a MaiAugError, wrapped or not) or an interrupt once, as one line without its traceback.

    MONAI's StatsHandler logs every exception with its traceback, once per engine (the evaluator's error
    reaches the trainer too): a repeat of a user error already logged through this filter is dropped.

    Args:
        keep: log user errors (shortened); False drops them, for the terminal, where the command line prints
            the same message as its last line. Other exceptions keep their traceback either way.
    """

    def __init__(self, keep: bool = True) -> None:
        super().__init__()
        self.keep, self.seen = keep, set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = getattr(record, "user_error", None)  # set when another handler's filter shortened it
        if message is None:
            error = record.exc_info[1] if record.exc_info else None
            message = _short_message(error) if error is not None else None
            if message is None:
                return True
            record.msg, record.args, record.exc_info, record.exc_text = f"stopped: {message}", (), None, None
            record.user_error = message
        if not self.keep or message in self.seen:
            return False
        self.seen.add(message)
        return True


class EngineTermination(logging.Filter):
    """Drop ignite's ``Engine run is terminating due to exception: ...`` line (added to an engine's logger).

    The exception is re-raised and reported once by whoever runs the engine (the command line prints a user
    error as one line, anything else with its traceback); ignite's line only repeats it on stderr.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Engine run is terminating", "Current run is terminating"))
