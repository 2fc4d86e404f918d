"""SIGINT and SIGTERM as one exception, so a command stops through its ``finally`` blocks and says why in one line.

Python turns SIGINT into ``KeyboardInterrupt``; SIGTERM (what SLURM, Kubernetes and ``kill`` send) kills the
process on the spot by default, without releasing anything or saying anything. :func:`raise_on_signals` makes
both raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread while a command runs, so files being
written are dropped (``atomic_write``), the run lock is released, loader workers and TensorBoard writers are
closed, and the command line prints ``interrupted (SIGTERM)`` with the shell's status ``128 + signal``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was stopped by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_of(error: BaseException) -> signal.Signals:
    """The signal behind a ``KeyboardInterrupt``: its :class:`Interrupted` signal, else SIGINT (Python's own)."""
    return signal.Signals(error.signum if isinstance(error, Interrupted) else signal.SIGINT)


def exit_status(error: BaseException) -> int:
    """The shell's status for a process stopped by the signal of ``error``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signal_of(error))


def interrupted_message(error: BaseException) -> str:
    """``interrupted (SIGTERM)``: what the command line and the run's log say."""
    return f"interrupted ({signal_of(error).name})"


@contextlib.contextmanager
def raise_on_signals(signals: Sequence[int] = SIGNALS) -> Iterator[None]:
    """While the block runs, the first of ``signals`` raises :class:`Interrupted` in the main thread.

    A second signal while the command unwinds is ignored (cleanup runs to its end) and restores the signal's
    default action, so a third one stops the process at once. The previous handlers are restored on exit.
    Outside the main thread (where Python cannot set handlers) the block runs unchanged. A process forked inside
    the block (a loader worker) inherits the handler but does not raise: SLURM and Ctrl-C signal the whole process
    group, and an exception raised in a child right after ``fork`` (in a library's at-fork hook) is printed as a
    traceback; the command stops its workers itself as it unwinds.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            return  # a forked worker: the command that started it stops it
        received.append(signum)
        if len(received) == 1:
            raise Interrupted(signum)
        signal.signal(signum, signal.SIG_DFL)  # already unwinding: the next one is the OS's default

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)  # None: set outside Python
