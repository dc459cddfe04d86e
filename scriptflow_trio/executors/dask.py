"""Run attempts on a Dask cluster: each attempt is a Dask task that runs the command.

A shared file system is assumed, as on a cluster: the worker runs the command in the
task's working directory and writes the attempt's log file where the engine expects it.

Dask is an optional extra (``pip install 'scriptflow-trio[dask]'``). Importing this
module imports neither dask nor asyncio; they are imported by the bridge thread when
the executor starts.

The bridge between trio and Dask is one thread, whatever the number of attempts::

    trio (the engine)                        bridge thread: asyncio + Dask's async Client
    run(spec) ---- loop.call_soon_threadsafe --> submit: client.submit(_run_attempt, ...)
                                                 watch: await future (a coroutine, no thread)
    attempt.done <---- token.run_sync_soon ----- the worker's (returncode, host, ...)
    cancelled ---- loop.call_soon_threadsafe --> client.run(_kill_attempts, ids) on every
                                                 worker, in batches; then cancel the future

On the worker, :func:`_run_attempt` starts the command in a session of its own (a process
group), sends its output to the log file, and reaps it with ``wait4``, which tells what
its process tree used (CPU time; peak memory of its largest process). Cancelling sends
SIGTERM to the group, then SIGKILL after ``grace`` seconds. A small guard process per
worker holds the groups the worker started and kills them if the worker itself dies, so
that a worker's death leaves no orphan writing the outputs of the retry.
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .._errors import ExecutorError
from ._base import AttemptSpec, Executor, Outcome
from .local import _RSS_UNIT, _signal_group, _start_error

_INSTALL_DASK = "the Dask executor needs dask: pip install 'scriptflow-trio[dask]'"
_INSTALL_JOBQUEUE = "jobqueue= needs dask-jobqueue: pip install 'scriptflow-trio[dask]'"
_JOBQUEUE_KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
    "oar": "OARCluster",
}
# Past SIGKILL, how long a cancelled attempt may take to report that its process is gone.
_CANCEL_MARGIN = 10.0
# How long to wait for the scheduler to answer a kill broadcast or a cancel.
_RPC_TIMEOUT = 10.0


class DaskExecutor(Executor):
    """Runs attempts as processes started by the workers of a Dask cluster.

    Where the cluster comes from:

    * no argument: a ``distributed.LocalCluster`` of ``workers`` worker processes
      (default: one per CPU) with ``cores_per_worker`` cores each, started and
      closed with the executor;
    * ``address="tcp://host:8786"``: an existing scheduler;
    * ``jobqueue={"kind": "slurm", "cores": 2, "memory": "2GB", "minimum": 0,
      "maximum": 4, ...}``: a dask-jobqueue cluster whose workers are batch jobs
      (one worker of ``cores`` cores per job), scaled between ``minimum`` and
      ``maximum`` jobs; the other keys go to the dask-jobqueue cluster class.

    A task's ``cores`` are Dask worker resources named ``cores``: a worker never runs
    more than its cores allow. ``capacity`` is ``slots`` when given, else the cores of
    the workers there at start (for jobqueue: ``maximum * cores``). ``grace`` is how
    long a cancelled attempt gets between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cores_per_worker: int = 1,
        jobqueue: Mapping[str, Any] | None = None,
        slots: int | None = None,
        name: str = "dask",
        grace: float = 3.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if address is not None and jobqueue is not None:
            raise ValueError("give address= or jobqueue=, not both")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be 1 or more, not {slots}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be 1 or more, not {workers}")
        if cores_per_worker < 1:
            raise ValueError(f"cores_per_worker must be 1 or more, not {cores_per_worker}")
        if importlib.util.find_spec("distributed") is None:
            raise ExecutorError(_INSTALL_DASK)
        if jobqueue is not None:
            jobqueue = dict(jobqueue)
            kind = str(jobqueue.get("kind", "")).lower()
            if kind not in _JOBQUEUE_KINDS:
                raise ValueError(
                    f"jobqueue needs a 'kind' among {', '.join(_JOBQUEUE_KINDS)}, "
                    f"not {jobqueue.get('kind')!r}"
                )
            if not isinstance(jobqueue.get("cores"), int) or jobqueue["cores"] < 1:
                raise ValueError("jobqueue needs 'cores': the cores of each job (an int)")
            if importlib.util.find_spec("dask_jobqueue") is None:
                raise ExecutorError(_INSTALL_JOBQUEUE)
        self.name = name
        self.grace = grace
        self._options = _Options(
            address=address,
            workers=workers or os.cpu_count() or 1,
            cores_per_worker=cores_per_worker,
            jobqueue=jobqueue,
            slots=slots,
            grace=grace,
            connect_timeout=connect_timeout,
        )
        self._bridge: _Bridge | None = None
        self._nonce = secrets.token_hex(3)
        self._counter = itertools.count()

    @property
    def capacity(self) -> int:
        if self._bridge is None or not self._bridge.ready.is_set():
            raise RuntimeError("DaskExecutor.capacity is known once the executor has started")
        return self._bridge.capacity

    @property
    def address(self) -> str:
        """The scheduler's address (once started)."""
        return self._bridge.address if self._bridge is not None else ""

    @property
    def cluster(self) -> Any:
        """The Dask cluster object this executor started (None with ``address=``).

        For looking at (``cluster.job_script()``, ``cluster.dashboard_link``): it lives on
        the executor's own thread and event loop, so call none of its async methods.
        """
        return self._bridge.cluster if self._bridge is not None else None

    async def __aenter__(self) -> DaskExecutor:
        if self._bridge is not None:
            raise RuntimeError("this DaskExecutor is already running")
        bridge = _Bridge(self._options, trio.lowlevel.current_trio_token(), self.name)
        bridge.thread.start()
        try:
            await bridge.ready.wait()
        except BaseException:
            await bridge.stop()
            raise
        if bridge.error is not None:
            await bridge.stop()
            error = bridge.error
            if isinstance(error, ExecutorError):
                raise error
            raise ExecutorError(
                f"could not start the Dask executor {self.name!r}: {type(error).__name__}: {error}"
            ) from error
        self._bridge = bridge
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            await bridge.stop()

    async def run(self, spec: AttemptSpec) -> Outcome:
        bridge = self._bridge
        if bridge is None:
            raise RuntimeError("run DaskExecutor inside `async with` (open_session does that)")
        if spec.cores > bridge.largest:
            now = time.time()
            return Outcome(
                None,
                now,
                now,
                error=f"it asks for {spec.cores} cores; the largest Dask worker has "
                f"{bridge.largest}",
            )
        safe = re.sub(r"[^A-Za-z0-9._]+", "_", spec.name)[:40] or "task"
        attempt = _Attempt(
            f"sf-{safe}-{spec.key[:8]}-{spec.attempt}-{self._nonce}{next(self._counter)}",
            spec._replace(on_output=None, on_submitted=None),
        )
        started = time.time()
        bridge.call(bridge.submit, attempt)
        if spec.on_submitted is not None:
            spec.on_submitted(attempt.id)
        try:
            await attempt.done.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    bridge.call(bridge.cancel, attempt)
                except ExecutorError:
                    pass  # the bridge is gone: nobody is left to ask
                else:
                    with trio.move_on_after(self.grace + _CANCEL_MARGIN):
                        await attempt.done.wait()
            raise
        outcome = await _outcome(attempt, started)
        if spec.on_output is not None:
            for line in await trio.to_thread.run_sync(_read_lines, spec.log_path):
                spec.on_output(line)
        return outcome


async def _outcome(attempt: _Attempt, started: float) -> Outcome:
    value = attempt.value
    if isinstance(value, tuple):
        # a worker of an earlier version returns no resource use
        returncode, host, _pid, t0, t1, error, *used = value
        cpu_seconds, max_rss = [*used, None, None][:2]
        return Outcome(
            returncode,
            t0,
            t1,
            host,
            job_id=attempt.id,
            error=error,
            cpu_seconds=cpu_seconds,
            max_rss=max_rss,
        )
    ended = time.time()
    log_path = attempt.spec.log_path
    if isinstance(value, _Lost):
        # ``lost``, not ``error`` (which means "cannot start"): the session retries it
        await trio.to_thread.run_sync(_append, log_path, f"scriptflow_trio: {value.message}")
        return Outcome(None, started, ended, value.host, job_id=attempt.id, lost=value.message)
    message = f"the Dask executor could not run it: {value}"
    await trio.to_thread.run_sync(_append, log_path, f"scriptflow_trio: {message}")
    return Outcome(None, started, ended, job_id=attempt.id, error=message)


def _append(path: os.PathLike[str] | str, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


def _read_lines(path: os.PathLike[str] | str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [line.rstrip("\r") for line in data.decode(errors="replace").splitlines()]


# -- the engine's side of the bridge ------------------------------------------------------


@attrs.frozen
class _Options:
    address: str | None
    workers: int
    cores_per_worker: int
    jobqueue: dict[str, Any] | None
    slots: int | None
    grace: float
    connect_timeout: float


@attrs.frozen
class _Lost:
    """The attempt was lost with its worker (or by the scheduler): a failure to retry."""

    message: str
    host: str = ""


@attrs.define(eq=False)
class _Attempt:
    """One attempt crossing the bridge. ``done`` and ``value`` belong to trio's thread;
    ``future``, ``watch`` and ``settled`` to the bridge thread."""

    id: str
    spec: AttemptSpec
    done: trio.Event = attrs.field(factory=trio.Event)
    value: Any = None
    future: Any = None
    watch: Any = None
    settled: bool = False


class _Bridge:
    """Dask's asynchronous Client, run on an asyncio loop in one thread of its own."""

    def __init__(self, options: _Options, token: trio.lowlevel.TrioToken, name: str) -> None:
        self.options = options
        self.token = token
        self.ready = trio.Event()  # set (on trio's thread) once started, or failed to
        self.ended = trio.Event()
        self.error: BaseException | None = None
        self.capacity = 0
        self.largest = 0  # the most cores one worker has
        self.address = ""
        self.resources = False  # whether the workers advertise "cores" resources
        self.thread = threading.Thread(
            target=self._main, name=f"scriptflow-trio-dask-{name}", daemon=True
        )
        self._loop: Any = None
        self._stop_requested = threading.Event()
        self._client: Any = None
        self.cluster: Any = None
        self._tasks: set[Any] = set()
        self._kill_queue: list[_Attempt] = []
        self._stop_event: Any = None
        self._kill_wake: Any = None

    # -- called from trio's thread --------------------------------------------------------

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Have ``fn(*args)`` called on the bridge's loop, soon; never blocks."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("not started")
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            raise ExecutorError("the Dask executor has stopped") from self.error

    async def stop(self) -> None:
        """Close the client (and the cluster it started); wait for the thread to end."""
        with trio.CancelScope(shield=True):
            self._stop_requested.set()
            loop = self._loop
            if loop is not None and self._stop_event is not None:
                try:
                    loop.call_soon_threadsafe(self._stop_event.set)
                except RuntimeError:  # the loop is already closed
                    pass
            with trio.move_on_after(60):
                await self.ended.wait()

    # -- the bridge thread --------------------------------------------------------------

    def _to_trio(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def _main(self) -> None:
        import asyncio

        try:
            asyncio.run(self._amain())
        except BaseException as exc:
            if self.error is None:
                self.error = exc
        finally:
            self._to_trio(self._ended)

    def _ended(self) -> None:
        self.ready.set()
        self.ended.set()

    async def _amain(self) -> None:
        import asyncio

        self._stop_event = asyncio.Event()
        self._kill_wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await self._start()
        except Exception as exc:
            self.error = exc
            await self._close()
            return
        self._to_trio(self.ready.set)
        if self._stop_requested.is_set():
            self._stop_event.set()
        killer = asyncio.ensure_future(self._killer())
        try:
            await self._stop_event.wait()
        finally:
            killer.cancel()
            for task in list(self._tasks):
                task.cancel()
            await self._close()
            self._loop = None

    async def _start(self) -> None:
        import distributed  # imported here, in the bridge thread, off the engine's loop

        options = self.options
        if options.address is not None:
            self._client = await self._connect(options.address)
        elif options.jobqueue is not None:
            self.cluster = await _start_jobqueue(options.jobqueue)
            self._client = await distributed.Client(
                self.cluster, asynchronous=True, set_as_default=False
            )
        else:
            self.cluster = await distributed.LocalCluster(
                n_workers=options.workers,
                threads_per_worker=options.cores_per_worker,
                processes=True,
                resources={"cores": options.cores_per_worker},
                dashboard_address=None,
                preload=[__name__],  # dask_setup below: Ctrl-C is the engine's to handle
                scheduler_kwargs={
                    # a worker's death fails its attempt at once; the engine retries it
                    "allowed_failures": 0,
                    # its HTTP server (health, metrics) on a free port, not Dask's 8787
                    "dashboard_address": "127.0.0.1:0",
                },
                asynchronous=True,
            )
            self._client = await distributed.Client(
                self.cluster, asynchronous=True, set_as_default=False
            )
        self.address = self._client.scheduler.address
        await self._measure()

    async def _connect(self, address: str) -> Any:
        import distributed

        try:
            return await distributed.Client(
                address,
                asynchronous=True,
                timeout=self.options.connect_timeout,
                set_as_default=False,
            )
        except Exception as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {address} "
                f"(waited {self.options.connect_timeout:g} s): {exc}"
            ) from None

    async def _measure(self) -> None:
        """Capacity, the largest worker, and whether to ask for "cores" resources."""
        options = self.options
        if options.jobqueue is not None:
            per_job = int(options.jobqueue["cores"])
            self.resources = True
            self.largest = per_job
            self.capacity = options.slots or per_job * int(options.jobqueue.get("maximum", 1))
            return
        info = await self._client.scheduler.identity(n_workers=-1)
        if not info["workers"] and options.slots is None:
            try:
                await self._client.wait_for_workers(1, timeout=options.connect_timeout)
            except Exception:
                raise ExecutorError(
                    f"the Dask scheduler at {self.address} has no workers: start some, "
                    "or give DaskExecutor(slots=N) to submit before they come"
                ) from None
            info = await self._client.scheduler.identity(n_workers=-1)
        workers = list(info["workers"].values())
        with_cores = [
            int((w.get("resources") or {})["cores"])
            for w in workers
            if "cores" in (w.get("resources") or {})
        ]
        self.resources = bool(with_cores)
        cores = with_cores if with_cores else [int(w["nthreads"]) for w in workers]
        self.largest = max(cores, default=options.slots or 1)
        self.capacity = options.slots or sum(cores)

    async def _close(self) -> None:
        import asyncio

        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.close(), 10)
            except Exception:
                pass
        if self.cluster is not None:
            try:
                await asyncio.wait_for(self.cluster.close(), 30)
            except Exception:
                pass

    def _spawn(self, coro: Any) -> Any:
        import asyncio

        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _settle(self, attempt: _Attempt, value: object) -> None:
        attempt.settled = True
        attempt.future = None  # releasing the future lets the scheduler forget the key
        self._to_trio(_set_value, attempt, value)

    def submit(self, attempt: _Attempt) -> None:
        resources = {"cores": attempt.spec.cores} if self.resources else None
        try:
            attempt.future = self._client.submit(
                _run_attempt,
                attempt.id,
                _Shipped(attempt.spec),
                self.options.grace,
                key=attempt.id,
                resources=resources,
                pure=False,
            )
        except Exception as exc:
            self._settle(attempt, exc)
            return
        attempt.watch = self._spawn(self._watch(attempt))

    async def _watch(self, attempt: _Attempt) -> None:
        import asyncio

        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        value: object
        try:
            value = await attempt.future
        except KilledWorker as exc:
            worker = getattr(getattr(exc, "last_worker", None), "address", "") or "?"
            host = re.sub(r"^\w+://|:\d+$", "", worker)
            value = _Lost(f"the Dask worker {worker} died while running this attempt", host)
        except FutureCancelledError as exc:  # a subclass of asyncio.CancelledError
            value = _Lost(f"Dask dropped this attempt ({exc})")
        except asyncio.CancelledError:
            value = ExecutorError("the Dask executor was closed while the attempt ran")
            self._settle(attempt, value)
            raise
        except Exception as exc:
            hint = ""
            if isinstance(exc, ModuleNotFoundError | ImportError):
                hint = " (are scriptflow_trio and its dependencies installed on the workers?)"
            value = f"{type(exc).__name__}: {exc}{hint}"
        self._settle(attempt, value)

    def cancel(self, attempt: _Attempt) -> None:
        if attempt.settled:
            return
        self._kill_queue.append(attempt)
        self._kill_wake.set()

    async def _killer(self) -> None:
        """Kill cancelled attempts on the workers: one broadcast per batch, not per attempt."""
        import asyncio

        while True:
            await self._kill_wake.wait()
            self._kill_wake.clear()
            batch, self._kill_queue = self._kill_queue, []
            running: set[str] = set()
            try:
                replies = await asyncio.wait_for(
                    self._client.run(
                        _kill_attempts,
                        [a.id for a in batch],
                        self.options.grace,
                        on_error="ignore",
                    ),
                    _RPC_TIMEOUT,
                )
                for ids in replies.values():
                    running.update(ids)
            except Exception:
                pass  # the futures are cancelled all the same
            for attempt in batch:
                self._spawn(self._drop(attempt, attempt.id in running))

    async def _drop(self, attempt: _Attempt, running: bool) -> None:
        """Once a killed attempt's function has returned (its group is dead), or at once
        if it was not running, cancel its future: a queued attempt never starts."""
        import asyncio

        if running and attempt.watch is not None:
            await asyncio.wait({attempt.watch}, timeout=self.options.grace + 5)
        if not attempt.settled and attempt.future is not None:
            try:
                await asyncio.wait_for(self._client.cancel([attempt.future]), _RPC_TIMEOUT)
            except Exception:
                pass


def _set_value(attempt: _Attempt, value: object) -> None:
    attempt.value = value
    attempt.done.set()


def _import_jobqueue() -> Any:
    """Import dask_jobqueue from the bridge thread, keeping the engine's signal handlers.

    Its ``runner`` module sets a SIGINT handler (``sys.exit``) when imported, which
    would take Ctrl-C from the engine; from a thread other than the main one it fails.
    While it is imported here, ``signal.signal`` calls from this thread are ignored.
    """
    real = signal.signal

    def from_main_thread_only(signum: Any, handler: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            return real(signum, handler)
        return signal.getsignal(signum)

    signal.signal = from_main_thread_only  # type: ignore[assignment]
    try:
        import dask_jobqueue
    except ImportError:
        raise ExecutorError(_INSTALL_JOBQUEUE) from None
    finally:
        signal.signal = real
    return dask_jobqueue


async def _start_jobqueue(config: dict[str, Any]) -> Any:
    """A dask-jobqueue cluster: one worker of ``cores`` cores per batch job, adaptive."""
    dask_jobqueue = _import_jobqueue()
    options = dict(config)
    kind = str(options.pop("kind")).lower()
    minimum = int(options.pop("minimum", 0))
    maximum = int(options.pop("maximum", 1))
    cores = int(options["cores"])
    options.setdefault("processes", 1)
    options["worker_extra_args"] = [
        *options.get("worker_extra_args", ()),
        "--resources",
        f"cores={cores}",
    ]
    options["scheduler_options"] = {"allowed_failures": 0, **options.get("scheduler_options", {})}
    cls = getattr(dask_jobqueue, _JOBQUEUE_KINDS[kind])
    cluster = await cls(asynchronous=True, **options)
    cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
    return cluster


# -- the worker's side ----------------------------------------------------------------------

# Run by a guard process per worker: it reads "+PGID" / "-PGID" lines from the worker,
# and when the worker is gone (its end of the pipe closes) it kills the groups left.
_GUARD = """
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
def hit(sig):
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
if groups:
    hit(signal.SIGTERM)
    time.sleep(float(sys.argv[1]))
    hit(signal.SIGKILL)
"""


@attrs.define(eq=False)
class _Running:
    proc: subprocess.Popen[bytes]
    killing: bool = False


class _WorkerSide:
    """The attempts running in one worker process, for ``_kill_attempts`` to find."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.host = socket.gethostname()
        self.running: dict[str, _Running] = {}
        # attempts cancelled before they started here: they must not start later
        self.cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.guard: subprocess.Popen[bytes] | None = None

    def run(self, attempt_id: str, spec: AttemptSpec, grace: float) -> tuple[Any, ...]:
        started = time.time()
        try:
            log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            message = (
                f"cannot write its log file on {self.host}: {exc} "
                "(the Dask workers need the project's file system)"
            )
            return (None, self.host, 0, started, time.time(), message)
        try:
            env = {**os.environ, **spec.env} if spec.env else None
            with self.lock:
                if attempt_id in self.cancelled:
                    return (None, self.host, 0, started, time.time(), "cancelled")
                try:
                    rss_floor = _own_peak_rss()
                    proc = subprocess.Popen(
                        spec.cmd,
                        shell=spec.shell,
                        cwd=spec.cwd,
                        env=env,
                        stdout=log_fd,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                except OSError as exc:
                    message = _start_error(spec, exc)
                    os.write(log_fd, (message + "\n").encode())
                    return (None, self.host, 0, started, time.time(), message)
                running = self.running[attempt_id] = _Running(proc)
                self._tell_guard(f"+{proc.pid}", grace)
            try:
                returncode, cpu_seconds, max_rss = _reap(proc, rss_floor)
            finally:
                with self.lock:
                    if self.running.get(attempt_id) is running:
                        del self.running[attempt_id]
                    if running.killing:
                        # the leader is gone; what it started in its group goes too
                        _signal_group(proc.pid, signal.SIGKILL)
                    self._tell_guard(f"-{proc.pid}", grace)
            ended = time.time()
            return (returncode, self.host, proc.pid, started, ended, "", cpu_seconds, max_rss)
        finally:
            os.close(log_fd)

    def kill(self, attempt_ids: list[str], grace: float, loop: Any) -> list[str]:
        found: list[_Running] = []
        with self.lock:
            for attempt_id in attempt_ids:
                running = self.running.get(attempt_id)
                if running is None:
                    self.cancelled[attempt_id] = None
                    while len(self.cancelled) > 10_000:
                        self.cancelled.popitem(last=False)
                elif not running.killing:
                    running.killing = True
                    found.append(running)
            ids = [i for i in attempt_ids if i in self.running]
        for running in found:
            _signal_group(running.proc.pid, signal.SIGTERM)
            loop.call_later(grace, _kill_if_running, running)
        return ids

    def _tell_guard(self, line: str, grace: float) -> None:
        """Under the lock: keep the guard's set of groups up to date; best effort."""
        try:
            if self.guard is None or self.guard.poll() is not None:
                self.guard = subprocess.Popen(
                    [sys.executable, "-c", _GUARD, str(grace)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
                line = "".join(f"+{r.proc.pid}\n" for r in self.running.values())
            else:
                line += "\n"
            assert self.guard.stdin is not None
            self.guard.stdin.write(line.encode())
            self.guard.stdin.flush()
        except OSError:
            self.guard = None


def _own_peak_rss() -> int:
    """This process's peak resident memory, in ru_maxrss units (0 where unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reap(proc: subprocess.Popen[bytes], rss_floor: int) -> tuple[int, float | None, int | None]:
    """Wait for ``proc``: its exit code (as ``Popen`` gives it), CPU seconds, peak RSS.

    Linux counts, in a child's peak, the memory of the worker it was forked from (until
    exec): a peak at or below ``rss_floor``, the worker's own then, says nothing.
    """
    if not hasattr(os, "wait4"):  # pragma: no cover - Windows
        return proc.wait(), None, None
    _, status, usage = os.wait4(proc.pid, 0)
    # Popen must know it was reaped: nothing may signal its pid (or group) again
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * _RSS_UNIT if usage.ru_maxrss > rss_floor else None
    return proc.returncode, usage.ru_utime + usage.ru_stime, rss


def _kill_if_running(running: _Running) -> None:
    if running.proc.returncode is None:  # the leader ignored SIGTERM
        _signal_group(running.proc.pid, signal.SIGKILL)


_side: list[_WorkerSide] = []  # the worker process's one _WorkerSide, made on first use
_side_lock = threading.Lock()


def _worker_side() -> _WorkerSide:
    with _side_lock:
        if not _side:
            _side.append(_WorkerSide())
        return _side[0]


@attrs.frozen
class _Shipped:
    """An attempt's spec as a Dask task's argument. Dask takes the tuples among a
    task's arguments apart (a named tuple reached the worker broken); an object that is
    not one, it pickles whole."""

    spec: AttemptSpec


def _run_attempt(attempt_id: str, shipped: _Shipped, grace: float) -> tuple[Any, ...]:
    """The Dask task: run one attempt's command; (returncode, host, pid, start, end, error,
    cpu seconds, max rss)."""
    return _worker_side().run(attempt_id, shipped.spec, grace)


def dask_setup(worker: object) -> None:
    """Dask's preload hook: Ctrl-C in the terminal is for the engine, not its workers.

    The workers of the local cluster share the engine's process group, so a Ctrl-C
    signals them too; dying then, they would fail their attempts before the engine
    could stop them in order. A Python-level handler (not SIG_IGN) ignores it: the
    commands the worker starts get the default disposition back at exec.
    """
    try:
        signal.signal(signal.SIGINT, _ignore_signal)
    except ValueError:  # not the main thread: nothing to do
        pass


def _ignore_signal(signum: int, frame: object) -> None:
    return None


async def _kill_attempts(attempt_ids: list[str], grace: float) -> list[str]:
    """Run on every worker (``client.run``): stop those of ``attempt_ids`` running here.

    SIGTERM now, SIGKILL after ``grace``; returns the ids found running here. An id not
    running here is remembered, so that the attempt never starts here later.
    """
    import asyncio

    return _worker_side().kill(attempt_ids, grace, asyncio.get_running_loop())
