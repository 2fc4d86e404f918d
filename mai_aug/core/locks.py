"""The run folder's lock (one process writes a run at a time) and the study's lock (one report at a time)."""

from __future__ import annotations

import fcntl
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import LOCK_NAME

T = TypeVar("T")

#: The lock file's name in a run folder (``RunLayout.lock``).

#: Run locks this process holds: resolved path -> (pid, depth). A job holds its run's lock across training,
#: evaluation and the analyses, each of which takes it too; a forked child (pid differs) holds none of them.
_HELD: dict[str, tuple[int, int]] = {}


class RunLocked(MaiAugError):
    """Another live process holds the run folder's lock; ``holder`` is its pid as it wrote it."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"`out` {path.parent}: another process (pid {holder}) is training in this run folder; wait "
                         f"for it or stop it (lock {path})")
        self.path, self.holder = path, holder


class RunLock:
    """One process per run folder: an exclusive ``flock`` on ``RUN/.lock``, with the holder's pid written inside.

    The OS releases the lock when its process dies, however it dies, so a lock file left by a killed run is
    simply taken over; a live holder makes a second process fail with :class:`RunLocked`. Within one process the
    lock is re-entrant (a study's job holds it while ``train`` and ``evaluate`` take it again).
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        self.fd: int | None = None
        self.key = str(self.path.absolute())

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        pid, depth = _HELD.get(self.key, (os.getpid(), 0))
        if pid == os.getpid() and depth:
            _HELD[self.key] = (pid, depth + 1)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _HELD[self.key] = (os.getpid(), 1)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        pid, depth = _HELD.pop(self.key, (os.getpid(), 1))
        if depth > 1:
            _HELD[self.key] = (pid, depth - 1)
            return
        if self.fd is not None:
            # Explicit unlock: DataLoader workers forked during training share this open file, and a close alone
            # would leave the lock held until the last of them exits.
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)  # the file stays, harmless, for the next holder
            self.fd = None


class StudyLock:
    """The study folder's ``.report.lock``: processes sharing a study write its report one at a time (a second one
    waits, saying so, then writes the report over every run finished by then)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    def __enter__(self) -> StudyLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"waiting for another process writing this study's report (lock {self.path})", file=sys.stderr,
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holding_run_lock(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn(run_dir, ...)`` (evaluate, a sweep, saliency) holding the run's lock, so it never writes a run that
    a ``train`` or a study's job is writing; re-entrant inside a job. A folder without a lock file (train makes one
    before it writes anything, so nothing is training there: a hand-made or imported run) or where the lock cannot
    be taken (read-only) runs ``fn`` as it is, creating nothing: ``fn`` refuses a bad folder in its own words."""

    @functools.wraps(fn)
    def locked(run_dir: str | Path, *args: Any, **kwargs: Any) -> T:
        path = Path(run_dir) / LOCK_NAME
        if not path.is_file():
            return fn(run_dir, *args, **kwargs)
        lock = RunLock(path)
        try:
            lock.__enter__()
        except OSError:
            return fn(run_dir, *args, **kwargs)
        try:
            return fn(run_dir, *args, **kwargs)
        finally:
            lock.__exit__()

    return locked
