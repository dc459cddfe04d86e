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
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
        return self.reap()

    def reap(self) -> int:
        """Collect the exited leader (``wait4``: its exit status and what its tree used)."""
        _, status, usage = os.wait4(self.pid, 0)
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
        log = _Log(spec.log_path, spec.on_output)
        read_end, write_end = os.pipe()
        try:
            child = await _start(spec, write_end, self._programs)
        except OSError as exc:
            os.close(read_end)
            message = _start_error(spec, exc)
            log.write((message + "\n").encode())
            log.close()
            return Outcome(None, started, time.time(), self._host, error=message)
        finally:
            os.close(write_end)
        try:
            await _follow(child, read_end, log)
        except BaseException:
            await self._stop(child)
            raise
        finally:
            log.close()
        return Outcome(
            child.returncode,
            started,
            time.time(),
            self._host,
            job_id=str(child.pid),
            cpu_seconds=child.cpu_seconds,
            max_rss=child.max_rss,
            printed=log.created,
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


def _environ() -> Mapping[Any, Any]:
    """The engine's environment, as posix_spawn reads it fastest.

    ``os.environ`` decodes every variable through Python code at each spawn (35 us
    here); its backing dict of bytes, always current, is read in C. It is private to
    CPython, hence the fallback.
    """
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


async def _start(spec: AttemptSpec, out_fd: int, programs: dict[str, str]) -> _Child:
    """Start the attempt's command with stdin from /dev/null, stdout and stderr to ``out_fd``.

    ``programs`` caches where PATH lookups found programs: posix_spawnp would try
    every PATH entry before the right one, while the engine waits for the exec.
    """
    argv = ["/bin/sh", "-c", spec.cmd] if isinstance(spec.cmd, str) else list(spec.cmd)
    env: Mapping[Any, Any] = {**os.environ, **spec.env} if spec.env else _environ()
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if _FAST else 0
    # the fast path cannot change directory, and searches the engine's PATH
    if _FAST and not (spec.env and "PATH" in spec.env) and spec.cwd == os.getcwd():
        program = argv[0]
        if os.sep not in program:
            key = f"{os.environ.get('PATH', '')}\0{program}"  # the flow may change PATH
            found = programs.get(key) or shutil.which(program)
            if found is None:
                raise FileNotFoundError(program)
            programs[key] = program = found
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


class _Log:
    """An attempt's log file, created when the first byte of output arrives.

    Most tasks print nothing; creating a file per task is what costs most after
    starting its process (a third of a millisecond on a busy disk here, and far more
    on a network file system), so a silent attempt leaves no log file behind.
    """

    def __init__(self, path: Path, on_output: Callable[[str], None] | None) -> None:
        self.path = path
        self.on_output = on_output
        self.created = False
        self._fd = -1
        self._pending = b""

    def write(self, chunk: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.created = True
        os.write(self._fd, chunk)
        if self.on_output is not None:
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            for line in lines:
                self.on_output(line.decode(errors="replace").rstrip("\r"))

    def close(self) -> None:
        if self.on_output is not None and self._pending:
            self.on_output(self._pending.decode(errors="replace"))
            self._pending = b""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def _follow(child: _Child, pipe: int, log: _Log) -> None:
    """Copy the attempt's output to its log until its leader process exits; reap it.

    What the leader wrote before exiting is in the pipe then; a process it left behind
    that still holds the pipe is not waited for (its later output is lost). On Linux
    one epoll set of the attempt's own watches both the pipe and the leader's pidfd,
    so that following an attempt takes one trio wait, not two tasks. Closes ``pipe``.
    """
    if child._proc is not None:  # the portable path: a reader task beside the wait
        async with trio.lowlevel.FdStream(pipe) as stream:

            async def copy() -> None:
                while chunk := await stream.receive_some(65536):
                    log.write(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(copy)
                await child.wait()
                nursery.cancel_scope.cancel()
            _drain(stream.fileno(), log)
        return
    try:
        pidfd = os.pidfd_open(child.pid)
    except OSError:
        os.close(pipe)
        raise
    # the pipe stays blocking (its write end is the command's stdout): it is read only
    # when the epoll set says it is readable, and a read then does not wait
    watch = select.epoll(2)
    try:
        watch.register(pipe, select.EPOLLIN)
        watch.register(pidfd, select.EPOLLIN)
        reading, exited = True, False
        while not exited:
            await trio.lowlevel.wait_readable(watch.fileno())
            ready = {fd for fd, _ in watch.poll(0)}
            exited = pidfd in ready
            if reading and pipe in ready:
                reading = _copy(pipe, log)
                if not reading and not exited:
                    watch.unregister(pipe)
        for _ in range(64):  # what is left in the pipe, without waiting for more
            if not reading or pipe not in {fd for fd, _ in watch.poll(0)}:
                break
            reading = _copy(pipe, log)
        child.reap()
    finally:
        watch.close()
        os.close(pidfd)
        os.close(pipe)


def _copy(fd: int, log: _Log) -> bool:
    """Copy one read of the (readable) pipe to the log; False at its end."""
    chunk = os.read(fd, 65536)
    if chunk:
        log.write(chunk)
    return bool(chunk)


def _drain(fd: int, log: _Log) -> None:
    """Copy what is in a non-blocking pipe now, without waiting for more."""
    for _ in range(64):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        log.write(chunk)


def _start_error(spec: AttemptSpec, exc: OSError) -> str:
    program = spec.cmd if spec.shell else spec.cmd[0]
    if isinstance(exc, FileNotFoundError):
        if not os.path.isdir(spec.cwd):
            return f"working directory {spec.cwd} does not exist"
        return f"command not found: {program!r} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        return f"command {program!r} is not executable"
    return f"could not start {program!r}: {exc}"
