"""Run attempts as local processes, each in a process group of its own.

trio's default cancellation signals only the direct child, so the grandchildren of a
``shell=True`` command would survive a cancel. Each attempt therefore starts in a new
session (POSIX) or process group (Windows), and stopping it signals the whole group:
SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import trio

from ._base import AttemptSpec, Executor, Outcome

_POSIX = os.name == "posix"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _raise_open_file_limit(needed: int) -> None:
    """Each running child holds a pidfd and a log file: make room for ``slots`` of them."""
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class LocalExecutor(Executor):
    """Runs at most ``slots`` cores' worth of attempts at once on this machine.

    ``grace`` is how long a cancelled attempt gets between SIGTERM and SIGKILL.
    """

    def __init__(self, slots: int | None = None, *, name: str = "local", grace: float = 3.0):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be 1 or more, not {slots}")
        self.slots = slots or os.cpu_count() or 1
        self.name = name
        self.grace = grace
        self._host = socket.gethostname()

    @property
    def capacity(self) -> int:
        return self.slots

    async def __aenter__(self) -> LocalExecutor:
        _raise_open_file_limit(256 + 4 * self.slots)
        return self

    async def run(self, spec: AttemptSpec) -> Outcome:
        env = None
        if spec.env:
            env = {**os.environ, **spec.env}
        options: dict = {"cwd": spec.cwd, "env": env}
        if _POSIX:
            options["start_new_session"] = True
        else:  # pragma: no cover - exercised on Windows only
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        started = time.time()
        # creating a file can take a quarter of a millisecond: not on the event loop
        log_fd = await trio.to_thread.run_sync(
            os.open, spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )
        try:
            stdout = subprocess.PIPE if spec.on_output is not None else log_fd
            try:
                proc = await trio.lowlevel.open_process(
                    spec.cmd,
                    shell=spec.shell,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    **options,
                )
            except OSError as exc:
                message = _start_error(spec, exc)
                os.write(log_fd, (message + "\n").encode())
                return Outcome(None, started, time.time(), self._host, error=message)
            try:
                if spec.on_output is not None:
                    await _pump_output(proc, log_fd, spec.on_output)
                await proc.wait()
            except BaseException:
                await self._stop(proc)
                raise
        finally:
            os.close(log_fd)
        return Outcome(proc.returncode, started, time.time(), self._host, job_id=str(proc.pid))

    async def _stop(self, proc: trio.Process) -> None:
        """Stop the attempt's whole process tree, shielded from the cancellation itself."""
        with trio.CancelScope(shield=True):
            if not _POSIX:  # pragma: no cover
                proc.kill()
                await proc.wait()
                return
            _signal_group(proc.pid, signal.SIGTERM)
            with trio.move_on_after(self.grace):
                await proc.wait()
            # the leader may be gone while children it started still run in its group
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _pump_output(proc: trio.Process, log_fd: int, on_output) -> None:
    """Copy the child's output to its log and hand complete lines to ``on_output``."""
    assert proc.stdout is not None
    pending = b""
    async with proc.stdout:
        while chunk := await proc.stdout.receive_some(65536):
            os.write(log_fd, chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_output(line.decode(errors="replace").rstrip("\r"))
    if pending:
        on_output(pending.decode(errors="replace"))


def _start_error(spec: AttemptSpec, exc: OSError) -> str:
    program = spec.cmd if spec.shell else spec.cmd[0]
    if isinstance(exc, FileNotFoundError):
        if not os.path.isdir(spec.cwd):
            return f"working directory {spec.cwd} does not exist"
        return f"command not found: {program!r} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        return f"command {program!r} is not executable"
    return f"could not start {program!r}: {exc}"
