"""The run folder's lock: one process writes a run at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mai_aug.core.errors import MaiAugError


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
