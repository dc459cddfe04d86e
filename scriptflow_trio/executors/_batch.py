"""What the batch-scheduler executors (SLURM, Grid Engine, PBS) share.

Each attempt becomes a job script under the state directory
(``<state_dir>/jobs/<run>/<name>-<key8>.<attempt>.sh``). Its wrapper runs the command
in a subshell and, when it ends, writes ``"<exit code> <host> <cpu seconds> <peak
memory in bytes>"`` to ``<state_dir>/jobs/exit/<job id>`` (a temporary name, then a
rename): that file, not "the job left the queue", decides how the attempt ended. The
path is a pure function of the state directory and the job id, so an engine that died
and restarts can judge a job that an earlier run submitted (``AttemptSpec.reattach``).

What the command used is measured by the job itself, whatever the scheduler and
whether or not it keeps accounts: the wrapper runs its own script again under a few
lines of Python (the engine's interpreter if the node sees it, else ``python3``) that
reap it with ``wait4``, which gives the CPU time of the whole tree and the peak memory
of its largest process. Without Python the command runs in the wrapper as before, and
the CPU time comes from the wrapper's ``/proc/<pid>/stat`` (no peak memory). A field
the job could not measure is ``-``; an exit file of two fields (from a wrapper of an
earlier version, whose job an engine reattaches to) reads as "not measured".

One executor owns two background tasks, in its own nursery and shielded from the
caller's cancellation (so that they can finish cancelling jobs after Ctrl-C):

* the poller asks the scheduler about *all* of its jobs in one call per interval, and
  lists the exit-code directory once per interval; ``run`` waits on a per-job
  ``trio.Event`` that the poller sets. A failing or slow scheduler makes it back off;
  a failed query is retried, never taken as the loss of a job.
* the canceller collects the ids of cancelled attempts for a short window and cancels
  them with one ``scancel``/``qdel`` call.

A flavour (``slurm.py``, ``sge.py``) says how to write directives, submit, query and
cancel; everything else is here.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

import attrs
import trio

from .._errors import ExecutorError
from ._base import AttemptSpec, Executor, Outcome

log = logging.getLogger("scriptflow_trio.executors")

#: how a flavour classifies a scheduler's job state
StateKind = Literal["active", "ended", "killed", "error"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SchedulerError(Exception):
    """A scheduler command failed in a way that may pass (controller busy, timeout)."""


@attrs.frozen
class Completed:
    """What a scheduler command printed and returned."""

    returncode: int
    stdout: str
    stderr: str


@attrs.define(eq=False)
class _Job:
    """The poller's view of one job."""

    job_id: str
    exit_file: Path
    outputs: tuple[str, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    state: str = ""  # the scheduler's last word about it
    gone_since: float | None = None  # when it was last seen to have left the queue
    outputs_since: float | None = None  # exit code 0 read, outputs not visible yet
    cancelling: bool = False
    returncode: int | None = None
    host: str = ""
    cpu_seconds: float | None = None
    max_rss: int | None = None
    error: str = ""

    def finish(self, error: str = "") -> None:
        if not self.done.is_set():
            self.error = self.error or error
            self.done.set()


def safe_name(name: str, limit: int = 60) -> str:
    """``name`` with only the characters every scheduler and file system accepts."""
    return _SAFE.sub("_", name)[:limit].strip("._") or "task"


def format_mem(mem: str | int | float) -> str:
    """A task's ``mem`` for a scheduler: numbers are gigabytes, strings pass as written."""
    if isinstance(mem, str):
        return mem.strip()
    return f"{mem:g}G"


def format_time(value: str | int | float) -> str:
    """A wall-clock limit: a string passes as written, a number of seconds becomes H:MM:SS."""
    if isinstance(value, str):
        return value.strip()
    seconds = max(1, math.ceil(value))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _lines(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(line for line in value.splitlines() if line.strip())
    return tuple(value)


def _words(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    return tuple(value)


# The wrapper's functions. ``__sf_done CODE [CPU RSS]`` writes the exit file; ``__sf_end
# CODE`` ends the job once the command has run in the wrapper's own shell: the CPU time of
# the children it waited for is in /proc/<pid>/stat (fields 16 and 17, in clock ticks).
_WRAPPER = (
    "__sf_done() {",
    '  mkdir -p "$__sf_exit_dir"',
    '  printf \'%s %s %s %s\\n\' "$1" "$(hostname)" "${2:--}" "${3:--}" \\',
    '    > "$__sf_exit_dir/.$__sf_id.tmp" &&',
    '    mv -f "$__sf_exit_dir/.$__sf_id.tmp" "$__sf_exit_dir/$__sf_id"',
    "}",
    "__sf_end() {",
    "  local stat hz ms cpu=-",
    "  if [ -r /proc/$$/stat ] && read -r stat < /proc/$$/stat; then",
    '    set -- "$1" ${stat##*) }',
    "    hz=$(getconf CLK_TCK 2>/dev/null) || hz=100",
    "    ms=$(( (${15} + ${16}) * 1000 / ${hz:-100} ))",
    "    cpu=$((ms / 1000)).$(printf %03d $((ms % 1000)))",
    "  fi",
    '  __sf_done "$1" "$cpu" -',
    '  exit "$1"',
    "}",
)

# Run by the wrapper as ``python -c _MEASURE /path/to/bash script``: runs the script
# again, writes "+" (it started) to descriptor 3, reaps it with wait4, writes " CPU RSS"
# (RSS "-" when the figure is only this Python's own peak, which Linux counts in it).
# Python 3 of any age; the child gets back the signals Python ignores.
_MEASURE = """\
import os, resource, signal, sys
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pid = os.fork()
if pid == 0:
    try:
        os.close(3)
        for name in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
os.write(3, b"+")
_, status, use = os.wait4(pid, 0)
# a child's peak includes this process's memory (until exec): at or below it, unknown
unit = 1 if sys.platform == "darwin" else 1024
rss = "%d" % (use.ru_maxrss * unit) if use.ru_maxrss > floor else "-"
os.write(3, (" %.3f %s" % (use.ru_utime + use.ru_stime, rss)).encode())
sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def _measured(script: str, pythons: str) -> list[str]:
    """Wrapper lines that run ``script`` (this job's own, quoted) again under _MEASURE.

    The second run (``__sf_inner`` names the job) runs the command and leaves the exit
    file to the first, which adds what it used. When no Python can start it, the command
    runs in this shell after all.
    """
    return [
        'if [ "${__sf_inner:-}" = "again:$__sf_id" ]; then',
        "  unset __sf_inner",
        "  __sf_done() { :; }",
        '  __sf_end() { exit "$1"; }',
        f"elif [ -r {script} ]; then",
        f"  for __sf_py in {pythons}; do",
        '    command -v "$__sf_py" >/dev/null 2>&1 || continue',
        '    { __sf_use=$(__sf_inner="again:$__sf_id" "$__sf_py" -E -S -c '
        + shlex.quote(_MEASURE)
        + f' "${{BASH:-/bin/bash}}" {script} 3>&1 >&4 4>&-); __sf_rc=$?; }} 4>&1',
        '    if [ -n "$__sf_use" ]; then',
        '      __sf_done "$__sf_rc" ${__sf_use#+}',
        '      exit "$__sf_rc"',
        "    fi",
        "  done",
        "fi",
    ]


async def run_command(argv: Sequence[str], *, limit: float = 60.0) -> Completed:
    """Run a scheduler command off the event loop; a hang or a missing program is a
    SchedulerError."""
    try:
        with trio.fail_after(limit):
            result = await trio.run_process(
                list(argv),
                capture_stdout=True,
                capture_stderr=True,
                stdin=b"",
                check=False,
            )
    except trio.TooSlowError:
        raise SchedulerError(f"`{argv[0]}` did not answer within {limit:g} s") from None
    except OSError as exc:
        raise SchedulerError(f"cannot run `{argv[0]}`: {exc}") from None
    return Completed(
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


class BatchExecutor(Executor):
    """Runs each attempt as a batch job; a flavour subclass speaks its scheduler's tongue.

    Settings (keyword arguments; ``from_config`` also takes scriptflow's keys):

    ``maxsize``
        jobs of this executor in the queue at once (its ``capacity``; each job costs 1).
    ``account``, ``queue`` (SLURM: ``partition``), ``time`` (scriptflow: ``walltime``)
        where and how long jobs run; ``time`` is a string as the scheduler writes it,
        or a number of seconds.
    ``mem``
        memory for tasks that set none (a task's ``mem`` wins): "4G", or gigabytes.
    ``modules``
        environment modules to ``module load`` first (a list or a string).
    ``directives``
        extra directive lines, with or without their prefix (``#SBATCH`` ...).
    ``env_file``
        a shell file every job sources first.
    ``state_dir``
        where job scripts and exit-code files go (default: the session's state dir).
    ``poll_interval``, ``max_poll_interval``
        seconds between two queries of the scheduler, and the most it backs off to.
    ``exit_grace``
        how long to wait, after a job left the queue, for its exit-code file (and,
        after an exit code 0, for its outputs) to appear on a shared file system.
    ``submit_interval``
        the least time between two submissions (schedulers rate-limit them).
    ``cancel_window``, ``cancel_timeout``
        how long cancellations are collected into one call, and how long a cancelled
        attempt waits for the scheduler to confirm that its job is gone.
    """

    # -- what a flavour defines ---------------------------------------------------------
    kind: ClassVar[str] = "batch"  # names the executor in messages
    submit_program: ClassVar[str] = ""
    query_program: ClassVar[str] = ""
    cancel_program: ClassVar[str] = ""
    directive: ClassVar[str] = ""  # "#SBATCH", "#$", "#PBS"
    job_id_variable: ClassVar[str] = ""  # set by the scheduler inside the job
    queue_setting: ClassVar[str] = "queue"  # what the flavour calls its queue setting
    default_env_file: ClassVar[str | None] = None  # sourced when it exists
    cancel_separately_on_error: ClassVar[bool] = False
    # submission errors worth retrying (controller busy...), as regular expressions
    transient_submit: ClassVar[tuple[str, ...]] = ()
    # (regular expression on the scheduler's complaint, the setting to fix)
    setting_hints: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(
        self,
        *,
        name: str | None = None,
        maxsize: int = 100,
        account: str | None = None,
        queue: str | None = None,
        time: str | int | float | None = None,
        mem: str | int | float | None = None,
        modules: str | Sequence[str] | None = None,
        directives: str | Sequence[str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = 3.0,
        max_poll_interval: float = 60.0,
        exit_grace: float = 60.0,
        submit_interval: float = 0.1,
        cancel_window: float = 0.2,
        cancel_timeout: float = 30.0,
        job_prefix: str = "sf",
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be 1 or more, not {maxsize}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        self.name = name or self.kind
        self.maxsize = maxsize
        self.account = account
        self.queue = queue
        self.time = time
        self.mem = mem
        self.modules = _words(modules)
        self.directives = _lines(directives)
        self._env_file_explicit = env_file is not None
        env = env_file if env_file is not None else self.default_env_file
        self.env_file = os.path.abspath(env) if env is not None else None
        self.state_dir = Path(os.path.abspath(state_dir)) if state_dir is not None else None
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.exit_grace = exit_grace
        self.submit_interval = submit_interval
        self.cancel_window = cancel_window
        self.cancel_timeout = cancel_timeout
        self.job_prefix = job_prefix
        self._jobs: dict[str, _Job] = {}
        self._stack: AsyncExitStack | None = None
        self._background = trio.CancelScope(shield=True)
        self._have_jobs = trio.Event()
        self._wake = trio.Event()
        self._to_cancel: dict[str, None] = {}  # ids waiting for the next cancel call
        self._cancel_asked = trio.Event()
        self._submit_lock = trio.Lock()
        self._cancel_lock = trio.Lock()  # held while a cancel command runs
        self._last_submit = -math.inf
        self._delay = poll_interval
        #: how many times the scheduler was queried (one call each)
        self.queries = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Self:
        """Build one from a scriptflow-style dict (``sf.init({"executors": {...}})``)."""
        aliases = {"walltime": "time", "partition": cls.queue_setting, "queue": cls.queue_setting}
        aliases.update({"sbatch": "directives", "extra": "directives"})
        known = set(_parameters(cls))
        kwargs: dict[str, Any] = {}
        for key, value in {**config, **overrides}.items():
            key = aliases.get(key, key)
            if key not in known:
                choices = ", ".join(sorted(known))
                raise ExecutorError(
                    f"the {cls.kind} executor has no setting {key!r}; it has: {choices}"
                )
            kwargs[key] = value
        return cls(**kwargs)

    # -- the Executor interface ---------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.maxsize

    def cost(self, spec_cores: int) -> int:
        return 1

    supports_reattach = True

    def programs(self) -> tuple[str, ...]:
        """The scheduler commands this executor cannot work without."""
        return (self.submit_program, self.query_program, self.cancel_program)

    async def __aenter__(self) -> Self:
        missing = [p for p in self.programs() if shutil.which(p) is None]
        if missing:
            raise ExecutorError(
                f"the {self.name} executor needs `{'`, `'.join(missing)}`, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed or not on PATH "
                f"(is this a {self.kind} submit host?)"
            )
        explicit = self._env_file_explicit and self.env_file
        if explicit and not await trio.Path(self.env_file or "").is_file():
            raise ExecutorError(
                f"the {self.name} executor's env_file {self.env_file} does not exist"
            )
        self._stack = AsyncExitStack()
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(self._run_background, name=f"{self.name} poller")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with trio.CancelScope(shield=True):
                live = [job for job in self._jobs.values() if not job.done.is_set()]
                for job in live:  # attempts cancel their own jobs; this is a safety net
                    self._request_cancel(job)
                with trio.move_on_after(self.cancel_timeout):
                    for job in live:
                        await job.done.wait()
                    # cancellations still waiting for their batch, or being sent, must
                    # reach the scheduler before the canceller stops
                    await self._cancel_batch()  # waits for one being sent
        finally:
            self._background.cancel()
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()

    async def run(self, spec: AttemptSpec) -> Outcome:
        if self._stack is None:
            raise RuntimeError(f"enter the {self.name} executor (async with) before running")
        started = time.time()
        state_dir = self.state_dir or spec.state_dir or spec.log_path.parent.parent.parent
        exit_dir = state_dir / "jobs" / "exit"
        if spec.reattach:
            job_id = spec.reattach
        else:
            problem = self.check(spec)
            if problem:
                return await self._refuse(spec, started, problem)
            script = await self._write_script(spec, state_dir, exit_dir)
            await self._throttle()
            with trio.CancelScope(shield=True):  # a job submitted must get its id recorded
                job_id, problem = await self._submit(script)
            if problem:
                return await self._refuse(spec, started, problem)
        if spec.on_submitted is not None:
            spec.on_submitted(job_id)
        job = _Job(job_id, exit_dir / job_id, spec.outputs)
        self._jobs[job_id] = job
        self._have_jobs.set()
        try:
            await job.done.wait()
        except BaseException:
            with trio.CancelScope(shield=True):
                self._request_cancel(job)
                with trio.move_on_after(self.cancel_timeout):
                    await job.done.wait()
            raise
        finally:
            self._jobs.pop(job_id, None)
        ended = time.time()
        if job.error:
            await trio.to_thread.run_sync(_append, spec.log_path, job.error)
            # the job ran, or was meant to: a retry may fare better
            return Outcome(None, started, ended, job.host, job_id=job_id, lost=job.error)
        return Outcome(
            job.returncode,
            started,
            ended,
            job.host,
            job_id=job_id,
            cpu_seconds=job.cpu_seconds,
            max_rss=job.max_rss,
        )

    # -- job scripts --------------------------------------------------------------------

    def check(self, spec: AttemptSpec) -> str:
        """Why ``spec`` cannot be submitted with these settings ("" when it can)."""
        return ""

    def job_name(self, spec: AttemptSpec) -> str:
        """The job's name: the prefix, the run id (one query finds a run's jobs), the task."""
        run = spec.run_id or spec.log_path.parent.name
        return f"{self.job_prefix}-{safe_name(run, 40)}-{safe_name(spec.name, 40)}"

    def directive_lines(self, spec: AttemptSpec, job_name: str) -> list[str]:
        """The flavour's ``#SBATCH``/``#$``/``#PBS`` lines, without the extra ones."""
        raise NotImplementedError

    def script_path(self, spec: AttemptSpec, state_dir: Path) -> Path:
        run = spec.run_id or spec.log_path.parent.name
        file = f"{safe_name(spec.name)}-{spec.key[:8]}.{spec.attempt}.sh"
        return state_dir / "jobs" / run / file

    def render(self, spec: AttemptSpec, exit_dir: Path, script: Path | None = None) -> str:
        """The job script for one attempt; ``script`` is where it is written, from where
        the job runs it again to measure what the command uses (None: never again)."""
        lines = ["#!/bin/bash"]
        lines += self.directive_lines(spec, self.job_name(spec))
        for extra in self.directives:
            extra = extra.strip()
            lines.append(extra if extra.startswith("#") else f"{self.directive} {extra}")
        lines += [
            f"# scriptflow_trio: task {spec.name!r}, key {spec.key}, attempt {spec.attempt}",
            f"__sf_exit_dir={shlex.quote(str(exit_dir))}",
            f'__sf_id="${{{self.job_id_variable}}}"',
            *_WRAPPER,
        ]
        if script is not None:
            pythons = shlex.join(dict.fromkeys([sys.executable, "python3"]))
            lines += _measured(shlex.quote(str(script)), pythons)
        if self.env_file:
            quoted = shlex.quote(self.env_file)
            lines.append(f"if [ -f {quoted} ]; then . {quoted}; fi")
        if self.modules:
            lines.append(f"module load {shlex.join(self.modules)}")
        cwd = shlex.quote(spec.cwd)
        lines.append(f"cd {cwd} || {{ echo cannot cd to {cwd} >&2; __sf_done 127; exit 127; }}")
        for key, value in (spec.env or {}).items():
            lines.append(f"export {key}={shlex.quote(value)}")
        command = spec.cmd if isinstance(spec.cmd, str) else shlex.join(spec.cmd)
        lines += ["(", command, ")", '__sf_end "$?"', ""]
        return "\n".join(lines)

    async def _write_script(self, spec: AttemptSpec, state_dir: Path, exit_dir: Path) -> Path:
        path = self.script_path(spec, state_dir)
        text = self.render(spec, exit_dir, path)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            exit_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)

        await trio.to_thread.run_sync(write)
        return path

    async def _refuse(self, spec: AttemptSpec, started: float, problem: str) -> Outcome:
        await trio.to_thread.run_sync(_append, spec.log_path, problem)
        return Outcome(None, started, time.time(), error=problem)

    # -- submission ---------------------------------------------------------------------

    def submit_argv(self, script: Path) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, stdout: str) -> str:
        """The job id in what the submit command printed."""
        raise NotImplementedError

    async def _throttle(self) -> None:
        async with self._submit_lock:
            wait = self._last_submit + self.submit_interval - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            self._last_submit = trio.current_time()

    async def _submit(self, script: Path) -> tuple[str, str]:
        """Submit ``script``: (job id, "") or ("", what is wrong, for a person)."""
        argv = self.submit_argv(script)
        delay = 1.0
        for attempt in range(1, 6):
            try:
                result = await run_command(argv)
            except SchedulerError as exc:
                complaint = str(exc)
            else:
                if result.returncode == 0:
                    try:
                        return self.parse_submit(result.stdout), ""
                    except ValueError:
                        return "", (
                            f"`{argv[0]}` printed no job id: {result.stdout.strip()!r} "
                            f"{result.stderr.strip()}"
                        )
                complaint = (result.stderr.strip() or result.stdout.strip()) or (
                    f"exit code {result.returncode}"
                )
                if not any(re.search(p, complaint, re.I) for p in self.transient_submit):
                    return "", self.submission_error(complaint)
            if attempt == 5:
                break
            log.warning("%s failed (%s); retrying in %g s", argv[0], complaint, delay)
            await trio.sleep(delay)
            delay *= 2
        return "", f"`{argv[0]}` kept failing: {complaint}"

    def submission_error(self, complaint: str) -> str:
        """The scheduler's refusal, and which setting of this executor to look at."""
        for pattern, setting in self.setting_hints:
            if re.search(pattern, complaint, re.I):
                fix = f"fix the {self.name} executor's `{setting}` setting"
                break
        else:
            fix = (
                f"check the {self.name} executor's settings (account, "
                f"{self.queue_setting}, time, mem, directives)"
            )
        return f"{self.submit_program} refused the job: {complaint} -- {fix}"

    # -- the scheduler's view -----------------------------------------------------------

    def query_argv(self, job_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def parse_query(self, result: Completed, job_ids: Sequence[str]) -> dict[str, str]:
        """Job id -> state for the jobs the scheduler still lists; SchedulerError when
        the answer says nothing reliable."""
        raise NotImplementedError

    def state_kind(self, state: str) -> StateKind:
        """active: queued or running; ended: may have written its exit code; killed: the
        scheduler stopped it; error: it will never run (and is cancelled)."""
        raise NotImplementedError

    def explain_state(self, state: str) -> str:
        """A hint for a job that ended in ``state`` without an exit code."""
        return ""

    async def explain_lost(self, job_id: str) -> str:
        """What the scheduler's accounting knows of a lost job ("" when it has none)."""
        return ""

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.cancel_program, *job_ids]

    # -- background work ----------------------------------------------------------------

    async def _run_background(self) -> None:
        with self._background:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._poll_forever)
                nursery.start_soon(self._cancel_forever)

    def _request_cancel(self, job: _Job) -> None:
        if job.cancelling:
            return
        job.cancelling = True
        if not job.done.is_set():
            self._to_cancel[job.job_id] = None
            self._cancel_asked.set()

    async def _cancel_forever(self) -> None:
        while True:
            await self._cancel_asked.wait()
            await trio.sleep(self.cancel_window)  # collect the others cancelled meanwhile
            await self._cancel_batch()
            self._wake.set()  # look again soon: the attempts wait for the confirmation

    async def _cancel_batch(self) -> None:
        """One cancel call for every id asked for since the last one."""
        async with self._cancel_lock:
            ids, self._to_cancel = list(self._to_cancel), {}
            self._cancel_asked = trio.Event()
            if ids:
                await self._send_cancel(ids)

    async def _send_cancel(self, ids: list[str]) -> None:
        try:
            result = await run_command(self.cancel_argv(ids))
        except SchedulerError as exc:
            log.warning("cancelling %s failed: %s", ", ".join(ids), exc)
            return
        if result.returncode == 0 or not self.cancel_separately_on_error or len(ids) == 1:
            if result.returncode != 0:
                log.info("%s: %s", self.cancel_program, result.stderr.strip())
            return
        for job_id in ids:  # some sites reject several ids in one call
            try:
                await run_command(self.cancel_argv([job_id]))
            except SchedulerError as exc:
                log.warning("cancelling %s failed: %s", job_id, exc)

    async def _poll_forever(self) -> None:
        while True:
            if not self._jobs:
                self._have_jobs = trio.Event()
                await self._have_jobs.wait()
            with trio.move_on_after(self._delay):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.poll_once()

    async def poll_once(self) -> None:
        """One query of the scheduler for all jobs in the queue, one look at the files."""
        in_queue = [j for j in self._jobs.values() if not j.done.is_set() and j.gone_since is None]
        if in_queue:
            ids = [j.job_id for j in in_queue]
            t0 = trio.current_time()
            try:
                self.queries += 1
                states = self.parse_query(await run_command(self.query_argv(ids)), ids)
            except SchedulerError as exc:
                self._delay = min(self._delay * 2, self.max_poll_interval)
                log.warning(
                    "%s failed (%s); next try in %g s", self.query_program, exc, self._delay
                )
            else:
                took = trio.current_time() - t0
                # a slow scheduler is asked less often
                self._delay = min(max(self.poll_interval, 4 * took), self.max_poll_interval)
                self._note_states(in_queue, states)
        await self._look_at_files()

    def _note_states(self, jobs: list[_Job], states: Mapping[str, str]) -> None:
        now = time.time()
        for job in jobs:
            state = states.get(job.job_id)
            kind = self.state_kind(state) if state is not None else "ended"
            if state is not None:
                job.state = state
            if kind == "active":
                continue
            if kind == "error":
                job.finish(
                    f"{self.kind} job {job.job_id} is in state {state} and will not run"
                    f"{self.explain_state(state or '')}; it was cancelled"
                )
                self._request_cancel(job)
                continue
            job.gone_since = now

    async def _look_at_files(self) -> None:
        waiting = [j for j in self._jobs.values() if not j.done.is_set()]
        if not waiting:
            return
        found = await trio.to_thread.run_sync(_read_exit_files, waiting)
        now = time.time()
        for job in waiting:
            if job.job_id in found:
                ended, outputs_visible = found[job.job_id]
                job.returncode, job.host = ended.returncode, ended.host
                job.cpu_seconds, job.max_rss = ended.cpu_seconds, ended.max_rss
                if job.returncode == 0 and not outputs_visible and not job.cancelling:
                    # the exit code can show before the outputs on a shared file system
                    job.outputs_since = job.outputs_since or now
                    if now - job.outputs_since < self.exit_grace:
                        continue
                job.finish()
            elif job.gone_since is not None:
                if job.cancelling:
                    job.finish("cancelled")
                    continue
                killed = self.state_kind(job.state) == "killed" if job.state else False
                if killed or now - job.gone_since >= self.exit_grace:
                    job.finish(await self._lost(job, killed))

    async def _lost(self, job: _Job, killed: bool) -> str:
        if killed:
            message = (
                f"{self.kind} job {job.job_id} ended as {job.state} without an exit code"
                f"{self.explain_state(job.state)}"
            )
        else:
            message = (
                f"{self.kind} job {job.job_id} left the queue, but its exit-code file "
                f"{job.exit_file} did not appear within {self.exit_grace:g} s (the job was "
                "killed, or the shared file system is slow: raise the executor's `exit_grace`)"
            )
        try:
            extra = await self.explain_lost(job.job_id)
        except SchedulerError:
            extra = ""
        return f"{message}; {extra}" if extra else message


@attrs.frozen
class ExitFile:
    """What a job's wrapper wrote when the command ended."""

    returncode: int | None
    host: str = ""
    cpu_seconds: float | None = None
    max_rss: int | None = None

    @classmethod
    def parse(cls, text: str) -> ExitFile:
        """``"<code> <host> [<cpu seconds> <peak bytes>]"``; what is missing, ``-`` or
        unreadable is None (an earlier wrapper wrote the first two fields only)."""
        fields = [*text.split()[:4], "", "", "", ""]
        try:
            code: int | None = int(fields[0])
        except ValueError:
            code = None
        rss = _amount(fields[3])
        return cls(code, fields[1], _amount(fields[2]), None if rss is None else int(rss))


def _amount(word: str) -> float | None:
    """A measured amount: a finite number, 0 or more; anything else is None."""
    try:
        value = float(word)
    except ValueError:
        return None
    return value if 0 <= value < math.inf else None


def _read_exit_files(jobs: list[_Job]) -> dict[str, tuple[ExitFile, bool]]:
    """What the jobs that ended wrote, and whether their outputs are visible.

    Listing a directory makes an NFS client drop its cached view of it.
    """
    found: dict[str, tuple[ExitFile, bool]] = {}
    listed: dict[Path, set[str]] = {}
    for job in jobs:
        folder = job.exit_file.parent
        if folder not in listed:
            try:
                listed[folder] = set(os.listdir(folder))
            except OSError:
                listed[folder] = set()
        if job.exit_file.name not in listed[folder]:
            continue
        try:
            ended = ExitFile.parse(job.exit_file.read_text())
        except OSError:
            continue
        visible = True
        if ended.returncode == 0 and job.outputs:
            for parent in {os.path.dirname(p) for p in job.outputs}:
                try:
                    os.listdir(parent)
                except OSError:
                    pass
            visible = all(os.path.exists(p) for p in job.outputs)
        found[job.job_id] = (ended, visible)
    return found


def _append(path: Path, message: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(f"scriptflow_trio: {message}\n")
    except OSError:
        pass


def _parameters(cls: type) -> set[str]:
    """The keyword arguments ``cls`` takes, its flavour's and the shared ones."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is Executor or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    if cls.queue_setting != "queue":  # type: ignore[attr-defined]
        names.discard("queue")
    return names
