"""One session per state directory: an OS file lock, released by the kernel when the
process holding it dies, so a killed engine's lock never blocks the next run."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ._errors import StoreLocked

LOCK_FILE = "lock"


class StateLock:
    """Held for the life of a session; ``acquire`` fails at once if another holds it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = _read(fd)
            os.close(fd)
            raise StoreLocked(
                f"another scriptflow_trio session is running in this directory ({holder}); "
                f"wait for it to end or stop it. The lock is {self.path}.",
                holder,
            ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 400).decode(errors="replace").strip()
    return text or "holder unknown"


if os.name == "posix":
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

else:  # pragma: no cover - Windows
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
