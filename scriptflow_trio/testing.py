"""A fake executor for testing flows without starting processes.

``FakeExecutor`` takes the place of a real executor: each attempt waits ``duration``
seconds of trio time (so ``trio.testing.MockClock`` makes it instant), asks
``behaviour(spec)`` for an exit code, and on success makes every literal output, as
an empty file (on failure, it writes a one-line log). It records what it ran, so a
test can assert on it::

    fake = FakeExecutor(slots=2, duration=1.0)
    async with sf.open_session(executors=[fake]) as session:
        await session.run(flow_sleepit)
    assert [s.name for s in fake.runs] == ["solve-1", "solve-2", "final"]
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable

import trio

from .executors._base import AttemptSpec, Executor, Outcome


class FakeExecutor(Executor):
    """Pretends to run attempts; see the module docstring."""

    def __init__(
        self,
        slots: int = 4,
        *,
        name: str = "local",
        duration: float = 0.0,
        behaviour: Callable[[AttemptSpec], int] | None = None,
        write_outputs: bool = True,
    ) -> None:
        self.slots = slots
        self.name = name
        self.duration = duration
        self.behaviour = behaviour
        self.write_outputs = write_outputs
        self.runs: list[AttemptSpec] = []
        self.cancelled: list[AttemptSpec] = []
        self.running = 0
        self.max_running = 0
        self._host = socket.gethostname()
        self._dirs: set[str] = set()  # directories known to exist
        self._mknod = True  # until the system refuses

    @property
    def capacity(self) -> int:
        return self.slots

    async def run(self, spec: AttemptSpec) -> Outcome:
        self.runs.append(spec)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        started = time.time()
        try:
            if self.duration:
                await trio.sleep(self.duration)
            else:
                await trio.lowlevel.checkpoint()
            returncode = self.behaviour(spec) if self.behaviour is not None else 0
        except trio.Cancelled:
            self.cancelled.append(spec)
            raise
        finally:
            self.running -= 1
        if returncode != 0:  # a log only where someone will read it: creating files is slow
            with open(spec.log_path, "w") as log:
                log.write(f"fake run of {spec.cmd!r}: exit {returncode}\n")
        if returncode == 0 and self.write_outputs:
            for path in spec.outputs:
                parent = path.rpartition("/")[0] or os.path.dirname(path) or "."
                if parent not in self._dirs:
                    os.makedirs(parent, exist_ok=True)
                    self._dirs.add(parent)
                self._create(path)
        return Outcome(returncode, started, time.time(), self._host, "fake")  # job_id "fake"

    def _create(self, path: str) -> None:
        """Make ``path`` an empty file, new or emptied: what a real command leaves, cheaply.

        One system call (``mknod``) where the file is new and the system lets anyone
        make a regular file that way; else open and close.
        """
        if self._mknod:
            try:
                os.mknod(path, 0o644 | stat.S_IFREG)
                return
            except FileExistsError:
                pass
            except (PermissionError, AttributeError, NotImplementedError):
                self._mknod = False
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
