"""Logging to the run folder: ``RUN/<command>.log`` and the console."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mai_aug.core.errors import ShortUserErrors, shown
from mai_aug.core.files import write_reason

LOGGER = "mai_aug"
FILE_ONLY = {"file_only": True}  # ``extra=`` of a record that goes to the log file, not to the terminal
TIME_FORMAT = ("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class TerminalFormatter(logging.Formatter):
    """The log line with the settings it names shown as the command line names them (its flags); the file keeps names."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


class LogFile(logging.FileHandler):
    """``RUN/<command>.log``: a write that fails (disk full) is said once on stderr, in one line, instead of
    logging's ``--- Logging error ---`` traceback for every record; the command goes on (its outputs report
    their own write errors)."""

    failed = False

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # the last buffered lines could not be written either
            self.handleError(None)

    def handleError(self, record: logging.LogRecord | None) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = write_reason(error) if isinstance(error, OSError) else str(error)
        print(f"warning: cannot write {self.baseFilename} ({reason}); it stops here", file=sys.stderr)


class RunLog:
    """Send the ``mai_aug`` logger to ``RUN/train.log`` and stderr while a command runs."""

    def __init__(self, path: Path, echo: bool = True, enabled: bool = True) -> None:
        self.path, self.echo, self.enabled = Path(path), echo, enabled
        self.handlers: list[logging.Handler] = []

    def __enter__(self) -> logging.Logger:
        logger = logging.getLogger(LOGGER)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if not self.enabled:  # a non-zero torchrun rank: errors only, on stderr
            logger.setLevel(logging.ERROR)
            self.handlers.append(logging.StreamHandler(sys.stderr))
            self.handlers[-1].setFormatter(TerminalFormatter(*TIME_FORMAT))
            self.handlers[-1].addFilter(ShortUserErrors())
            logger.addHandler(self.handlers[-1])
            return logger
        self.handlers.append(LogFile(self.path))
        if self.echo:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(logging.Formatter(*TIME_FORMAT) if isinstance(h, logging.FileHandler)
                           else TerminalFormatter(*TIME_FORMAT))
            if not isinstance(h, logging.FileHandler):
                h.addFilter(lambda record: not getattr(record, "file_only", False))
            # MONAI's StatsHandler logs every exception with its traceback; on the terminal, the command line's
            # last line already says a user error, so only train.log keeps it (one line)
            h.addFilter(ShortUserErrors(keep=isinstance(h, logging.FileHandler)))
            logger.addHandler(h)
        return logger

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger(LOGGER)
        for h in self.handlers:
            logger.removeHandler(h)
            h.close()
