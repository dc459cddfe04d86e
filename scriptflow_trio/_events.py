"""The event stream that the terminal view, the store and notifications listen to.

The session calls ``listener.on_event(event)`` synchronously for every event, in
order. A listener must return quickly and never block: it buffers and does its slow
work (drawing, writing, sending) from a task of its own. Events are named tuples:
a run makes a few per task, and each attrs class cost more to create, and to build
at import, than the rest of its module.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import NamedTuple, Protocol


class Status(enum.Enum):
    """How a task ended in this run."""

    __hash__ = object.__hash__  # members are singletons: Enum's own runs Python

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WOULD_RUN = "would-run"  # dry run


class RunStarted(NamedTuple):
    run_id: str
    flow: str
    time: float
    dry_run: bool = False


class TasksSubmitted(NamedTuple):
    """``count`` new tasks entered the session (one event per ``await`` or ``bag``)."""

    count: int  # type: ignore[assignment]  # the field shadows tuple.count, as it should
    time: float


class TaskSkipped(NamedTuple):
    name: str
    key: str
    reason: str
    time: float


class TaskWouldRun(NamedTuple):
    """Dry run: the task would run, for ``reason``."""

    name: str
    key: str
    reason: str
    command: str
    time: float


class AttemptStarted(NamedTuple):
    name: str
    key: str
    attempt: int
    reason: str
    command: str
    log_path: Path
    executor: str
    time: float


class AttemptFinished(NamedTuple):
    name: str
    key: str
    attempt: int
    ok: bool
    returncode: int | None
    reason: str  # why it failed; "" on success
    time: float
    duration: float
    will_retry: bool = False
    printed: bool = True  # False: it printed nothing, and no log file was made


class TaskFinished(NamedTuple):
    name: str
    key: str
    status: Status
    attempts: int
    duration: float  # wall time of all attempts, 0 for skipped tasks
    time: float
    error: str = ""


class OutputLine(NamedTuple):
    """A line a non-quiet task printed."""

    name: str
    line: str


class RunFinished(NamedTuple):
    run_id: str
    status: str  # "succeeded", "failed", "cancelled"
    time: float
    duration: float


Event = (
    RunStarted
    | TasksSubmitted
    | TaskSkipped
    | TaskWouldRun
    | AttemptStarted
    | AttemptFinished
    | TaskFinished
    | OutputLine
    | RunFinished
)


class Listener(Protocol):
    def on_event(self, event: Event) -> None:
        """Receive one event; must not block."""
