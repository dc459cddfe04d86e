"""The engine: dedup, dependencies, the up-to-date decision, dispatch, retries.

A submitted task becomes a ``Job``. Jobs waiting for their inputs or for room on their
executor are plain data in queues; only a job whose attempt is running has a trio
task, in the session's nursery, under a cancel scope of its own. Whoever awaits a job
counts as one of its waiters; when the last waiter is cancelled (Ctrl-C, a failed
sibling in ``bag``, a user's cancel scope) the job is cancelled with it, and the
executor kills what it started before the waiter's ``Cancelled`` propagates.
"""

from __future__ import annotations

import collections
import enum
import fnmatch
import gc
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from . import _events as ev
from ._context import current as _current
from ._context import current_session as current_session
from ._errors import InvalidTask, MissingInput, TaskError, TaskFailed
from ._freshness import Decision, decide, expand
from ._lock import StateLock
from ._records import (
    AttemptRecord,
    AttemptStatus,
    RunRecord,
    RunStatus,
)
from ._store import (
    STORE_FILE,
    AttemptStart,
    EndRecord,
    FingerprintRow,
    History,
    OutcomeRow,
    Store,
    StoreWriter,
    TaskState,
    attempt_end,
    fingerprint,
    fingerprint_row,
    hash_file,
    with_outcome,
)
from ._task import Glob, Task, resolve
from .executors._base import AttemptSpec, Executor, Outcome
from .executors.local import LocalExecutor

T = TypeVar("T")

# File systems stamp times with a coarse clock: a file written just after an attempt
# started may carry a time slightly before it.
_MTIME_SLOP_NS = 50_000_000
_LOG_TAIL_LINES = 20
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")  # what a log file's name leaves out
# objects made between two young collections of the garbage collector, during a session
_YOUNG_COLLECTION_EVERY = 50_000


def _find_child() -> Callable[[Path, str], Path]:
    """``directory / name`` for a name without separators, as fast as this Python allows.

    On Python 3.11, ``directory / name`` parses ``name`` (1.15 us here) and pathlib's
    own shortcut for a directory's entries (private, checked here once) does not
    (0.28 us): a fortieth of a task's cost in W5. On 3.12 both cost the same, and 3.13
    has no such shortcut.
    """
    shortcut = getattr(Path, "_make_child_relpath", None)
    if shortcut is not None:
        try:
            probe = shortcut(Path("/d"), "n.log")
            if type(probe) is type(Path()) and str(probe) == "/d/n.log" and probe.name == "n.log":
                return shortcut  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - any surprise means: not this shortcut
            pass
    return Path.__truediv__


_child = _find_child()


class JobState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: Enum's own runs Python

    BLOCKED = "blocked"  # waiting for the tasks that make its inputs
    QUEUED = "queued"  # waiting for room on its executor
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    WOULD_RUN = "would-run"
    FAILED = "failed"
    CANCELLED = "cancelled"


_DONE_OK = (JobState.SUCCEEDED, JobState.SKIPPED, JobState.WOULD_RUN)
# how a finished job's state reads in events
_STATUS = {
    s: ev.Status(s.value)
    for s in (
        JobState.SUCCEEDED,
        JobState.SKIPPED,
        JobState.WOULD_RUN,
        JobState.FAILED,
        JobState.CANCELLED,
    )
}
_FINISHED = (*_DONE_OK, JobState.FAILED, JobState.CANCELLED)
_VALUE = {s: s.value for s in JobState}  # an enum's .value is a slow property


class Job:
    """The session's record of one task key in this run.

    A plain class: one is made for every task, and attrs' generated class cost as
    much again to create at start-up as it saved in typing.
    """

    __slots__ = (
        "task",
        "key",
        "name",
        "executor",
        "state",
        "done",
        "finished_event",
        "waiters",
        "held",
        "blockers",
        "dependents",
        "watchers",
        "others",
        "scope",
        "cancel_requested",
        "error",
        "value",
        "reason",
        "attempts",
        "started",
        "duration",
        "inputs",
        "reattach",
        "reattach_since",
        "after",
        "absent",
        "log_stem",
        "outputs",
        "paths",
    )

    def __init__(
        self,
        task: Task,
        key: str,
        name: str,
        executor: Executor,
        outputs: tuple[str | Glob, ...] = (),
        paths: tuple[str, ...] = (),
    ) -> None:
        self.task = task
        self.key = key
        self.name = name
        self.executor = executor
        self.state = JobState.BLOCKED
        self.done = False  # finished, one way or another
        self.finished_event: trio.Event | None = None  # made only when someone waits alone
        self.waiters = 0
        self.held = False
        self.blockers = 0
        self.dependents: list[Job] | None = None
        self.watchers: list[Callable[[Job], None]] | None = None
        self.others: list[Task] | None = None  # other Task objects with the same key
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False
        self.error: TaskError | None = None
        self.value: Any = None
        self.reason = ""
        self.attempts = 0
        self.started = False  # its current attempt has started (not just been handed over)
        self.duration = 0.0
        self.inputs: Sequence[str] = ()  # expanded when decided
        self.reattach = ""  # a dead engine's job id to wait for, instead of a new submission
        self.reattach_since = 0  # when that job's attempt started (ns): its outputs are newer
        self.after: tuple[str, ...] = ()  # keys of the jobs that make its inputs (graph edges)
        self.absent = False  # no literal output existed when it was decided
        self.log_stem = ""  # its log files' name in the run's log directory, less ".ATTEMPT.log"
        # computed once at submission (a submitted task is frozen)
        self.outputs = outputs  # as declared, with the result file
        self.paths = paths  # the literal outputs, absolute and normalised

    def __repr__(self) -> str:
        return f"<Job {self.name!r} {self.state.value}>"

    @property
    def ok(self) -> bool:
        return self.state in _DONE_OK


@attrs.frozen
class SessionConfig:
    """How a session decides and reacts; the CLI fills it from its options."""

    force: tuple[str, ...] = ()
    dry_run: bool = False
    keep_going: bool = False
    retry_backoff: float = 0.0  # seconds before the 2nd attempt, doubling after
    freshness: str = "mtime"  # or "hash": content hashes overrule touched inputs
    run_name: str | None = None


@attrs.frozen
class SessionStatistics:
    """Counts of this session's jobs by state."""

    blocked: int
    queued: int
    running: int
    succeeded: int
    skipped: int
    failed: int
    cancelled: int


class Session:
    """Runs the tasks awaited inside it. Create it with :func:`open_session`."""

    def __init__(
        self,
        *,
        nursery: trio.Nursery,
        root: str,
        state_dir: Path,
        executors: Sequence[Executor],
        config: SessionConfig,
        listeners: Sequence[ev.Listener],
        run_id: str,
        writer: StoreWriter | None = None,
        history: History | None = None,
    ) -> None:
        self.root = root
        self._root_prefix = os.path.join(root, "")
        self.state_dir = state_dir
        self.config = config
        self.run_id = run_id
        self.executors = {e.name: e for e in executors}
        self.default_executor = executors[0]
        self.failures: list[TaskError] = []
        self._nursery = nursery
        self._listeners = list(listeners)
        self._jobs: dict[str, Job] = {}
        self._producers: dict[str, Job] = {}
        self._remade: set[str] = set()
        # the fingerprint each file had when an attempt of this session made it, by
        # normalised path, for the tasks that read it (with the store); forgotten when a
        # new job is to make it again
        self._made_rows: dict[str, FingerprintRow] = {}
        self._queues = {name: collections.deque[Job]() for name in self.executors}
        # an executor with a lookahead takes more than its capacity, and queues it itself
        self._free = {name: e.capacity + e.lookahead for name, e in self.executors.items()}
        self._ahead = {name for name, e in self.executors.items() if e.lookahead > 0}
        self._settling = dict.fromkeys(self.executors, 0)  # workers finishing a job
        # jobs taken for workers not yet running, in order (trio runs new tasks in any order)
        self._handed = {name: collections.deque[tuple[Job, int]]() for name in self.executors}
        self._to_decide: collections.deque[Job] = collections.deque()
        self._deciding = False
        self._held: set[Job] = set()
        self._held_done = trio.Event()
        self._closing = False
        # while an awaited task is submitted, the executors that would be pumped: its
        # job may run in the awaiting trio task instead of a worker's (see await_task)
        self._holding: set[Executor] | None = None
        self._flow_scope: trio.CancelScope | None = None
        self._unawaited_error: TaskError | None = None
        self._log_dir: Path | None = None
        self._stored_log_prefix = ""  # the log directory as the store keeps it, with its /
        self._made_dirs: set[str] = set()
        self._writer = writer
        self._history = history
        # trio.current_time() is two calls deep; the run's clock is this session's
        self._clock = trio.lowlevel.current_clock().current_time

    # -- public -----------------------------------------------------------------------

    def add_listener(self, listener: ev.Listener) -> None:
        self._listeners.append(listener)

    async def run(self, flow: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``flow(*args, **kwargs)`` as this session's run, and wait for started tasks."""
        name = getattr(flow, "__scriptflow_flow__", None) or getattr(
            flow, "__name__", repr(flow)
        ).removeprefix("flow_")
        t0 = trio.current_time()
        started = time.time()
        self._emit(ev.RunStarted(self.run_id, name, started, self.config.dry_run))
        code = getattr(flow, "__code__", None)
        run = RunRecord(
            run_id=self.run_id,
            flow=name,
            started=started,
            name=self.config.run_name,
            arguments={k: repr(v) for k, v in kwargs.items()},
            flowfile=code.co_filename if code is not None else None,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        if self._writer is not None:
            self._writer.write(run)
        status = "failed"
        try:
            with trio.CancelScope() as self._flow_scope:
                result = await flow(*args, **kwargs)
                await self.wait_started()
            if self._unawaited_error is not None:
                raise self._unawaited_error
            status = "succeeded"
            return result
        except (trio.Cancelled, KeyboardInterrupt):
            status = "cancelled"
            raise
        finally:
            ended = time.time()
            self._emit(ev.RunFinished(self.run_id, status, ended, trio.current_time() - t0))
            if self._writer is not None:
                counts = collections.Counter([_VALUE[j.state] for j in self._jobs.values()])
                final = attrs.evolve(
                    run, status=RunStatus(status), ended=ended, counts=dict(counts)
                )
                self._writer.write(final)

    async def wait_started(self) -> None:
        """Wait until every task submitted with ``start()`` has finished."""
        while self._held:
            self._held_done = trio.Event()
            await self._held_done.wait()

    def statistics(self) -> SessionStatistics:
        counts = collections.Counter(job.state for job in self._jobs.values())
        # handed to an executor's own queue, but not started: still queued
        waiting = sum(
            1 for job in self._jobs.values() if job.state is JobState.RUNNING and not job.started
        )
        return SessionStatistics(
            blocked=counts[JobState.BLOCKED],
            queued=counts[JobState.QUEUED] + waiting,
            running=counts[JobState.RUNNING] - waiting,
            succeeded=counts[JobState.SUCCEEDED],
            skipped=counts[JobState.SKIPPED],
            failed=counts[JobState.FAILED],
            cancelled=counts[JobState.CANCELLED],
        )

    # -- submission -------------------------------------------------------------------

    def submit(self, task: Task, *, hold: bool = False) -> Job:
        """Register ``task`` (once per key) and start deciding it; returns its job."""
        return self.submit_many([task], hold=hold)[0]

    def submit_many(self, tasks: Sequence[Task], *, hold: bool = False) -> list[Job]:
        """Register all ``tasks`` first, then link and decide them.

        A bag may list a task before the one that makes its input: registering every
        output before looking for producers lets the first wait for the second.
        """
        jobs: list[Job] = []
        new: list[Job] = []
        try:
            for task in tasks:
                key = task.key
                job = self._jobs.get(key)
                if job is None or job.state in (JobState.FAILED, JobState.CANCELLED):
                    job = self._new_job(task, key)
                    new.append(job)
                elif task is not job.task:
                    object.__setattr__(task, "_job", job)
                    if job.ok:
                        _mark_done(task, job)
                    else:
                        job.others = [*(job.others or ()), task]
                jobs.append(job)
            # only jobs with inputs have producers: no entry per job (W4 counts bytes)
            links = {
                job: made_by
                for job in new
                if job.task.inputs and (made_by := self._producers_of(job))
            }
            if links and len(new) > 1:  # one job alone closes no circle (not its own producer)
                _refuse_cycles(links)
        except BaseException as exc:
            for job in new:  # nobody will wait for these
                self._finish(job, JobState.CANCELLED)
            if isinstance(exc, TaskError):  # a task that cannot run is a failed task
                self.failures.append(exc)
                self._emit(
                    ev.TaskFinished(exc.name, "", ev.Status.FAILED, 0, 0.0, time.time(), str(exc))
                )
            raise
        if new and self._listeners:
            self._emit(ev.TasksSubmitted(len(new), time.time()))
        for job in new:
            producers = links.get(job)
            if not producers:
                self._to_decide.append(job)
                continue
            job.after = tuple([p.key for p in producers])
            blockers = [p for p in producers if not p.done]
            if blockers:
                job.blockers = len(blockers)
                for producer in blockers:
                    producer.dependents = [*(producer.dependents or ()), job]
            else:
                self._to_decide.append(job)
        if hold:
            for job in jobs:
                if not job.done and not job.held:
                    job.held = True
                    self._held.add(job)
        self._decide_pending()
        return jobs

    def _new_job(self, task: Task, key: str) -> Job:
        executor = self._executor_for(task)
        if executor.cost(task.cores) > executor.capacity:
            raise InvalidTask(
                f"task {task.name!r} asks for {task.cores} cores, but executor "
                f"{executor.name!r} has {executor.capacity} in all",
                task.name,
            )
        if task.cwd is not None and not os.path.isdir(resolve(self.root, task.cwd)):
            raise InvalidTask(
                f"task {task.name!r} has cwd={task.cwd!r}, which is not a directory", task.name
            )
        declared = tuple(task._checked_outputs())
        outputs = tuple(
            [self._norm(o) for o in declared if type(o) is str or not isinstance(o, Glob)]
        )
        for path in outputs:
            other = self._producers.get(path)
            if other is None:
                continue
            if other.key != key and not other.done:
                raise InvalidTask(
                    f"task {task.name!r} declares output {os.path.relpath(path, self.root)!r}, "
                    f"which task {other.name!r} is also making right now",
                    task.name,
                )
            self._made_rows.pop(path, None)  # made again: what it was is void
        job = Job(task, key, task.name, executor, declared, outputs)
        object.__setattr__(task, "_job", job)  # private: past the setattr hooks
        self._jobs[key] = job
        for path in outputs:
            self._producers[path] = job
        return job

    def _executor_for(self, task: Task) -> Executor:
        if task.executor is None:
            return self.default_executor
        try:
            return self.executors[task.executor]
        except KeyError:
            names = ", ".join(sorted(self.executors))
            raise InvalidTask(
                f"task {task.name!r} asks for executor {task.executor!r}; "
                f"this session has: {names}",
                task.name,
            ) from None

    def _norm(self, path: str) -> str:
        """``path`` made absolute and normalised (paths are dict keys: one spelling each)."""
        if (
            path
            and path[0] != "/"
            and path[0] != "."
            and "/." not in path
            and "//" not in path
            and path[-1] != "/"
            and os.sep == "/"
        ):
            return self._root_prefix + path  # nothing for normpath to do: the common case
        return os.path.normpath(resolve(self.root, path))

    def _producers_of(self, job: Job) -> list[Job]:
        """The jobs of this session that make one of ``job``'s inputs, finished or not."""
        inputs = job.task.inputs
        if len(inputs) == 1 and type(inputs[0]) is str:  # one file (a chain's hop): one lookup
            made_by = self._producers.get(self._norm(inputs[0]))
            return [] if made_by is None or made_by.key == job.key else [made_by]
        found: dict[str, Job] = {}
        for item in inputs:
            if isinstance(item, Glob):
                pattern = self._norm(item.pattern)
                for path, producer in self._producers.items():
                    if fnmatch.fnmatch(path, pattern):
                        found[producer.key] = producer
            else:
                made_by = self._producers.get(self._norm(item))
                if made_by is not None:
                    found[made_by.key] = made_by
        found.pop(job.key, None)
        return list(found.values())

    # -- deciding ---------------------------------------------------------------------

    def _decide_pending(self) -> None:
        """Decide every job whose inputs are ready; iterative, so long chains don't recurse."""
        if self._deciding:
            return
        self._deciding = True
        try:
            while self._to_decide:
                job = self._to_decide.popleft()
                if job.state is JobState.BLOCKED and not job.cancel_requested:
                    self._decide(job)
        finally:
            self._deciding = False

    def _decide(self, job: Job) -> None:
        task = job.task
        try:
            inputs, mtimes = self._expand_inputs(job)
            job.inputs = inputs
        except TaskError as exc:
            self._finish(job, JobState.FAILED, exc)
            return
        force = self.config.force
        if force and any(fnmatch.fnmatchcase(job.name, p) for p in force):
            self._act(job, Decision(True, "forced"))
            return
        history = self._history
        state = history.tasks.get(job.key) if history is not None else None
        if state is not None and state.status is AttemptStatus.RUNNING:
            orphan = self._reattachable(job)
            if orphan is not None:
                job.reattach = orphan.job_id
                job.reattach_since = int(orphan.started * 1e9)
                self._act(
                    job,
                    Decision(
                        True,
                        f"its job {orphan.job_id} from run {orphan.run_id} "
                        "may still run: waiting for it",
                    ),
                )
                return
        decision = decide(
            self.root, inputs, job.outputs, job.paths, mtimes, was_remade=self._was_remade
        )
        if history is None:
            self._act(job, decision)
            return
        hashing = (task.freshness or self.config.freshness) == "hash"
        if decision.kind == "newer" and hashing and state is not None:
            if state.status is AttemptStatus.SUCCEEDED:
                self._nursery.start_soon(self._decide_by_content, job, inputs, state, decision)
                return
        self._act(job, self._against_history(job, decision, state))

    def _against_history(self, job: Job, decision: Decision, state: TaskState | None) -> Decision:
        """What the store adds to make's rule: interrupted attempts and changed commands."""
        if decision.run or self._history is None:
            return decision
        if state is not None and state.status is not AttemptStatus.SUCCEEDED:
            what = {
                AttemptStatus.RUNNING: "was interrupted",
                AttemptStatus.FAILED: "failed",
                AttemptStatus.CANCELLED: "was cancelled",
            }[state.status]
            return Decision(True, f"its last attempt {what} (run {state.run_id})")
        files = self._history.files
        for path in job.paths:
            made = files.get(self._relative(path))
            if made is None or made[0] == job.key:
                continue
            if made[1] != job.task.command_line():
                item = os.path.relpath(path, self.root)
                return Decision(True, f"its command changed since {item} was made (was: {made[1]})")
        return decision

    def _reattachable(self, job: Job) -> AttemptRecord | None:
        """The job of a dead engine's attempt at this task, if its executor can wait for it."""
        assert self._history is not None
        state = self._history.tasks.get(job.key)
        if state is None or state.status is not AttemptStatus.RUNNING:
            return None
        if not job.executor.supports_reattach:
            return None
        record = state.record()
        if not record.job_id or record.executor != job.executor.name:
            return None
        return record

    async def _decide_by_content(
        self, job: Job, inputs: list[str], state: TaskState, fallback: Decision
    ) -> None:
        """Hash mode: a newer input whose content is what the last success saw is no reason."""
        recorded = {fp.path: fp for fp in state.record().inputs}
        relative = [self._relative(p) for p in inputs]

        def unchanged() -> bool:
            for path in relative:
                fp = recorded.get(path)
                if fp is None or fp.digest is None:
                    return False
                now = fingerprint(self.root, path)
                if now is None or now.size != fp.size:
                    return False
                if now.mtime_ns != fp.mtime_ns and hash_file(resolve(self.root, path)) != fp.digest:
                    return False
            return True

        same = await trio.to_thread.run_sync(unchanged)
        if job.done or job.cancel_requested:
            return
        if same:
            decision = Decision(False, "up to date (inputs touched, contents unchanged)")
            decision = self._against_history(job, decision, state)
        else:
            decision = fallback
        self._act(job, decision)

    def _act(self, job: Job, decision: Decision) -> None:
        """Skip the job, report it (dry run), or queue it for its executor."""
        task = job.task
        if not decision.run:
            if task.result_file is not None:
                job.value = self._stored_result(job)
            if self._listeners:
                self._emit(ev.TaskSkipped(job.name, job.key, decision.reason, time.time()))
            self._finish(job, JobState.SKIPPED)
            return
        job.reason = decision.reason
        job.absent = decision.absent
        if self.config.dry_run:
            self._emit(
                ev.TaskWouldRun(
                    job.name, job.key, decision.reason, task.command_line(), time.time()
                )
            )
            self._remember_remade(job)
            self._finish(job, JobState.WOULD_RUN)
            return
        job.state = JobState.QUEUED
        self._queues[job.executor.name].append(job)
        self._pump(job.executor)

    def _stored_result(self, job: Job) -> Any:
        """A skipped task's result: as the store recorded it, else read from its file."""
        if job.task.result_file is None:
            return None
        state = self._history.tasks.get(job.key) if self._history is not None else None
        if state is not None and state.status is AttemptStatus.SUCCEEDED:
            value = state.record().result
            if value is not None:
                return value
        try:
            return self._load_result(job.task)
        except (OSError, UnicodeDecodeError):
            return None

    def _relative(self, path: str) -> str:
        """``path`` as the store keeps it: relative to the project directory."""
        if path.startswith(self._root_prefix) and "/." not in path and "//" not in path:
            return path[len(self._root_prefix) :]  # already normalised: the common case
        return self._relative_normalised(self._norm(path))

    def _relative_normalised(self, norm: str) -> str:
        """:meth:`_relative` of a path normalised already: under the project directory,
        its prefix cut."""
        prefix = self._root_prefix
        return norm[len(prefix) :] if norm.startswith(prefix) else os.path.relpath(norm, self.root)

    def _was_remade(self, path: str) -> bool:
        return self._norm(path) in self._remade

    def _expand_inputs(self, job: Job) -> tuple[list[str], list[int | None]]:
        """The task's inputs, globs expanded, and the modification time of each literal
        one, read as its existence is checked (``None``: remade here, or a glob's match).

        ``decide`` takes those times instead of reading them again: on a re-run, each
        input of each task was stat'ed twice (a network file system answers each).
        """
        inputs: list[str] = []
        mtimes: list[int | None] = []
        for item in job.task.inputs:
            if isinstance(item, Glob):
                paths = expand(self.root, item)
                if not paths:
                    raise MissingInput(job.name, item.pattern, " (the glob matches no file)")
                inputs.extend(paths)
                mtimes.extend([None] * len(paths))
                continue
            norm = self._norm(item)
            mtime = None
            if norm not in self._remade:
                try:
                    mtime = os.stat(norm).st_mtime_ns
                except (OSError, ValueError):  # what os.path.exists says False to
                    producer = self._producers.get(norm)
                    detail = ""
                    if producer is job:
                        detail = ": it is also one of the task's own outputs"
                    elif producer is not None and not producer.ok:
                        detail = f": task {producer.name!r}, which makes it, {producer.state.value}"
                    raise MissingInput(job.name, item, detail) from None
            inputs.append(item)
            mtimes.append(mtime)
        return inputs, mtimes

    def _remember_remade(self, job: Job) -> None:
        self._remade.update(job.paths)
        for item in job.outputs:
            if isinstance(item, Glob):
                self._remade.update(self._norm(path) for path in expand(self.root, item))

    # -- dispatch and attempts --------------------------------------------------------

    def _pump(self, executor: Executor) -> None:
        """Start a worker for each queued job that fits on its executor, in order.

        A worker runs its job, then takes the next queued job that fits instead of
        ending: a trio task per attempt cost as much as the rest of the engine's work
        on a fast task. While a worker is finishing a job, the queue is left to it.
        """
        name = executor.name
        if self._closing or self._settling[name] or not self._queues[name]:
            return
        if self._holding is not None:
            self._holding.add(executor)
            return
        handed = self._handed[name]
        while (taken := self._take(executor)) is not None:
            handed.append(taken)
            self._nursery.start_soon(
                self._worker, executor, name=f"scriptflow worker {executor.name}"
            )

    def _take(self, executor: Executor) -> tuple[Job, int] | None:
        """The next queued job, marked running, if it fits in its executor's free room."""
        name = executor.name
        if self._free[name] <= 0:  # full: every attempt takes a unit at least
            return None
        job = self._head(name)
        if job is None:
            return None
        cost = executor.cost(job.task.cores)
        if cost > self._free[name]:
            return None
        self._queues[name].popleft()
        self._free[name] -= cost
        job.state = JobState.RUNNING
        return job, cost

    def _head(self, name: str) -> Job | None:
        """The first job still queued for executor ``name`` (those cancelled meanwhile
        are dropped from the queue's head)."""
        queue = self._queues[name]
        while queue and queue[0].state is not JobState.QUEUED:
            queue.popleft()
        return queue[0] if queue else None

    async def _worker(self, executor: Executor) -> None:
        """Run the oldest job handed to a worker, then each next queued job that fits,
        until none does.

        A worker takes its first job when it starts, not when it is spawned: trio starts
        the tasks spawned together in any order, and the jobs must start in the order
        they were queued. The jobs of a worker share its cancel scope (one scope per job
        cost a few microseconds each): cancelling a job cancels the scope, and the
        worker goes on with the next job under a new one.
        """
        taken: tuple[Job, int] | None = self._handed[executor.name].popleft()
        while taken is not None:
            with trio.CancelScope() as scope:
                while taken is not None and not scope.cancel_called:
                    job, cost = taken
                    taken = None
                    await self._run_job(job, cost, scope)
                    taken = None if self._closing else self._take(executor)
                    self._pump(executor)
            if taken is None and scope.cancel_called and not self._closing:
                # a job was cancelled: its room is free, and nobody has looked at the queue
                taken = self._take(executor)
                self._pump(executor)

    async def _run_job(self, job: Job, cost: int, scope: trio.CancelScope | None) -> None:
        """Run the attempts of ``job`` under ``scope``; finish it and free its room.

        No ``scope``: the job runs in the flow's task that awaits it (:meth:`await_task`),
        which is one of its waiters as long as it runs, so :meth:`_stop_unwanted` never
        picks it (a cancel scope cost 4 us a hop). If that task is cancelled while
        others still want the job, the job goes back to the head of its queue, for a
        worker, instead of ending cancelled.
        """
        name = job.executor.name
        ended: tuple[JobState, TaskError | None, EndRecord | None] = (
            JobState.CANCELLED,
            None,
            None,
        )
        again = False
        job.scope = scope
        try:
            if job.cancel_requested and scope is not None:
                scope.cancel()
            ended = await self._attempts(job)
        except trio.Cancelled:
            # the awaiting task's own waiter count is still in job.waiters
            again = (
                scope is None
                and not job.cancel_requested
                and not self._closing
                and (job.waiters > 1 or job.held)
            )
            raise
        finally:
            job.scope = None
            self._free[name] += cost
            self._settling[name] += 1
            try:
                if again and not job.done:
                    job.state = JobState.QUEUED
                    self._queues[name].appendleft(job)
                elif not job.done:
                    self._finish(job, *ended)
                elif ended[2] is not None and self._writer is not None:
                    self._writer.ended(ended[2])  # finished from elsewhere: record the attempt
            finally:
                self._settling[name] -= 1
            if scope is None:  # no worker goes on to the next queued job: its room is for them
                self._pump(job.executor)

    async def _attempts(self, job: Job) -> tuple[JobState, TaskError | None, EndRecord | None]:
        """Attempt ``job`` until one attempt succeeds or its retries are spent.

        The last attempt's record comes back unwritten: :meth:`_finish` writes it with
        the task's outcome, as one record.
        """
        task = job.task
        executor = job.executor
        writer = self._writer
        listening = bool(self._listeners)
        command = task.command_line()
        cwd = resolve(self.root, task.cwd) if task.cwd else self.root
        ahead = executor.name in self._ahead
        first: _Begin | None = None  # the first attempt's start: the task's duration runs from it
        reason, returncode, printed = "", None, True
        log_path: Path | None = None
        hashing = (task.freshness or self.config.freshness) == "hash"
        end: EndRecord | None = None
        for attempt in range(1, task.retry + 2):
            job.attempts = attempt
            log_path, stored_log = self._log_path(job, attempt)
            started = time.time()
            start: AttemptStart | None = None
            inputs: tuple[FingerprintRow, ...] = ()
            if writer is not None:
                if job.inputs:
                    inputs = await self._fingerprints(job.inputs, hashing)
                start = AttemptStart(
                    self.run_id,
                    job.key,
                    job.name,
                    attempt,
                    command,
                    executor.name,
                    started,
                    stored_log,
                )
                # on record as running before anything can touch the outputs
                writer.started(start)
            reattaching = attempt == 1 and bool(job.reattach)
            # a dead engine's job may have made its outputs already; and what was missing
            # when the task was decided needs no removing before its first attempt
            if not reattaching and not (attempt == 1 and job.absent):
                _unlink(job.paths)
            self._make_parent_dirs(job.paths)
            begin = _Begin(
                self,
                job,
                attempt,
                job.reason if attempt == 1 else f"retry {attempt - 1} of {task.retry}",
                command,
                log_path,
                started,
                start,
            )
            # by position, in the order of its fields (a test holds it): by keyword, the
            # call cost 0.7 us more, a fiftieth of a task in W5
            spec = AttemptSpec(
                job.name,  # name
                job.key,  # key
                attempt,  # attempt
                task.cmd,  # cmd
                cwd,  # cwd
                task.env,  # env
                log_path,  # log_path
                self.run_id,  # run_id
                self.state_dir,  # state_dir
                job.paths,  # outputs
                task.cores,  # cores
                task.mem,  # mem
                task.timeout,  # timeout
                None if task.quiet else self._output_printer(job.name),  # on_output
                None if start is None else begin.submitted,  # on_submitted
                begin if ahead else None,  # on_started
                job.reattach if attempt == 1 else "",  # reattach
            )
            first = first or begin
            since = (job.reattach_since if reattaching else time.time_ns()) - _MTIME_SLOP_NS
            outcome = None
            timed_out = False
            # the deadline is set when the attempt starts: at once, or when an executor
            # with a lookahead says so
            begin.deadline = trio.CancelScope() if task.timeout else None
            try:
                if not ahead:
                    begin.now(begin.t0)  # made a moment ago: one clock reading less
                if begin.deadline is not None:
                    with begin.deadline:
                        outcome = await executor.run(spec)
                    timed_out = begin.deadline.cancelled_caught
                else:
                    outcome = await executor.run(spec)
            except BaseException:
                _unlink(job.paths)  # an interrupted attempt leaves nothing
                if writer is not None and start is not None:
                    writer.ended(
                        _attempt_end(
                            begin.moved(start),
                            AttemptStatus.CANCELLED,
                            inputs,
                            reason="interrupted",
                        )
                    )
                raise
            finally:
                job.started = False
            t0 = begin.t0
            returncode = None
            made: list[tuple[str, os.stat_result]] = []
            outputs: tuple[FingerprintRow, ...] = ()  # their fingerprints, with the store
            if outcome is None or timed_out:
                reason = f"timed out after {task.timeout:g} s"
            elif outcome.error:
                reason = outcome.error
            elif outcome.lost:
                reason = outcome.lost
            else:
                returncode = outcome.returncode
                if returncode != 0:
                    reason = f"exit code {returncode}"
                else:
                    missing, made = self._made_outputs(job, since)
                    reason = f"missing output {', '.join(missing)}" if missing else ""
            if not reason and task.result_file is not None:
                try:
                    job.value = self._load_result(task)
                except (OSError, UnicodeDecodeError) as exc:
                    reason = f"cannot read result file {task.result_file}: {exc}"
            # a command that cannot even start will not start on a second try either
            could_not_start = outcome is not None and bool(outcome.error)
            will_retry = bool(reason) and attempt <= task.retry and not could_not_start
            now = self._clock()
            printed = outcome is None or outcome.printed
            if listening:
                self._emit(
                    ev.AttemptFinished(
                        job.name,
                        job.key,
                        attempt,
                        not reason,
                        returncode,
                        reason,
                        time.time(),
                        now - t0,
                        will_retry,
                        printed,
                    )
                )
            if writer is not None and start is not None:
                if made:  # hashing (slow on big files) runs in a thread
                    outputs = (
                        await self._hashed_made(made) if hashing else self._made_fingerprints(made)
                    )
                end = _attempt_end(
                    begin.moved(start),
                    AttemptStatus.FAILED if reason else AttemptStatus.SUCCEEDED,
                    inputs,
                    outcome,
                    printed,
                    returncode,
                    reason,
                    outputs,
                    None if reason else job.value,
                )
            if not reason:
                job.duration = now - first.t0  # on trio's clock: virtual in tests
                self._remember_remade(job)
                return JobState.SUCCEEDED, None, end
            _unlink(job.paths)
            if not will_retry:
                break
            if end is not None and writer is not None:
                writer.ended(end)  # this task goes on: its outcome comes later
            if self.config.retry_backoff:
                await trio.sleep(self.config.retry_backoff * 2 ** (attempt - 1))
        job.duration = self._clock() - first.t0 if first is not None else 0.0
        error = TaskFailed(
            job.name,
            reason,
            returncode=returncode,
            attempts=job.attempts,
            log_path=log_path if printed else None,
            log_tail=_tail(log_path) if printed and log_path is not None else "",
        )
        return JobState.FAILED, error, end

    def _made_outputs(
        self, job: Job, since_ns: int
    ) -> tuple[list[str], list[tuple[str, os.stat_result]]]:
        """The declared outputs an attempt did not make, and the files it made, stat'ed.

        A literal output must exist (it was removed before the attempt); a glob must
        match at least one file written during the attempt.
        """
        missing: list[str] = []
        made: list[tuple[str, os.stat_result]] = []
        if len(job.paths) == len(job.outputs):  # no glob: each output is its path
            for item, path in zip(job.outputs, job.paths, strict=True):
                try:
                    made.append((path, os.stat(path)))
                except OSError:
                    missing.append(item)  # type: ignore[arg-type]
            return missing, made
        literal = iter(job.paths)
        for item in job.outputs:
            if isinstance(item, Glob):
                fresh = False
                for path in expand(self.root, item):
                    try:
                        st = os.stat(resolve(self.root, path))
                    except OSError:
                        continue
                    made.append((self._norm(path), st))
                    fresh = fresh or st.st_mtime_ns >= since_ns
                if not fresh:
                    missing.append(item.pattern)
                continue
            path = next(literal)
            try:
                made.append((path, os.stat(path)))
            except OSError:
                missing.append(item)
        return missing, made

    async def _fingerprints(self, paths: Sequence[str], digest: bool) -> tuple[FingerprintRow, ...]:
        """Fingerprints of the existing ``paths``, an attempt's inputs.

        A file an attempt of this session made has the fingerprint taken then (a fan-in
        of 10,000 files made here stat'ed them all again, 20 ms of the event loop here,
        far more on a network file system). Without hashing, that is taken as it is: an
        input's fingerprint decides nothing then, it tells ``sf inspect`` what the task
        used. With hashing, where it decides, the digest is reused only if the file's
        size and time are still the ones it was taken with.
        """
        if self._writer is None:
            return ()
        if not digest:
            return self._stat_fingerprints(paths)
        norms = [self._norm(p) for p in paths]
        known = self._made_rows
        rows = await self._hashed_rows(norms, [known.get(n) for n in norms])
        return tuple([row for row in rows if row is not None])

    async def _hashed_rows(
        self, norms: list[str], known: list[FingerprintRow | None] | None = None
    ) -> list[FingerprintRow | None]:
        """Fingerprints with digests of normalised paths, in order, hashed in a thread (big
        files are slow); ``None`` for a file that does not exist. ``known``: an earlier
        row for each path, or ``None``, reused while its file's size and time hold."""
        root = self.root
        relative = [self._relative_normalised(n) for n in norms]
        earlier = known or [None] * len(norms)
        return await trio.to_thread.run_sync(
            lambda: [
                fingerprint_row(root, p, digest=True, known=k)
                for p, k in zip(relative, earlier, strict=True)
            ]
        )

    async def _hashed_made(
        self, made: list[tuple[str, os.stat_result]]
    ) -> tuple[FingerprintRow, ...]:
        """:meth:`_made_fingerprints` with digests: the files an attempt made, hashed again
        (they are new), and remembered for the tasks that read them."""
        paths = [path for path, _ in made]
        rows = await self._hashed_rows(paths)
        known = self._made_rows
        for path, row in zip(paths, rows, strict=True):
            if row is not None:
                known[path] = row
        return tuple([row for row in rows if row is not None])

    def _stat_fingerprints(self, paths: Sequence[str]) -> tuple[FingerprintRow, ...]:
        """Size and time of each of ``paths`` that exists, each path normalised once; a file
        made in this session has the one taken then (see :meth:`_fingerprints`)."""
        known = self._made_rows
        rows: list[FingerprintRow] = []
        for path in paths:
            full = self._norm(path)
            row = known.get(full)
            if row is None or row[3] is not None:
                try:
                    st = os.stat(full)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                row = (self._relative_normalised(full), st.st_size, st.st_mtime_ns, None)
            rows.append(row)
        return tuple(rows)

    def _made_fingerprints(
        self, made: list[tuple[str, os.stat_result]]
    ) -> tuple[FingerprintRow, ...]:
        """Fingerprints of the files an attempt made (paths normalised), from their stat
        results; remembered for the tasks that read them (see :meth:`_fingerprints`)."""
        known = self._made_rows
        rows: list[FingerprintRow] = []
        for path, st in made:
            known[path] = row = (self._relative_normalised(path), st.st_size, st.st_mtime_ns, None)
            rows.append(row)
        return tuple(rows)

    def _output_printer(self, name: str) -> Callable[[str], None]:
        def emit(line: str) -> None:
            self._emit(ev.OutputLine(name, line))

        return emit

    def _log_path(self, job: Job, attempt: int) -> tuple[Path, str]:
        """The attempt's log file, and its path as the store keeps it (relative)."""
        log_dir = self._log_dir
        if log_dir is None:
            log_dir = self._log_dir = self.state_dir / "logs" / self.run_id
            log_dir.mkdir(parents=True, exist_ok=True)
            self._stored_log_prefix = os.path.join(self._relative(str(log_dir)), "")
        if not job.log_stem:
            name = job.name
            if name.isascii() and name.isalnum():  # nothing to replace: the common case
                safe = name[:60]
            else:
                safe = _UNSAFE_IN_NAMES.sub("_", name)[:60].strip("._") or "task"
            job.log_stem = f"{safe}-{job.key[:8]}"
        name = f"{job.log_stem}.{attempt}.log"
        return _child(log_dir, name), self._stored_log_prefix + name

    def _make_parent_dirs(self, paths: Iterable[str]) -> None:
        for path in paths:  # absolute and normalised: what dirname does, faster
            parent = path.rpartition("/")[0] if os.sep == "/" else os.path.dirname(path)
            if parent and parent not in self._made_dirs:
                os.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)

    def _load_result(self, task: Task) -> Any:
        if task.result_file is None:
            return None
        with open(resolve(self.root, task.result_file), encoding="utf-8") as f:
            text = f.read()
        try:
            return json.loads(text)
        except ValueError:
            return text.rstrip("\n")

    # -- finishing --------------------------------------------------------------------

    def _finish(
        self,
        job: Job,
        state: JobState,
        error: TaskError | None = None,
        end: EndRecord | None = None,
    ) -> None:
        """Mark ``job`` done; record how it ended (with ``end``, its last attempt's record)."""
        job.state = state
        job.error = error
        if job.ok:
            _mark_done(job.task, job)
            for other in job.others or ():
                _mark_done(other, job)
        job.done = True
        if job.finished_event is not None:
            job.finished_event.set()
        now = time.time()
        if self._listeners:  # an event per task is worth making only for someone
            self._emit(
                ev.TaskFinished(
                    job.name,
                    job.key,
                    _STATUS[state],
                    job.attempts,
                    job.duration,
                    now,
                    str(error) if error else "",
                )
            )
        if error is not None:
            self.failures.append(error)
        if self._writer is not None and state is not JobState.WOULD_RUN:
            row = (
                self.run_id,
                job.key,
                job.name,
                _VALUE[state],
                job.attempts,
                job.duration,
                now,
                " ".join(job.after),
            )
            if end is None:
                self._writer.write(OutcomeRow(*row))
            else:  # one record for both
                self._writer.ended(with_outcome(end, row))
        for watcher in job.watchers or ():
            watcher(job)
        for dependent in job.dependents or ():
            dependent.blockers -= 1
            if dependent.blockers == 0:
                self._to_decide.append(dependent)
        job.dependents = None
        if self._to_decide:
            self._decide_pending()
        if job.held:
            job.held = False
            self._held.discard(job)
            if not self._held:
                self._held_done.set()
            if error is not None and job.waiters == 0:
                self._unawaited_failure(error)

    def _unawaited_failure(self, error: TaskError) -> None:
        """A started task failed with nobody awaiting it: fail fast, unless keep-going."""
        if self.config.keep_going or self._unawaited_error is not None:
            return
        self._unawaited_error = error
        if self._flow_scope is not None:
            self._flow_scope.cancel()

    # -- waiting ----------------------------------------------------------------------

    async def await_task(self, task: Task) -> Task:
        """Submit ``task`` and wait for it, running its job in this trio task if it can
        start at once (what ``await task`` does).

        A chain of tasks awaited in turn then costs no worker task per hop and one
        trip through trio's scheduler less. The job runs here only if it was queued by
        this submission, is first in its queue and fits; otherwise a worker runs it, as
        for a bag.
        """
        pumped = self._holding = set()
        try:
            job = self.submit(task)
        except BaseException:
            self._holding = None
            for executor in pumped:
                self._pump(executor)
            raise
        self._holding = None
        taken = None
        executor = job.executor
        if executor in pumped and job.state is JobState.QUEUED and not job.waiters:
            if self._head(executor.name) is job:
                taken = self._take(executor)
        for other in pumped:
            self._pump(other)
        if taken is None:
            await self.wait(job)
            return task
        job.waiters += 1
        try:
            await self._run_job(job, taken[1], None)
        finally:
            job.waiters -= 1
        if job.error is not None:
            raise job.error
        _mark_done(job.task, job)
        return task

    async def wait(self, job: Job) -> None:
        """Wait for ``job``; raise its error. Cancelling the last waiter cancels the job."""
        if job.done:
            await trio.lowlevel.checkpoint()
        else:
            job.waiters += 1
            try:
                await _finished(job)
            finally:
                job.waiters -= 1
                if not job.done:
                    await self._cancel_unwanted([job])
        if job.error is not None:
            raise job.error
        _mark_done(job.task, job)

    async def wait_all(self, jobs: Sequence[Job]) -> None:
        """Wait for all ``jobs`` with one trio task, not one per job.

        Fail-fast: the first failure cancels the jobs only this call waited for, and is
        raised. Keep-going: every job ends first; one failure is raised as itself,
        several as an ExceptionGroup.
        """
        jobs = list({id(j): j for j in jobs}.values())
        left = sum(1 for j in jobs if not j.done)
        wake = trio.Event()
        keep_going = self.config.keep_going
        stopped = False

        def watcher(job: Job) -> None:
            nonlocal left, stopped
            left -= 1
            failed = job.error is not None and not keep_going
            if failed and not stopped:
                # at once, not when this task wakes: by then every worker that ended
                # an attempt in the meantime would have started its next job
                stopped = True
                self._stop_unwanted([j for j in waiting if not j.done], ours=1)
            if left == 0 or failed:
                wake.set()

        if left == 0 or (not keep_going and any(j.error for j in jobs)):
            wake.set()
        waiting = [j for j in jobs if not j.done]
        for job in waiting:
            job.waiters += 1
            job.watchers = [*(job.watchers or ()), watcher]
        try:
            await wake.wait()
        finally:
            for job in waiting:
                job.waiters -= 1
                if job.watchers is not None:
                    job.watchers.remove(watcher)
            await self._cancel_unwanted([j for j in waiting if not j.done])
        errors = [j.error for j in jobs if j.error is not None]
        if errors:
            if len(errors) == 1 or not keep_going:
                raise errors[0]
            raise ExceptionGroup(f"{len(errors)} tasks failed", errors)

    async def _cancel_unwanted(self, jobs: Sequence[Job]) -> None:
        """Cancel the unfinished jobs that nobody waits for any more, and wait for them."""
        doomed = self._stop_unwanted(jobs)
        if not doomed:
            return
        with trio.CancelScope(shield=True):
            for job in doomed:
                await _finished(job)

    def _stop_unwanted(self, jobs: Sequence[Job], ours: int = 0) -> list[Job]:
        """Cancel the unfinished ``jobs`` that nobody but the caller (``ours`` waiters)
        waits for: a job not started ends now, a running one is told to stop. Returns
        the jobs cancelled."""
        doomed = [j for j in jobs if j.waiters == ours and not j.held and not j.done]
        for job in doomed:
            job.cancel_requested = True
            if job.state in (JobState.BLOCKED, JobState.QUEUED):
                self._finish(job, JobState.CANCELLED)
            elif job.scope is not None:
                job.scope.cancel()
        return doomed

    # -- events -----------------------------------------------------------------------

    def _emit(self, event: ev.Event) -> None:
        for listener in self._listeners:
            listener.on_event(event)


def _refuse_cycles(links: dict[Job, list[Job]]) -> None:
    """InvalidTask if some of these new jobs wait for each other's outputs in a circle.

    None of them could ever start, and the flow would wait forever. Only jobs
    submitted together can close a circle: an earlier job waits only for jobs that
    existed before it. Kahn's algorithm, on the jobs that wait for another new job.
    """
    waiting = {job: [p for p in producers if not p.done] for job, producers in links.items()}
    waiting = {job: [p for p in blockers if p in waiting] for job, blockers in waiting.items()}
    left = {job: len(blockers) for job, blockers in waiting.items() if blockers}
    if not left:
        return
    dependents: dict[Job, list[Job]] = {}
    for job in left:
        for producer in waiting[job]:
            dependents.setdefault(producer, []).append(job)
    free = [job for job, blockers in waiting.items() if not blockers]
    while free:
        for dependent in dependents.get(free.pop(), ()):
            left[dependent] -= 1
            if left[dependent] == 0:
                del left[dependent]
                free.append(dependent)
    if not left:
        return
    # each job left waits for another one left: follow them until one comes again
    job = next(iter(left))
    path: list[Job] = []
    at: dict[Job, int] = {}
    while job not in at:
        at[job] = len(path)
        path.append(job)
        job = next(p for p in waiting[job] if p in left)
    circle = path[at[job] :]
    names = " -> ".join(repr(j.name) for j in [*circle, job])
    raise InvalidTask(
        f"tasks wait for each other's outputs in a circle, so none of them can start: "
        f"{names} (each needs an output of the next); change their inputs or outputs "
        "so that one of them needs none of the others",
        job.name,
    )


async def _finished(job: Job) -> None:
    """Wait until ``job`` has finished (an Event per job would cost memory per pending task)."""
    if job.done:
        await trio.lowlevel.checkpoint()
        return
    if job.finished_event is None:
        job.finished_event = trio.Event()
    await job.finished_event.wait()


class _Begin:
    """The start of one attempt: its deadline, its listeners, its times.

    The session calls :meth:`now` as it hands the attempt to its executor; an executor
    with a lookahead instead calls the object itself when the attempt leaves its queue
    and starts. Either way the timeout runs from then.
    """

    __slots__ = (
        "session",
        "job",
        "attempt",
        "reason",
        "command",
        "log_path",
        "wall",
        "t0",
        "deadline",
        "start",
    )

    def __init__(
        self,
        session: Session,
        job: Job,
        attempt: int,
        reason: str,
        command: str,
        log_path: Path,
        handed: float,
        start: AttemptStart | None = None,
    ) -> None:
        self.session = session
        self.job = job
        self.attempt = attempt
        self.reason = reason
        self.command = command
        self.log_path = log_path
        self.wall = handed  # when it started, on the wall clock
        self.t0 = session._clock()
        self.deadline: trio.CancelScope | None = None
        self.start = start  # the journal's record of it, when the session keeps one

    def __call__(self, at: float) -> None:
        self.wall = at
        self.now()

    def now(self, t0: float | None = None) -> None:
        """The attempt starts now (at ``t0`` on trio's clock, when the caller has it)."""
        job = self.job
        announced = job.started  # an executor may start it anew (LocalExecutor, lost spawner)
        job.started = True
        self.t0 = self.session._clock() if t0 is None else t0
        if self.deadline is not None and job.task.timeout:
            self.deadline.deadline = self.t0 + job.task.timeout
        if self.session._listeners and not announced:
            self.session._emit(
                ev.AttemptStarted(
                    job.name,
                    job.key,
                    self.attempt,
                    self.reason,
                    self.command,
                    self.log_path,
                    job.executor.name,
                    self.wall,
                )
            )

    def submitted(self, job_id: str) -> None:
        """Journal the job id an executor got, so a later engine can wait for that job.

        A bound method, not a closure per attempt: that cost a sixtieth of a task's
        instructions in W5 with the store.
        """
        writer = self.session._writer
        if writer is not None and self.start is not None:
            writer.started(self.start._replace(job_id=job_id))

    def moved(self, start: AttemptStart) -> AttemptStart:
        """The journal's record of the start, with the time the attempt really started."""
        return start if self.wall == start.started else start._replace(started=self.wall)


def _unlink(paths: Iterable[str]) -> None:
    """Delete literal output files, so a failed or interrupted attempt leaves none behind.

    Directories and glob matches are left alone: a glob is checked by modification
    time instead.
    """
    for path in paths:
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass


def _attempt_end(
    start: AttemptStart,
    status: AttemptStatus,
    inputs: tuple[FingerprintRow, ...],
    outcome: Outcome | None = None,
    printed: bool = True,
    returncode: int | None = None,
    reason: str = "",
    outputs: tuple[FingerprintRow, ...] = (),
    result: Any = None,
) -> EndRecord:
    """The record of an attempt that ended: how it started, how it ended, what it used."""
    log_path = start.log_path if printed else ""  # it printed nothing: no log file
    if outcome is None:
        return attempt_end(
            start, status, time.time(), log_path, start.job_id, "", returncode, reason, inputs
        )
    return attempt_end(
        start,
        status,
        outcome.ended,
        log_path,
        outcome.job_id or start.job_id,
        outcome.host,
        returncode,
        reason,
        inputs,
        outputs,
        result,
        outcome.cpu_seconds,
        outcome.max_rss,
    )


def _mark_done(task: Task, job: Job) -> None:
    # private fields: past the Task's setattr hooks, which only guard public ones
    object.__setattr__(task, "_done", True)
    object.__setattr__(task, "_value", job.value)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log file, read from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def new_run_id() -> str:
    """A unique run id that sorts by start: UTC time to the millisecond, a random suffix."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}{int(now % 1 * 1000):03d}-{os.urandom(2).hex()}"


@asynccontextmanager
async def open_session(
    *,
    executors: Sequence[Executor] | None = None,
    root: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] = ".scriptflow",
    config: SessionConfig | None = None,
    listeners: Iterable[ev.Listener] = (),
    run_id: str | None = None,
    store: bool = True,
) -> AsyncIterator[Session]:
    """Open a session: tasks awaited inside the block run on ``executors``.

    The first executor is the default (a :class:`LocalExecutor` with one slot per CPU
    when none is given). Relative paths are relative to ``root`` (the current
    directory by default); logs and the store go under ``state_dir``, which one
    session at a time may use (``StoreLocked`` otherwise). Leaving the block waits for
    tasks submitted with ``start()``; an exception or cancellation kills every
    process the session started. ``store=False`` keeps no records: make's rule alone.
    """
    root_dir = os.path.abspath(root if root is not None else os.getcwd())
    state = Path(resolve(root_dir, os.fspath(state_dir)))
    config = config or SessionConfig()
    executors = list(executors) if executors else [LocalExecutor()]
    names = [e.name for e in executors]
    if len(set(names)) != len(names):
        raise ValueError(f"executor names must differ, got {names}")
    async with AsyncExitStack() as stack:
        stack.enter_context(_collect_less())
        writer: StoreWriter | None = None
        history: History | None = None
        if store:
            if not config.dry_run:  # a dry run only reads: it may look while a run goes on
                lock = StateLock(state)
                await lock.acquire_async()
                stack.callback(lock.release)
                # closed by the stack if what follows fails, else at the end of the block
                writer = StoreWriter(state / STORE_FILE, hold=lock.fileno())
                stack.push_async_callback(writer.close)
            db, history = await trio.to_thread.run_sync(_open_store, state, not config.dry_run)
            stack.callback(db.close)
        for executor in executors:
            await stack.enter_async_context(executor)
        async with trio.open_nursery() as store_nursery:
            if writer is not None:
                store_nursery.start_soon(writer.run)
            try:
                async with trio.open_nursery() as nursery:
                    session = Session(
                        nursery=nursery,
                        root=root_dir,
                        state_dir=state,
                        executors=executors,
                        config=config,
                        listeners=list(listeners),
                        run_id=run_id or new_run_id(),
                        writer=writer,
                        history=history,
                    )
                    token = _current.set(session)
                    try:
                        yield session
                        await session.wait_started()
                    except BaseException:
                        session._closing = True
                        raise
                    finally:
                        _current.reset(token)
            finally:
                if writer is not None:
                    await writer.close(db)
                store_nursery.cancel_scope.cancel()


def _open_store(state: Path, recover: bool) -> tuple[Store, History]:
    """The store, what a dead engine left settled (``recover``), and its history: in one
    trip to a thread (each trip cost about 0.2 ms of a short session)."""
    db = Store.open(state)
    try:
        if recover:
            db.recover()
        return db, db.load_history()
    except BaseException:
        db.close()
        raise


@contextmanager
def _collect_less() -> Iterator[None]:
    """Run the garbage collector's young collections less often, for the session.

    Python's default (one every 700 new objects) suits short-lived objects; a session
    makes a few that live as long as it does for every task (the Task, its job, its
    paths), and each young collection moved them along to the older generations, whose
    collections went through all of them again: a sixth of the engine's time on 10,000
    tasks. The old threshold comes back when the session ends.
    """
    first, *rest = gc.get_threshold()
    if first >= _YOUNG_COLLECTION_EVERY or not gc.isenabled():
        yield
        return
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, *rest)
    try:
        yield
    finally:
        if gc.get_threshold()[0] == _YOUNG_COLLECTION_EVERY:  # unless changed meanwhile
            gc.set_threshold(first, *rest)


async def bag(*items: Any) -> list[Any]:
    """Await tasks (or any awaitables) concurrently; return their results in order.

    ``sf.bag(t1, t2)`` and ``sf.bag([t1, t2])`` both work. Tasks are waited for by one
    trio task however many there are; other awaitables each get a child of a nursery.
    Fail-fast by default: the first failure cancels the rest.
    """
    if len(items) == 1 and isinstance(items[0], list | tuple):
        items = tuple(items[0])
    if not items:
        return []
    if all(isinstance(item, Task) for item in items):
        session = current_session()
        await session.wait_all(session.submit_many(items))  # each job marked its tasks done
        return list(items)
    return await _gather(items)


async def _gather(items: Sequence[Any]) -> list[Any]:
    results: list[Any] = [None] * len(items)
    session = _current.get()
    keep_going = session is not None and session.config.keep_going
    errors: list[Exception] = []

    async def one(i: int, item: Any) -> None:
        try:
            results[i] = await item
        except Exception as exc:
            if not keep_going:
                raise
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(one, i, item)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ExceptionGroup(f"{len(errors)} parts of the bag failed", errors)
    return results


async def retry(stage: Any, attempts: int = 2, *, delay: float = 0.0) -> Any:
    """Run ``stage`` again, as a whole, when one of its tasks fails; up to ``attempts`` runs.

    ``stage`` is an async function (called anew for each run), a Task, or a list of
    Tasks. Tasks that succeeded in an earlier run of the stage are not run again.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be 1 or more, not {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            if isinstance(stage, Task):
                return await stage
            if isinstance(stage, list | tuple):
                return await bag(*stage)
            return await stage()
        except (TaskError, ExceptionGroup) as exc:
            if isinstance(exc, ExceptionGroup) and exc.split(TaskError)[1] is not None:
                raise
            if attempt == attempts:
                raise
            if delay:
                await trio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
