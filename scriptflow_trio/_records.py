"""What the store keeps: runs, attempts, and file fingerprints (frozen attrs records).

These are the engine's business model; how they are laid out in SQLite is the store's
affair (``_store.py`` owns the one cattrs converter that maps them).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class RunStatus(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: Enum's own runs Python

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIED = "died"  # still "running" when a later session opened the store


class AttemptStatus(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: Enum's own runs Python

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.frozen
class Fingerprint:
    """What a file was: size and modification time, and a content digest when hashed."""

    path: str  # relative to the project directory
    size: int
    mtime_ns: int
    digest: str | None = None


@attrs.frozen
class RunRecord:
    run_id: str
    flow: str
    started: float
    status: RunStatus = RunStatus.RUNNING
    name: str | None = None
    arguments: dict[str, str] = attrs.field(factory=dict)
    flowfile: str | None = None
    ended: float | None = None
    pid: int = 0
    host: str = ""
    counts: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class AttemptRecord:
    """One attempt of one task, from the moment it is about to start."""

    run_id: str
    key: str
    name: str
    attempt: int
    command: str
    executor: str
    started: float
    status: AttemptStatus = AttemptStatus.RUNNING
    log_path: str = ""
    job_id: str = ""
    host: str = ""
    ended: float | None = None
    returncode: int | None = None
    reason: str = ""
    inputs: tuple[Fingerprint, ...] = ()
    outputs: tuple[Fingerprint, ...] = ()
    result: Any = None
    # what the process tree used, when the executor can tell: CPU seconds (user +
    # system) and the peak resident memory of its largest process, in bytes
    cpu_seconds: float | None = None
    max_rss: int | None = None


@attrs.frozen
class TaskOutcome:
    """How a task ended in one run (skipped tasks included), for ``show`` and reports.

    ``after`` holds the keys of the tasks of the same run that made its inputs: the
    edges of the run's task graph.
    """

    run_id: str
    key: str
    name: str
    status: str
    attempts: int
    duration: float
    ended: float
    after: tuple[str, ...] = ()
