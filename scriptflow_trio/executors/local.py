"""Run attempts as local processes, each in a process group of its own.

trio's default cancellation signals only the direct child, so the grandchildren of a
``shell=True`` command would survive a cancel. Each attempt therefore starts in a new
session (POSIX) or process group (Windows), and stopping it signals the whole group:
SIGTERM, a grace period, then SIGKILL.

On Linux a small helper process, the spawner (``_spawner.py``), starts and reaps the
attempts: the engine sends it each command over a socket and hears back how it ended
(exit code, CPU time, peak memory), while it goes on with its own work. Starting a
process from the engine itself blocked the engine until the child had exec'd, often a
millisecond on a busy machine (see ``_spawner.py``). The executor takes eight attempts
per slot beyond its slots (``lookahead``): the spawner holds them and starts the next
the moment a slot frees, and the session hears of the start through
``spec.on_started``. If the engine dies, the spawner kills what it started.

Elsewhere, or when the spawner is gone, ``subprocess`` starts each attempt and trio
waits for it the portable way (resource use is then not measured).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from . import _spawner
from ._base import AttemptSpec, Executor, Outcome
from ._spawner import _signal_group

_POSIX = os.name == "posix"
_SPAWNER = sys.platform == "linux" and bool(sys.executable)
# run as a module, not a script, so that its bytecode is cached
_LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import _spawner; "
    "sys.exit(_spawner.main(sys.argv))"
)
# ru_maxrss is in KiB on Linux, in bytes on macOS
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _raise_open_file_limit(needed: int) -> None:
    """Each running attempt holds pipes and a log file: make room for ``slots`` of them."""
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
        self._programs: dict[str, str] = {}
        self._spawner: _Spawner | None = None
        self._stack: AsyncExitStack | None = None
        self._lookahead = 0
        self._room: _Room | None = None  # the slots, when the spawner is lost
        self._prepared: _Spawner | None = None  # started by prepare(), not yet served

    @property
    def capacity(self) -> int:
        return self.slots

    @property
    def lookahead(self) -> int:  # type: ignore[override]
        return self._lookahead

    def prepare(self) -> None:
        """Start the spawner process now, so that its start-up (about 10 ms) overlaps
        what comes before the executor is entered (the CLI opens the store meanwhile).

        Optional: entering the executor starts it otherwise. A prepared spawner that is
        never used ends with this process.
        """
        if _SPAWNER and self._prepared is None and self._spawner is None:
            self._prepared = _Spawner.start(self.slots)

    async def __aenter__(self) -> LocalExecutor:
        _raise_open_file_limit(256 + 4 * self.slots)
        if _SPAWNER:
            self._stack = AsyncExitStack()
            nursery = await self._stack.enter_async_context(trio.open_nursery())
            self._spawner, self._prepared = self._prepared or _Spawner.start(self.slots), None
            nursery.start_soon(self._spawner.serve, name=f"{self.name} spawner")
            # eight per slot: while the queue holds a successor for every slot, the
            # spawner holds its news (HOLD), so a deeper queue makes fewer, bigger batches
            # (1,000 touches: 3 % less wall time than two per slot; 10,000: 5 %)
            self._lookahead = 8 * self.slots
            self._room = _Room(self.slots)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        spawner, self._spawner = self._spawner, None
        stack, self._stack = self._stack, None
        self._lookahead, self._room = 0, None
        try:
            if spawner is not None:
                await spawner.close()
        finally:
            if stack is not None:
                await stack.aclose()

    async def run(self, spec: AttemptSpec) -> Outcome:
        started = time.time()
        spawner = self._spawner
        if spawner is None or spawner.lost:
            return await self._run_without_spawner(spec, started)
        try:
            program, argv, env = self._command(spec)
        except OSError as exc:
            await trio.lowlevel.checkpoint()
            return self._not_started(spec, exc, started)
        attempt = spawner.submit(
            self.cost(spec.cores),
            program,
            argv,
            env,
            spec.cwd,
            str(spec.log_path),
            spec.on_output,
            spec.on_started,
            retry=spec.attempt > 1,
        )
        try:
            await attempt.wait()
        except BaseException:
            await self._stop(attempt, spawner)
            raise
        if attempt.never_started:  # the spawner could not even run: do without it
            return await self._run_without_spawner(spec, started)
        if attempt.error is not None:
            return self._not_started(spec, attempt.error, started)
        return Outcome(
            attempt.returncode,
            attempt.began or started,
            attempt.ended or time.time(),
            self._host,
            job_id=str(attempt.pid) if attempt.pid else "",
            lost=attempt.lost,
            cpu_seconds=attempt.cpu_seconds,
            max_rss=attempt.max_rss,
            printed=attempt.printed,
        )

    async def _run_without_spawner(self, spec: AttemptSpec, started: float) -> Outcome:
        """Run the attempt through ``subprocess`` (no spawner here, or none any more)."""
        if self._room is None:
            return await self._run_portable(spec, started)
        # the session counts on the lookahead: keep to the slots here instead
        cost = self.cost(spec.cores)
        await self._room.take(cost)
        try:
            started = time.time()
            if spec.on_started is not None:
                spec.on_started(started)
            return await self._run_portable(spec, started)
        finally:
            self._room.give(cost)

    def _command(self, spec: AttemptSpec) -> tuple[str, list[str], dict[str, str] | None]:
        """The program to start (found on PATH once per PATH), its argv, its environment.

        A program found on PATH is remembered: looking it up at each start would stat
        every PATH entry before the right one. The environment is None when it is the
        engine's own, which the spawner keeps.
        """
        argv = _argv(spec)
        env = {**os.environ, **spec.env} if spec.env else None
        program = argv[0]
        if os.sep not in program:
            path = (env if env is not None else os.environ).get("PATH", os.defpath)
            key = f"{path}\0{program}"  # the flow may change PATH
            found = self._programs.get(key)
            if found is None:
                found = shutil.which(program, path=path)
                if found is None:
                    raise FileNotFoundError(program)
                self._programs[key] = found = os.path.abspath(found)
            program = found
        return program, argv, env

    def _not_started(self, spec: AttemptSpec, exc: OSError, started: float) -> Outcome:
        message = _start_error(spec, exc)
        with open(spec.log_path, "w", encoding="utf-8") as log:
            log.write(message + "\n")
        return Outcome(None, started, time.time(), self._host, error=message)

    async def _stop(self, attempt: _Attempt, spawner: _Spawner) -> None:
        """Stop the attempt's whole process tree, shielded from the cancellation itself."""
        with trio.CancelScope(shield=True):
            spawner.signal(attempt, signal.SIGTERM)
            with trio.move_on_after(self.grace):
                await attempt.wait_shielded()
            spawner.signal(attempt, signal.SIGKILL)
            await attempt.wait_shielded()
            # the leader is gone; children it started may still run in its group
            if attempt.pid:
                _signal_group(attempt.pid, signal.SIGKILL)

    async def _run_portable(self, spec: AttemptSpec, started: float) -> Outcome:
        """Start the attempt with ``subprocess`` and copy its output from a pipe."""
        argv = _argv(spec)
        env: Mapping[Any, Any] = {**os.environ, **spec.env} if spec.env else os.environ
        options: dict[str, Any] = {"cwd": spec.cwd, "env": env}
        if _POSIX:
            options["start_new_session"] = True
        else:  # pragma: no cover - exercised on Windows only
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            options["shell"] = spec.shell
            argv = spec.cmd if spec.shell else argv  # type: ignore[assignment]
        log = _Log(spec.log_path, spec.on_output)
        read_end, write_end = os.pipe()
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdout=write_end,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **options,
            )
        except OSError as exc:
            os.close(read_end)
            return self._not_started(spec, exc, started)
        finally:
            os.close(write_end)
        try:
            async with trio.lowlevel.FdStream(read_end) as stream:

                async def copy() -> None:
                    while chunk := await stream.receive_some(65536):
                        log.write(chunk)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(copy)
                    try:
                        await proc.wait()
                    except BaseException:
                        await self._stop_portable(proc)
                        raise
                    nursery.cancel_scope.cancel()
                _drain(stream.fileno(), log)
        finally:
            log.close()
        return Outcome(
            proc.returncode,
            started,
            time.time(),
            self._host,
            job_id=str(proc.pid),
            printed=log.created,
        )

    async def _stop_portable(self, proc: trio.Process) -> None:
        with trio.CancelScope(shield=True):
            if not _POSIX:  # pragma: no cover
                proc.kill()
                await proc.wait()
                return
            _signal_group(proc.pid, signal.SIGTERM)
            with trio.move_on_after(self.grace):
                await proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()


def _argv(spec: AttemptSpec) -> list[str]:
    """The attempt's command as an argv (a string goes to the shell)."""
    return ["/bin/sh", "-c", spec.cmd] if isinstance(spec.cmd, str) else list(spec.cmd)


class _Room:
    """Free slots, taken and given back by cost (for the portable path only)."""

    def __init__(self, units: int) -> None:
        self.free = units
        self._changed = trio.Event()

    async def take(self, cost: int) -> None:
        while cost > self.free:
            await self._changed.wait()
        self.free -= cost
        await trio.lowlevel.checkpoint()

    def give(self, cost: int) -> None:
        self.free += cost
        self._changed.set()
        self._changed = trio.Event()


def _environ() -> Mapping[Any, Any]:
    """The engine's environment as the spawner reads it fastest, bytes to bytes.

    ``os.environ`` decodes every variable through Python code; its backing dict of
    bytes, always current, does not. It is private to CPython, hence the fallback.
    """
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else dict(os.environ)


class _Attempt:
    """An attempt handed to the spawner: how it ended, once it has."""

    __slots__ = (
        "ident",
        "cost",
        "lines",
        "on_started",
        "done",
        "pid",
        "returncode",
        "cpu_seconds",
        "max_rss",
        "printed",
        "error",
        "lost",
        "began",
        "ended",
        "never_started",
        "_task",
        "_event",
    )

    def __init__(
        self,
        ident: int,
        cost: int,
        on_output: Callable[[str], None] | None,
        on_started: Callable[[float], None] | None,
    ) -> None:
        self.ident = ident
        self.cost = cost
        self.lines = _Lines(on_output) if on_output is not None else None
        self.on_started = on_started
        self.done = False
        self.pid = 0
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None
        self.max_rss: int | None = None
        self.printed = False
        self.error: OSError | None = None
        self.lost = ""
        self.began = 0.0  # when it started, as the spawner saw it (or when it was sent)
        self.ended = 0.0  # when its leader was reaped
        self.never_started = False  # lost with a spawner that never ran: safe to start again
        self._task: trio.lowlevel.Task | None = None
        self._event: trio.Event | None = None

    async def wait(self) -> None:
        """Wait for the attempt's end (no trio.Event: one task waits, cancellably)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def wait_shielded(self) -> None:
        """Wait for the end while stopping the attempt (from a shielded scope)."""
        if not self.done:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()

    def output(self, chunk: bytes) -> None:
        if self.lines is not None:
            self.lines.feed(chunk)

    def end(self) -> None:
        if self.lines is not None:
            self.lines.flush()
        self.done = True
        if self._task is not None:
            trio.lowlevel.reschedule(self._task)
            self._task = None
        if self._event is not None:
            self._event.set()


class _Spawner:
    """The engine's side of the spawner process: send commands, hear how they ended."""

    def __init__(self, sock: socket.socket, pid: int, slots: int) -> None:
        self._sock = sock
        self.pid = pid
        self._slots = slots
        self._taken = 0  # units of the attempts sent that have not ended
        self._attempts: dict[int, _Attempt] = {}
        self._next = 0
        self._env: Mapping[Any, Any] | None = None  # the environment the spawner has
        self._outbox = bytearray()  # what the socket would not take at once
        self._flush = trio.Event()
        self.lost = ""  # why the spawner is gone, if it is
        self.ready = False  # it said it runs: until then, nothing sent can have started
        self._over = trio.Event()  # serve() is over: the spawner closed its end

    @classmethod
    def start(cls, slots: int) -> _Spawner:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-c", _LAUNCH, os.path.dirname(_spawner.__file__)]
                + ["3", str(slots)],
                _environ(),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setsid=True,  # no terminal signals: the engine decides
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        return cls(mine, pid, slots)

    def submit(
        self,
        cost: int,
        program: str,
        argv: list[str],
        env: Mapping[str, str] | None,
        cwd: str,
        log_path: str,
        on_output: Callable[[str], None] | None,
        on_started: Callable[[float], None] | None,
        retry: bool = False,
    ) -> _Attempt:
        """Send one attempt; it starts at once if the slots have room, else when they do.

        When the slots have room for everything sent, the attempt starts as soon as
        the spawner reads it (``on_started`` is called now); otherwise the spawner says
        when it starts. A retry waits at the front of the spawner's queue: its task had
        a slot.
        """
        self._next += 1
        attempt = _Attempt(self._next, cost, on_output, on_started)
        self._attempts[attempt.ident] = attempt
        self._taken += cost
        report = self._taken > self._slots
        out = b""
        if env is None:
            now = _environ()
            if now != self._env:
                self._env = dict(now)
                out = _spawner.frame(("env", self._env))
        else:
            env = dict(env)
        stream = on_output is not None
        ident = -attempt.ident if retry else attempt.ident
        message = ("run", ident, cost, report, program, argv, env, cwd, log_path, stream)
        # one that waits in the spawner's queue anyway goes with the others this round
        self._send(out + _spawner.frame(message), now=not report)
        if not report:
            attempt.began = time.time()
            if on_started is not None:
                on_started(attempt.began)
        return attempt

    def signal(self, attempt: _Attempt, signum: int) -> None:
        if not attempt.done and not self.lost:
            self._send(_spawner.frame(("signal", attempt.ident, int(signum))))

    def _send(self, data: bytes, now: bool = True) -> None:
        """Send ``data`` after what waits already: at once, or (``now`` false) from the
        flusher, once the tasks woken with this one have sent theirs.

        The attempts that wait in the spawner's queue (the slots are full) can wait:
        sent one by one, each woke the spawner, which shares the cores with them.
        """
        self._outbox += data
        if now and not self._push():
            return
        if self._outbox:
            self._flush.set()

    def _push(self) -> bool:
        """Send what the outbox holds, as much as the socket takes now; False when the
        spawner is gone."""
        try:
            sent = self._sock.send(self._outbox)
        except BlockingIOError:
            return True
        except OSError as exc:
            self._gone(f"the process spawner cannot be reached ({exc})")
            return False
        del self._outbox[:sent]
        return True

    async def serve(self) -> None:
        """Read the spawner's messages until it ends; send what the socket would not take.

        Shielded: after Ctrl-C, attempts being stopped still wait for their ends, which
        come this way. :meth:`close` makes the spawner end, and so this.
        """
        with trio.CancelScope(shield=True):
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flusher)
                    await self._read()
                    nursery.cancel_scope.cancel()
            finally:
                self._sock.close()
                self._over.set()

    async def _read(self) -> None:
        inbox = bytearray()
        reason = "the process spawner ended"
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError as exc:
                reason = f"the process spawner cannot be read ({exc})"
                break
            if not data:
                break
            inbox += data
            for message in _spawner.frames(inbox):
                kind = message[0]
                if kind == "exit":
                    attempt = self._ended(message[1])
                    _, _, attempt.pid, attempt.returncode, attempt.cpu_seconds = message[:5]
                    attempt.max_rss, attempt.printed, attempt.ended = message[5:8]
                    attempt.end()
                elif kind == "started":
                    attempt = self._attempts[message[1]]
                    attempt.pid = message[2]
                    if message[3]:
                        attempt.began = message[4]
                        if attempt.on_started is not None:
                            attempt.on_started(attempt.began)
                elif kind == "out":
                    self._attempts[message[1]].output(message[2])
                elif kind == "fail":
                    attempt = self._ended(message[1])
                    attempt.error = OSError(message[2], message[3])
                    attempt.end()
                elif kind == "dropped":
                    attempt = self._ended(message[1])
                    attempt.end()
                elif kind == "ready":
                    self.ready = True
                elif kind == "crash":
                    reason = f"the process spawner failed: {message[1].strip().splitlines()[-1]}"
        self._gone(reason)

    def _ended(self, ident: int) -> _Attempt:
        attempt = self._attempts.pop(ident)
        self._taken -= attempt.cost
        return attempt

    async def _flusher(self) -> None:
        while True:
            await self._flush.wait()
            self._flush = trio.Event()
            while self._outbox and not self.lost and self._push():
                if self._outbox:
                    await trio.lowlevel.wait_writable(self._sock)

    def _gone(self, reason: str) -> None:
        """The spawner ended: what it ran is lost (the session may retry it elsewhere)."""
        if not self.lost:
            self.lost = reason
        attempts, self._attempts = self._attempts, {}
        for attempt in attempts.values():
            if attempt.pid:  # orphans of a spawner that was killed: no second copy runs
                _signal_group(attempt.pid, signal.SIGKILL)
            attempt.lost = self.lost
            attempt.never_started = not self.ready  # it died before it could start any
            attempt.end()

    async def close(self) -> None:
        """Let the spawner end (it kills what still runs); wait for it, shielded.

        Its end of file says it has ended (no pidfd: kernels before 5.3 have none, and
        neither has valgrind); one that has not after 5 s is killed.
        """
        with trio.CancelScope(shield=True):
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with trio.move_on_after(5) as waited:
                await self._over.wait()
            if waited.cancelled_caught:
                _signal_group(self.pid, signal.SIGKILL)
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
                if not done:  # between closing its socket and its exit: a moment
                    await trio.to_thread.run_sync(os.waitpid, self.pid, 0)
            except ChildProcessError:
                pass


class _Lines:
    """Output cut into lines for ``on_output`` (a task that is not quiet)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.pending = b""  # a line not yet ended

    def feed(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            self.on_line(line.decode(errors="replace").rstrip("\r"))

    def flush(self) -> None:
        if self.pending:
            self.on_line(self.pending.decode(errors="replace"))
            self.pending = b""


class _Log:
    """An attempt's log file, created when the first byte of output arrives.

    Most tasks print nothing; creating a file per task is what costs most after
    starting its process (a third of a millisecond on a busy disk here, and far more
    on a network file system), so a silent attempt leaves no log file behind.
    """

    def __init__(self, path: Path, on_output: Callable[[str], None] | None) -> None:
        self.path = path
        self.lines = _Lines(on_output) if on_output is not None else None
        self.created = False
        self._fd = -1

    def write(self, chunk: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.created = True
        os.write(self._fd, chunk)
        if self.lines is not None:
            self.lines.feed(chunk)

    def close(self) -> None:
        if self.lines is not None:
            self.lines.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
    if isinstance(exc, FileNotFoundError) or exc.errno == 2:
        if not os.path.isdir(spec.cwd):
            return f"working directory {spec.cwd} does not exist"
        return f"command not found: {program!r} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError) or exc.errno == 13:
        return f"command {program!r} is not executable"
    return f"could not start {program!r}: {exc.strerror or exc}"
