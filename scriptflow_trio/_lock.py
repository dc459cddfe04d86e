"""One session per state directory: an OS file lock, released by the kernel when the
processes holding it die, so a killed engine's lock never blocks the next run.

The session's store writer holds it too, and outlives a killed engine by the moment it
takes to write what it was handed: a session that finds the lock held by an engine
that is gone waits for that (a few seconds at most), instead of refusing to start.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from ._errors import StoreLocked

LOCK_FILE = "lock"
_FINISHING = 10.0  # seconds a dead engine's store writer gets to finish


class StateLock:
    """Held for the life of a session; ``acquire`` fails at once if another holds it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_when_free(fd)
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

    def fileno(self) -> int | None:
        """The locked descriptor (None when not held): a process holding a copy holds the lock."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _lock_when_free(fd: int) -> None:
    """Lock ``fd`` now or, if the engine that holds it is dead, once its writer ends.

    Waiting is a short sleep between tries: it happens once, after a crash.
    """
    deadline: float | None = None
    while True:
        try:
            _lock(fd)
            return
        except OSError:
            if deadline is None:
                if not _holder_is_gone(_read(fd)):
                    raise
                deadline = time.monotonic() + _FINISHING
            elif time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _holder_is_gone(holder: str) -> bool:
    """Whether the engine the lock file names ran on this host and has ended."""
    found = re.match(r"pid (\d+) on (\S+), since", holder)
    if found is None or found.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


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
