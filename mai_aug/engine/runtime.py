"""Devices, logging to the run folder, the run folder's lock, and reading checkpoints."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
from pathlib import Path

import torch

from mai_aug.engine.checkpoint import checkpoint_epoch as checkpoint_epoch  # re-exported for callers
from mai_aug.engine.checkpoint import last_checkpoint as last_checkpoint
from mai_aug.errors import MaiAugError, ShortUserErrors
from mai_aug.utils import write_reason

LOGGER = "mai_aug"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MaiAugError(f"--device {name}: no CUDA GPU is available here (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MaiAugError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


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
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        if not self.enabled:  # a non-zero torchrun rank: errors only, on stderr
            logger.setLevel(logging.ERROR)
            self.handlers.append(logging.StreamHandler(sys.stderr))
            self.handlers[-1].setFormatter(fmt)
            self.handlers[-1].addFilter(ShortUserErrors())
            logger.addHandler(self.handlers[-1])
            return logger
        self.handlers.append(LogFile(self.path))
        if self.echo:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(fmt)
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


class RunLock:
    """One process per run folder: an exclusive ``flock`` on ``RUN/.lock``, with the holder's pid written inside.

    The OS releases the lock when its process dies, however it dies, so a lock file left by a killed run is
    simply taken over; a live holder makes a second process fail with its pid.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MaiAugError(f"--out {self.path.parent}: another process (pid {holder}) is training in this run "
                              f"folder; wait for it or stop it (lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            # Explicit unlock: DataLoader workers forked during training share this open file, and a close alone
            # would leave the lock held until the last of them exits.
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)  # the file stays, harmless, for the next holder
            self.fd = None


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint file, turning truncation or corruption into one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MaiAugError(f"checkpoint {path}: file not found") from None
    except Exception as e:
        first = re.split(r"(?<=\.)\s", str(e).strip(), maxsplit=1)[0]  # torch's first sentence, not its advice
        cause = f"{type(e).__name__}: {first}" if first else type(e).__name__  # EOFError() has no message
        refused = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        if refused:  # torch's page of advice ends in the actual reason (and suggests running the file's code)
            cause = f"refused by torch's weights-only loader: {refused[1]}"
        if Path(path).stat().st_size == 0:
            cause = "empty file (0 bytes)"
        raise MaiAugError(f"checkpoint {path}: cannot be read, truncated or not a checkpoint ({cause})") from None


def load_model_state(net: torch.nn.Module, state: dict, path: Path) -> None:
    """Load ``state['model']`` (or a bare state dict) into ``net``, naming a mismatch."""
    model_state = state.get("model", state) if isinstance(state, dict) else state
    if isinstance(model_state, dict) and "checkpointer" in model_state:
        # ignite saves a lone object's state dict unnested; the best checkpoint adds its saver's state beside it.
        model_state = {k: v for k, v in model_state.items() if k != "checkpointer"}
    try:
        net.load_state_dict(model_state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[:2]
        raise MaiAugError(f"checkpoint {path}: does not fit this model ({' '.join(first)[:300]})") from None
