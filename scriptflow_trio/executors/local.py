"""Run attempts as local processes, each in a process group of its own.

trio's default cancellation signals only the direct child, so the grandchildren of a
``shell=True`` command would survive a cancel. Each attempt therefore starts in a new
session (POSIX) or process group (Windows), and stopping it signals the whole group:
SIGTERM, a grace period, then SIGKILL.

Starting a process is the cost every task pays, so on Linux it takes the shortest
path: ``posix_spawn`` (vfork and exec, no Python between them) on the event loop's
own thread, a pidfd to learn of the exit without a thread, and ``wait4`` to reap it
with what the process tree used (CPU time; peak memory of its largest process, when
it is above the engine's own: below, Linux's figure is the engine's).
Elsewhere, or when the task needs what ``posix_spawn`` cannot do (another working
directory, its own PATH), ``subprocess.Popen`` starts it; trio waits for it the
portable way, and resource use is not measured.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import trio

from ._base import AttemptSpec, Executor, Outcome

_POSIX = os.name == "posix"
_FAST = sys.platform == "linux" and hasattr(os, "pidfd_open") and hasattr(os, "posix_spawn")
if _FAST:
    import resource
# ru_maxrss is in KiB on Linux, in bytes on macOS
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


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


class _Child:
    """A started attempt's leader process: wait for it (repeatably), stop its group."""

    def __init__(self, pid: int, proc: trio.Process | None, rss_floor: int) -> None:
        self.pid = pid
        self._proc = proc  # set when trio, not we, reaps the process
        self._rss_floor = rss_floor
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None
        self.max_rss: int | None = None

    async def wait(self) -> int:
        if self.returncode is not None:
            await trio.lowlevel.checkpoint()
            return self.returncode
        if self._proc is not None:
            self.returncode = await self._proc.wait()
            return self.returncode
        pidfd = os.pidfd_open(self.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        _, status, usage = os.wait4(self.pid, 0)  # noqa: ASYNC222 - it has exited
        self.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        # Linux counts, in a child's peak, the memory of the process it was spawned from
        # (until exec): at or below the engine's own peak the figure says nothing
        if usage.ru_maxrss > self._rss_floor:
            self.max_rss = usage.ru_maxrss * _RSS_UNIT
        return self.returncode


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
        self._programs: dict[str, str] = {}

    @property
    def capacity(self) -> int:
        return self.slots

    async def __aenter__(self) -> LocalExecutor:
        _raise_open_file_limit(256 + 4 * self.slots)
        return self

    async def run(self, spec: AttemptSpec) -> Outcome:
        started = time.time()
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            read_end, out_fd = os.pipe() if spec.on_output is not None else (None, log_fd)
            try:
                child = await _start(spec, out_fd, self._programs)
            except OSError as exc:
                if read_end is not None:
                    os.close(read_end)
                message = _start_error(spec, exc)
                os.write(log_fd, (message + "\n").encode())
                return Outcome(None, started, time.time(), self._host, error=message)
            finally:
                if read_end is not None:
                    os.close(out_fd)
            try:
                if read_end is not None:
                    await _pump_output(trio.lowlevel.FdStream(read_end), log_fd, spec.on_output)
                await child.wait()
            except BaseException:
                await self._stop(child)
                raise
        finally:
            os.close(log_fd)
        return Outcome(
            child.returncode,
            started,
            time.time(),
            self._host,
            job_id=str(child.pid),
            cpu_seconds=child.cpu_seconds,
            max_rss=child.max_rss,
        )

    async def _stop(self, child: _Child) -> None:
        """Stop the attempt's whole process tree, shielded from the cancellation itself."""
        with trio.CancelScope(shield=True):
            if not _POSIX:  # pragma: no cover
                assert child._proc is not None
                child._proc.kill()
                await child.wait()
                return
            _signal_group(child.pid, signal.SIGTERM)
            with trio.move_on_after(self.grace):
                await child.wait()
            # the leader may be gone while children it started still run in its group
            _signal_group(child.pid, signal.SIGKILL)
            await child.wait()


async def _start(spec: AttemptSpec, out_fd: int, programs: dict[str, str]) -> _Child:
    """Start the attempt's command with stdin from /dev/null, stdout and stderr to ``out_fd``.

    ``programs`` caches where PATH lookups found programs: posix_spawnp would try
    every PATH entry before the right one, while the engine waits for the exec.
    """
    argv = ["/bin/sh", "-c", spec.cmd] if isinstance(spec.cmd, str) else list(spec.cmd)
    env = {**os.environ, **spec.env} if spec.env else os.environ
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if _FAST else 0
    # the fast path cannot change directory, and searches the engine's PATH
    if _FAST and not (spec.env and "PATH" in spec.env) and spec.cwd == os.getcwd():
        program = argv[0]
        if os.sep not in program:
            found = programs.get(program) or shutil.which(program)
            if found is None:
                raise FileNotFoundError(program)
            programs[program] = program = found
        pid = os.posix_spawn(  # noqa: ASYNC221 - returns once the child has exec'd
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_fd, 1),
                (os.POSIX_SPAWN_DUP2, out_fd, 2),
            ],
            setsid=True,
            # Python ignores SIGPIPE and SIGXFSZ; the command should not inherit that
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
        return _Child(pid, None, floor)
    options: dict = {"cwd": spec.cwd, "env": env}
    if _POSIX:
        options["start_new_session"] = True
    else:  # pragma: no cover - exercised on Windows only
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    if not _POSIX:  # pragma: no cover
        options["shell"] = spec.shell
        argv = spec.cmd if spec.shell else argv  # type: ignore[assignment]
    proc = await trio.lowlevel.open_process(
        argv, stdout=out_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **options
    )
    return _Child(proc.pid, proc, floor)


async def _pump_output(
    stream: trio.lowlevel.FdStream, log_fd: int, on_output: Callable[[str], None]
) -> None:
    """Copy the child's output to its log and hand complete lines to ``on_output``."""
    pending = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
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
