"""The executor interface: what the session hands an executor, and what it gets back.

An executor is an async context manager that owns whatever background work it
needs (a cluster poller, a worker pool) and whose ``run(spec)`` is awaited inside the
caller's cancel scope: when that scope is cancelled, ``run`` must stop the attempt
(kill the process, cancel the job) before it lets ``Cancelled`` propagate. Executors
know nothing of the store, the flow or the terminal.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self


class AttemptSpec(NamedTuple):
    """Everything an executor needs to run one attempt of one task.

    A named tuple, as :class:`Outcome` is: one of each is made for every attempt, and
    as frozen attrs classes (whose ``__init__`` sets each field through
    ``object.__setattr__``) the two cost 29,000 instructions an attempt against 9,000,
    a tenth of a task in W5. ``spec._replace(field=...)`` makes a changed copy.
    """

    name: str
    key: str
    attempt: int
    cmd: str | tuple[str, ...]  # a str goes to the shell
    cwd: str
    env: dict[str, str] | None  # added to the engine's environment
    log_path: Path
    run_id: str = ""  # the session's run, for naming and tagging jobs
    state_dir: Path | None = None  # the session's state directory (job scripts go there)
    outputs: tuple[str, ...] = ()  # absolute paths of the literal outputs
    cores: int = 1
    mem: str | int | float | None = None
    timeout: float | None = None
    # Called with each line of output when the task is not quiet; None when it is.
    on_output: Callable[[str], None] | None = None
    # Called by the executor with the job id as soon as it has one (a cluster job
    # submitted), so that the store knows it while the job runs.
    on_submitted: Callable[[str], None] | None = None
    # Called by an executor with a ``lookahead`` with the time (``time.time()``) the
    # attempt started: until then it may wait in the executor's own queue, and its
    # timeout starts only then. Called again if the executor starts it anew, the
    # timeout then runs from the last call (the start is announced once).
    on_started: Callable[[float], None] | None = None
    # A job id this executor gave an attempt of the same task in an engine that died:
    # wait for that job instead of submitting a new one (see ``supports_reattach``).
    reattach: str = ""

    @property
    def shell(self) -> bool:
        return isinstance(self.cmd, str)


class Outcome(NamedTuple):
    """How an attempt ended, as far as the executor can tell.

    ``error`` is set when the command could not be started at all (not found, not
    executable): the session does not retry that. ``lost`` says why an attempt ended
    with no exit code (its worker died, its job vanished): that failure is retried.
    In both cases ``returncode`` is None. ``cpu_seconds`` (user + system) and
    ``max_rss`` (bytes, the largest process of the tree) are what the attempt used, when
    the executor can tell.
    """

    returncode: int | None
    started: float
    ended: float
    host: str = ""
    job_id: str = ""
    error: str = ""
    lost: str = ""
    cpu_seconds: float | None = None
    max_rss: int | None = None
    # False when the attempt printed nothing and the executor made no log file for it
    printed: bool = True


class Executor(abc.ABC):
    """One place attempts can run: local processes, a cluster, a Dask cluster."""

    #: the name tasks use to pick this executor (``Task(executor="local")``)
    name: str = "executor"
    #: whether ``run`` can wait for a job of a previous engine (``AttemptSpec.reattach``)
    supports_reattach: bool = False
    #: units of work beyond ``capacity`` that the executor takes and queues itself, to
    #: start the next attempt the moment room frees; such an executor calls
    #: ``spec.on_started`` when an attempt starts (read once, when a session opens)
    lookahead: int = 0

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many units (cores, or jobs for a cluster) may be busy at once."""

    def cost(self, spec_cores: int) -> int:
        """How many units of ``capacity`` an attempt asking ``spec_cores`` occupies."""
        return spec_cores

    @abc.abstractmethod
    async def run(self, spec: AttemptSpec) -> Outcome:
        """Run one attempt to its end; on cancellation, stop it before returning."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
