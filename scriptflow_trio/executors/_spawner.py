"""Starts and reaps the local executor's attempts, in a small process of its own.

The engine (``LocalExecutor``) runs this module as ``python -I -S -c "import _spawner;
..." FD SLOTS`` (so that its bytecode is cached), FD being its end of a socket pair. It
uses the standard library only, and of that only modules written in C, so that it
starts in a few milliseconds and stays a few megabytes small.

Why a process: ``posix_spawn`` returns only once the child has exec'd, and the child
then often keeps the CPU its parent was waiting for. An engine of tens of megabytes
with a second thread, on a machine whose cores its tasks keep busy, waited about a
millisecond per spawn that way: as long as a ``touch`` takes. Here the spawner is the
one that waits, and the engine goes on with its own work on the other core. Starting
and reaping in one place also batches: every exit that happened since the last look
reaches the engine in one read, and while the queue holds a successor for every slot,
what the engine would hear waits up to ``HOLD`` for more (1,000 one-millisecond tasks
on 2 cores: 6 % less wall time).

The engine may send more work than SLOTS holds (the executor's ``lookahead``): the
spawner queues it, in order, and starts the next attempt that fits the moment one
ends, without waiting for the engine to take notice. It says when it starts an attempt
the engine asked to hear about (one that may have waited in the queue).

Each attempt runs in a session of its own, with stdin from /dev/null and stdout and
stderr to a pipe that the spawner copies to the attempt's log file, created when the
first byte arrives (most tasks print nothing). The attempt ends when its leader
process exits: SIGCHLD wakes the spawner, and ``wait3`` reaps every child that ended,
with what its tree used. The spawner keeps the pipe's write end open until then, so
that a silent attempt costs one wake-up (its exit), not two (its end of file too).

Messages go both ways as marshal'd tuples, each behind its length (4 bytes):

engine to spawner
    ("run", id, cost, report, program, argv, env or None, cwd, log path, stream)
                              (a negative id: a retry, queued at the front)
    ("env", env)              the environment of the attempts that follow
    ("signal", id, signum)    to the attempt's process group while its leader runs;
                              an attempt still queued is dropped instead
spawner to engine
    ("ready",)                it runs: what it is sent from now on may have started
    ("started", id, pid, report, time)   an attempt started (``report``: it was
                              sent when the slots were full, and the engine waits for this)
    ("exit", id, pid, returncode, cpu seconds, peak RSS in bytes or None, printed, time)
    ("fail", id, errno, message)   the attempt could not be started
    ("dropped", id)                a queued attempt was signalled: it never started
    ("out", id, bytes)             output of an attempt that streams it
    ("crash", text)                the spawner's own failure, just before it ends

When the engine closes its end, or dies, every attempt still running is killed
(SIGKILL to its process group) and the spawner ends.
"""

from __future__ import annotations

import _signal as signal  # the C module behind signal, without the enums: a third of the start
import marshal
import os
import resource
import select
import struct
import sys
import time

TYPE_CHECKING = False  # typing and socket would slow the start
if TYPE_CHECKING:
    import socket

LENGTH = struct.Struct("<I")
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)  # Python ignores them; tasks must not
_CHUNK = 1 << 16
_KIB = 1024  # ru_maxrss is in KiB on Linux
HOLD = 0.005  # seconds: how long the engine's news may wait while it has queued work


def frame(message: tuple | list) -> bytes:
    """``message`` as it travels: its length, then its marshal'd bytes."""
    data = marshal.dumps(message)
    return LENGTH.pack(len(data)) + data


def frames(buffer: bytearray) -> list:
    """The whole messages at the start of ``buffer``, which loses them."""
    messages = []
    view = memoryview(buffer)
    at, end = 0, len(buffer)
    while end - at >= 4:
        (size,) = LENGTH.unpack_from(view, at)
        if end - at - 4 < size:
            break
        messages.append(marshal.loads(view[at + 4 : at + 4 + size]))
        at += 4 + size
    view.release()
    del buffer[:at]
    return messages


def send_now(sock: socket.socket, outbox: bytearray, data: bytes) -> bool:
    """Send ``data`` on the non-blocking ``sock`` now, unless ``outbox`` holds some already.

    What the socket does not take goes to ``outbox``, in order: True when something
    waits there for the socket to be writable. OSError when the peer is gone.
    """
    if not outbox:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return False
        data = data[sent:]
    outbox += data
    return True


class _Attempt:
    __slots__ = ("ident", "cost", "pid", "pipe", "writer", "log_path", "log", "stream")

    def __init__(self, ident: int, cost: int, pid: int, pipe: int, writer: int, log_path: str,
                 stream: bool) -> None:  # fmt: skip
        self.ident = ident
        self.cost = cost
        self.pid = pid
        self.pipe = pipe  # the read end, watched
        self.writer = writer  # the write end, held until the leader is reaped
        self.log_path = log_path
        self.log = -1
        self.stream = stream


class Spawner:
    """The spawner's loop: one epoll set over the engine's socket and every attempt."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.slots = slots
        self.free = slots
        self.queue: list[tuple] = []  # "run" messages, in order (at most the lookahead)
        self.poll = select.epoll()
        self.poll.register(fd, select.EPOLLIN)
        # SIGCHLD writes a byte here (the handler itself does nothing)
        self.child_ended, wakeup = os.pipe()
        os.set_blocking(self.child_ended, False)
        os.set_blocking(wakeup, False)
        signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)
        self.poll.register(self.child_ended, select.EPOLLIN)
        self.pipes: dict[int, _Attempt] = {}  # read end -> its attempt
        self.pids: dict[int, _Attempt] = {}
        self.running: dict[int, _Attempt] = {}  # id -> attempt
        self.floor = 0  # the spawner's own peak RSS (KiB), looked at now and then
        self.reaped = 0
        self.env = getattr(os.environ, "_data", None) or dict(os.environ)
        self.cwd = os.getcwd()
        self.inbox = bytearray()
        self.outbox: list[bytes] = []
        self.held_since = 0.0  # when the oldest message of the outbox was held back

    def serve(self) -> None:
        timeout = -1.0
        while True:
            for fd, _ in self.poll.poll(timeout):
                if fd == self.fd:
                    if not self.receive():
                        return
                elif fd == self.child_ended:
                    self.reap()
                else:
                    attempt = self.pipes.get(fd)
                    if attempt is not None:  # else it ended earlier in this round
                        self.copy(attempt)
            timeout = self.flush()

    # -- from the engine ----------------------------------------------------------

    def receive(self) -> bool:
        try:
            data = os.read(self.fd, _CHUNK)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.inbox += data
        for message in frames(self.inbox):
            kind = message[0]
            if kind == "run":
                if message[1] < 0:  # a retry: it had a slot, it waits at the front
                    self.queue.insert(0, (kind, -message[1], *message[2:]))
                else:
                    self.queue.append(message)
            elif kind == "signal":
                self.signal(message[1], message[2])
            elif kind == "env":
                self.env = message[1]
        self.pump()
        return True

    def signal(self, ident: int, signum: int) -> None:
        attempt = self.running.get(ident)
        if attempt is not None:
            _signal_group(attempt.pid, signum)
            return
        for message in self.queue:
            if message[1] == ident:
                self.queue.remove(message)
                self.send(("dropped", ident))
                return

    def pump(self) -> None:
        """Start queued attempts, in order, while the next one fits."""
        queue = self.queue
        while queue and queue[0][2] <= self.free:
            _, ident, cost, report, *command = queue.pop(0)
            self.free -= cost
            pid = self.start(ident, cost, *command)
            if pid:
                self.send(("started", ident, pid, report, time.time()))

    def start(
        self,
        ident: int,
        cost: int,
        program: str,
        argv: list[str],
        env: dict | None,
        cwd: str,
        log_path: str,
        stream: bool,
    ) -> int:
        """Start one attempt; its pid, or 0 when it could not start (the engine is told)."""
        read_end, write_end = os.pipe()
        try:
            if cwd != self.cwd:
                os.chdir(cwd)
                self.cwd = cwd
            pid = os.posix_spawn(
                program,
                argv,
                self.env if env is None else env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, 1),
                    (os.POSIX_SPAWN_DUP2, write_end, 2),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            self.free += cost
            self.send(("fail", ident, exc.errno or 0, exc.strerror or str(exc)))
            return 0
        os.set_blocking(read_end, False)
        attempt = _Attempt(ident, cost, pid, read_end, write_end, log_path, stream)
        self.running[ident] = self.pids[pid] = self.pipes[read_end] = attempt
        self.poll.register(read_end, select.EPOLLIN)
        return pid

    # -- from the attempts --------------------------------------------------------

    def copy(self, attempt: _Attempt, reads: int = 16) -> None:
        """Copy what the attempt's pipe holds now to its log (the pipe never ends early)."""
        for _ in range(reads):
            try:
                chunk = os.read(attempt.pipe, _CHUNK)
            except BlockingIOError:
                return
            if attempt.log < 0:
                attempt.log = os.open(
                    attempt.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
                )
            _write_all(attempt.log, chunk)
            if attempt.stream:
                self.send(("out", attempt.ident, chunk))

    def reap(self) -> None:
        """Reap every child that ended, and finish its attempt."""
        try:
            os.read(self.child_ended, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status, usage = os.wait3(os.WNOHANG)
            except ChildProcessError:  # no child at all
                break
            if pid == 0:
                break
            attempt = self.pids.pop(pid, None)
            if attempt is not None:
                self.finish(attempt, status, usage)
        self.pump()

    def finish(self, attempt: _Attempt, status: int, usage: resource.struct_rusage) -> None:
        """The leader exited: take what it wrote before, tell the engine.

        A process it left behind that still holds the pipe is not waited for.
        """
        ended = time.time()
        self.copy(attempt, reads=64)
        del self.pipes[attempt.pipe]
        os.close(attempt.pipe)  # closing it also takes it out of the epoll set
        os.close(attempt.writer)
        del self.running[attempt.ident]
        self.free += attempt.cost
        printed = attempt.log >= 0
        if printed:
            os.close(attempt.log)
        # until its exec, a child's peak counts the spawner's own memory: at or below
        # that, the figure says nothing
        if self.reaped % 256 == 0:
            self.floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.reaped += 1
        peak = usage.ru_maxrss * _KIB if usage.ru_maxrss > self.floor else None
        self.send(
            (
                "exit",
                attempt.ident,
                attempt.pid,
                os.waitstatus_to_exitcode(status),
                usage.ru_utime + usage.ru_stime,
                peak,
                printed,
                ended,
            )
        )

    # -- to the engine ------------------------------------------------------------

    def send(self, message: tuple) -> None:
        self.outbox.append(frame(message))

    def flush(self) -> float:
        """Send what this round produced, in one write, unless it can wait: the time
        left before it must be sent (-1: nothing waits).

        While the queue holds work for every slot, the engine has nothing to do about
        an end soon, so what it would hear waits (at most ``HOLD`` seconds) for more to
        join it: waking the engine for each end, whose work shares the cores with the
        attempts, cost it more than the work itself.
        """
        if not self.outbox:
            return -1.0
        if len(self.queue) >= self.slots:
            now = time.monotonic()
            if not self.held_since:
                self.held_since = now
            left = HOLD - (now - self.held_since)  # never above HOLD, as floats round
            if left > 0:
                return left
        self.held_since = 0.0
        data = b"".join(self.outbox)
        self.outbox.clear()
        _write_all(self.fd, data)
        return -1.0

    def kill_all(self) -> None:
        for attempt in self.running.values():
            _signal_group(attempt.pid, signal.SIGKILL)
        for attempt in self.running.values():
            try:
                os.waitpid(attempt.pid, 0)
            except ChildProcessError:
                pass


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD's handler: the wake-up byte it makes Python write is what counts."""


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    os.set_inheritable(fd, False)  # the attempts must not hold the engine's socket
    spawner = Spawner(fd, int(argv[2]))
    try:
        _write_all(fd, frame(("ready",)))
        spawner.serve()
    except BrokenPipeError:
        pass
    except BaseException:
        import traceback

        try:
            _write_all(fd, frame(("crash", traceback.format_exc())))
        except OSError:
            pass
        spawner.kill_all()
        return 1
    spawner.kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
