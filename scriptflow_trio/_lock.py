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

from ._errors import StoreError, StoreLocked

LOCK_FILE = "lock"
_FINISHING = 10.0  # seconds a dead engine's store writer gets to finish
_RETRY = 0.01  # seconds between tries meanwhile


class StateLock:
    """Held for the life of a session; refused at once while a live engine holds it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, sleeping between tries while a dead engine's writer finishes."""
        fd, deadline = self._open(), None
        while (deadline := self._try(fd, deadline)) is not None:
            try:
                time.sleep(_RETRY)
            except BaseException:  # Ctrl-C meanwhile
                os.close(fd)
                raise

    async def acquire_async(self) -> None:
        """:meth:`acquire`, waiting on trio's clock instead of blocking the event loop."""
        import trio

        fd, deadline = self._open(), None
        # nothing signals that a flock was released; this polls once, after a crash
        while (deadline := self._try(fd, deadline)) is not None:  # noqa: ASYNC110
            try:
                await trio.sleep(_RETRY)
            except BaseException:  # cancelled meanwhile
                os.close(fd)
                raise

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot use the state directory {self.path.parent} ({exc.strerror or exc}): "
                "a run keeps its records there; give this user write access to it, or "
                "point --state-dir at a directory it may write"
            ) from None

    def _try(self, fd: int, deadline: float | None) -> float | None:
        """Lock ``fd`` now: None once held; else the time until which to try again.

        Only an engine that is gone (its pid on this host has ended) is waited for: its
        store writer still holds the lock while it writes what it was handed.
        StoreLocked otherwise, and when that writer outlives ``_FINISHING``.
        """
        try:
            _lock(fd)
        except OSError:
            holder = _read(fd)
            if deadline is None and _holder_is_gone(holder):
                return time.monotonic() + _FINISHING
            if deadline is None or time.monotonic() > deadline:
                os.close(fd)
                if deadline is None:
                    what = (
                        f"another scriptflow_trio session is running in this directory ({holder})"
                    )
                else:
                    what = (
                        f"the engine that held this directory ({holder}) has ended, but a "
                        f"process it started still holds the lock after {_FINISHING:g} s "
                        "(its store writer, writing what it was handed)"
                    )
                raise StoreLocked(
                    f"{what}; wait for it to end or stop it. The lock is {self.path}.", holder
                ) from None
            return deadline
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}".encode())
        self._fd = fd
        return None

    def fileno(self) -> int | None:
        """The locked descriptor (None when not held): a process holding a copy holds the lock."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


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
