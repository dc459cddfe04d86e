"""The embedded store: SQLite under the state directory, written by a process of its own.

Every record is serialized into a JSON column (by this module's own cattrs converter,
or for the hot records by ``_storewrite``), beside the few columns that queries need.
The database runs in WAL mode with ``synchronous=NORMAL``: a commit survives ``kill
-9`` of the engine at any moment (SQLite's journal makes each commit atomic), and many
commits do not mean many fsyncs. Writes go through :class:`StoreWriter`, which hands
whatever piled up to the writer process (``_storewrite.py``) in one batch; the engine
reads the store through its own connection.

An attempt must be recorded as running before its process starts, yet waiting for a
commit there would add a round trip to every task. So the start is appended to a
journal file first (one ``write`` call, which like a commit survives the engine's
death), and the batch follows. A clean close empties the journal; the next session
turns what a dead engine left in it into interrupted attempts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs
import trio

from . import _storewrite
from ._errors import StoreError
from ._jsontext import dumps, quote
from ._storewrite import ATTEMPT, END, OUTCOME, RUN, START
from .executors._spawner import frame, frames, send_now

if TYPE_CHECKING:
    import cattrs

    from ._storewrite import Rows
from ._records import (
    AttemptRecord,
    AttemptStatus,
    Fingerprint,
    RunRecord,
    RunStatus,
    TaskOutcome,
)

# 2: run_tasks.after (the task graph's edges); tasks point at their attempt row
SCHEMA_VERSION = 2
STORE_FILE = "store.sqlite"
JOURNAL_FILE = "journal"


@functools.cache
def _converter() -> cattrs.Converter:
    """The store's converter, made (and cattrs imported) when a record is first read.

    A run writes its hot records itself (:func:`_end_json`, :func:`_run_json`): cattrs'
    import would be a twentieth of its start-up. Defaults are left out of the JSON: a
    third less to encode and to keep, per attempt.
    """
    import cattrs

    return cattrs.Converter(omit_if_default=True)


_TASKS = """CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL);"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT, flow TEXT NOT NULL, started REAL NOT NULL,
    status TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, key, attempt));
CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (key);
CREATE INDEX IF NOT EXISTS attempts_by_name ON attempts (name);
-- the latest attempt of every task key
{_TASKS}
-- which task made each output file last, and with which command
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, key TEXT NOT NULL, command TEXT NOT NULL);
-- how each task ended in each run, skipped ones included
CREATE TABLE IF NOT EXISTS run_tasks (
    run_id TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, duration REAL NOT NULL, ended REAL NOT NULL,
    after TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, key));
"""


def _dump(record: Any) -> str:
    return dumps(_converter().unstructure(record))


def _load(text: str, cls: type) -> Any:
    converter = _converter()
    import cattrs

    try:
        return converter.structure(json.loads(text), cls)
    except (ValueError, cattrs.BaseValidationError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else exc
        )
        raise StoreError(f"a stored {cls.__name__} cannot be read: {detail}") from None


class AttemptStart(NamedTuple):
    """An attempt about to start: what the journal keeps, one JSON array per line.

    A plain tuple, not an :class:`AttemptRecord`: it is made for every attempt and, for
    a fast one, written to SQLite never (the attempt's end arrives in the same batch).
    """

    run_id: str
    key: str
    name: str
    attempt: int
    command: str
    executor: str
    started: float
    log_path: str
    job_id: str = ""

    @property
    def ident(self) -> tuple[str, str, int]:
        return self.run_id, self.key, self.attempt

    def record(self, **fields: Any) -> AttemptRecord:
        """The attempt as running, or with ``fields`` (how it ended) as it ended."""
        fields.setdefault("log_path", self.log_path)
        fields.setdefault("job_id", self.job_id)
        return AttemptRecord(
            run_id=self.run_id,
            key=self.key,
            name=self.name,
            attempt=self.attempt,
            command=self.command,
            executor=self.executor,
            started=self.started,
            **fields,
        )


class OutcomeRow(NamedTuple):
    """A :class:`TaskOutcome` as its ``run_tasks`` row, written once per task."""

    run_id: str
    key: str
    name: str
    status: str
    attempts: int
    duration: float
    ended: float
    after: str  # the keys of the tasks that made its inputs, space-separated


def _run_json(run: RunRecord) -> str:
    """The JSON of ``run`` as the converter writes it (written twice per run)."""
    d: dict[str, Any] = {"run_id": run.run_id, "flow": run.flow, "started": run.started}
    if run.status is not RunStatus.RUNNING:
        d["status"] = run.status.value
    for name in ("name", "flowfile", "ended"):
        if getattr(run, name) is not None:
            d[name] = getattr(run, name)
    if run.arguments:
        d["arguments"] = dict(run.arguments)
    if run.pid:
        d["pid"] = run.pid
    if run.host:
        d["host"] = run.host
    if run.counts:
        d["counts"] = dict(run.counts)
    return dumps(d)


def _journal_text(start: AttemptStart) -> bytes:
    """``start``'s journal line: what ``dumps(start)`` writes, and a newline.

    Put together by hand, field by field, because it is written for every attempt:
    a quarter less time than the encoder's walk over the tuple.
    """
    run_id, key, name, attempt, command, executor, started, log_path, job_id = start
    return (
        f"[{quote(run_id)},{quote(key)},{quote(name)},{attempt},{quote(command)},"
        f"{quote(executor)},{started!r},{quote(log_path)},{quote(job_id)}]\n"
    ).encode()


def _journal_line(line: str) -> AttemptRecord | None:
    """The attempt a journal line records (older engines wrote whole records), if whole."""
    try:
        value = json.loads(line)
        if isinstance(value, list):
            return AttemptStart(*value).record()
    except (ValueError, TypeError):
        return None  # a line cut short by the engine's death
    try:
        record: AttemptRecord = _load(line, AttemptRecord)
    except StoreError:
        return None
    return record


# a file's fingerprint as the writer takes it: (path, size, mtime_ns, digest)
FingerprintRow = tuple[str, int, int, str | None]

# an attempt that ended, as the writer takes it (see ``_storewrite.END``): made for
# every attempt straight from what the session has, without an ``AttemptRecord`` or
# a tuple of named fields (building and converting those cost a third of what the
# store spent on the event loop per task)
EndRecord = tuple[Any, ...]


Record = RunRecord | AttemptRecord | AttemptStart | EndRecord | TaskOutcome | OutcomeRow


_STATUS_TEXT = {s: s.value for s in AttemptStatus}  # an enum's .value is a slow property


def attempt_end(
    start: AttemptStart,
    status: AttemptStatus,
    ended: float | None,
    log_path: str,
    job_id: str = "",
    host: str = "",
    returncode: int | None = None,
    reason: str = "",
    inputs: Sequence[FingerprintRow] = (),
    outputs: Sequence[FingerprintRow] = (),
    result: Any = None,
    cpu_seconds: float | None = None,
    max_rss: int | None = None,
) -> EndRecord:
    """The record of an attempt that ended.

    The store keeps it as the ``AttemptRecord`` of the same fields (its JSON, which the
    writer makes from this).
    """
    return (
        END,
        tuple(start),
        _STATUS_TEXT[status],
        ended,
        log_path,
        job_id,
        host,
        returncode,
        reason,
        inputs,
        outputs,
        result,
        cpu_seconds,
        max_rss,
        None,  # the task's outcome, when this was its last attempt: see with_outcome
    )


def with_outcome(end: EndRecord, outcome: tuple[Any, ...]) -> EndRecord:
    """``end``, the last attempt of its task, carrying the task's ``run_tasks`` row
    (an :class:`OutcomeRow`, or the plain tuple of its fields)."""
    return (*end[:14], outcome if type(outcome) is tuple else tuple(outcome))


def _plain(record: Record) -> tuple[Any, ...]:
    """``record`` as the writer process takes it: plain tuples (see ``_storewrite``).

    Made on the event loop for every record: the frequent ones first, by exact type.
    """
    kind = type(record)
    if kind is tuple:  # made plain already: an attempt's end
        return record  # type: ignore[return-value]
    if kind is OutcomeRow or kind is AttemptStart:
        return (OUTCOME if kind is OutcomeRow else START, tuple(record))  # type: ignore[arg-type]
    if isinstance(record, AttemptRecord):
        a = record
        made = a.status is AttemptStatus.SUCCEEDED
        row = (a.run_id, a.key, a.attempt, a.name, a.status.value, a.started, _dump(a))
        return (ATTEMPT, row, [(fp.path, a.key, a.command) for fp in a.outputs] if made else [])
    if isinstance(record, TaskOutcome):
        o = record
        ended = (o.run_id, o.key, o.name, o.status, o.attempts, o.duration, o.ended)
        return (OUTCOME, (*ended, " ".join(o.after)))
    if isinstance(record, RunRecord):
        r = record
        return (RUN, (r.run_id, r.name, r.flow, r.started, r.status.value, _run_json(r)))
    raise TypeError(f"not a record of the store: {record!r}")


class TaskState(NamedTuple):
    """What the store knows of a task key when a session opens: its latest attempt.

    The attempt's full record is read from the store only when asked for: deciding
    10,000 tasks needs their status, and only a few ever need more. A named tuple:
    a session opening on 10,000 tasks makes 10,000 of them.
    """

    status: AttemptStatus
    run_id: str
    key: str
    attempt: int
    store: Store

    def record(self) -> AttemptRecord:
        rows = self.store._query(
            "SELECT record FROM attempts WHERE run_id = ? AND key = ? AND attempt = ?",
            (self.run_id, self.key, self.attempt),
        )
        if not rows:
            raise StoreError(
                f"the store {self.store.path} lost attempt {self.attempt} of {self.key}"
            )
        record: AttemptRecord = _load(rows[0][0], AttemptRecord)
        return record


class History(NamedTuple):
    """The store's knowledge that the up-to-date decision needs, loaded in one go."""

    tasks: dict[str, TaskState]
    files: dict[str, tuple[str, str]]  # path -> (key, command)


class Store:
    """Synchronous access to the SQLite store; call it from a worker thread."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating if needed) the store in ``state_dir``; check its schema."""
        path = state_dir / STORE_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) < SCHEMA_VERSION:
                _migrate(db, int(row[0]))
            elif int(row[0]) > SCHEMA_VERSION:
                db.close()
                raise StoreError(
                    f"the store {path} was written by a newer scriptflow_trio (schema "
                    f"{row[0]}, this one knows {SCHEMA_VERSION}): upgrade scriptflow_trio, "
                    "or use another --state-dir"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the store {path} is damaged or not a store ({exc}): move it away and the "
                "next run starts a fresh one (every task will be judged on timestamps)"
            ) from None
        return cls(path, db)

    @classmethod
    def open_read_only(cls, state_dir: Path) -> Store:
        """Open a store this user may not write (a colleague's, a read-only mount).

        SQLite reads a WAL store read-only only while its ``-shm`` file exists (an
        engine has it open) or can be made; otherwise nobody is writing it, and it is
        read as immutable. Its schema must be this version's: it cannot be upgraded.
        """
        path = state_dir / STORE_FILE
        uri = path.absolute().as_uri()
        version = ""
        try:
            for mode in ("mode=ro", "immutable=1"):
                db = sqlite3.connect(
                    f"{uri}?{mode}", uri=True, check_same_thread=False, isolation_level=None
                )
                try:
                    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                    version = row[0] if row else ""
                    break
                except sqlite3.OperationalError:
                    db.close()
                    if mode != "mode=ro":
                        raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the store {path} cannot be read ({exc}); it may be damaged or not a store"
            ) from None
        if version != str(SCHEMA_VERSION):
            db.close()
            raise StoreError(
                f"the store {path} has schema {version or 'none'}, and this scriptflow_trio "
                f"reads schema {SCHEMA_VERSION}; it cannot be upgraded without write access "
                "(run a flow there as a user who may write it, or use a matching version)"
            )
        return cls(path, db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def close_after(self, plain: Sequence[tuple[Any, ...]]) -> None:
        """Write plain records (``_plain``'s) in one transaction, if any, then close.

        A failed write raises ``sqlite3.Error``, for the writer to report; the
        connection is closed regardless.
        """
        with self._lock:
            try:
                if plain:
                    _storewrite.write(self._db, _storewrite.rows(plain))
            finally:
                self._db.close()

    # -- writing (a session's records go through StoreWriter) --------------------------

    def apply(self, batch: Sequence[Record]) -> None:
        """Write a batch of records in one transaction (:meth:`rows`, then :meth:`write`)."""
        self.write(self.rows(batch))

    def rows(self, batch: Sequence[Record]) -> Rows:
        """The rows of a batch of records, table by table (see ``_storewrite.rows``)."""
        return _storewrite.rows([_plain(r) for r in batch])

    def write(self, rows: Rows) -> None:
        """Write the rows of :meth:`rows` in one transaction, from this process."""
        with self._lock:
            try:
                _storewrite.write(self._db, rows)
            except sqlite3.Error as exc:
                raise StoreError(_cannot_write(self.path, str(exc))) from None

    def recover(self) -> None:
        """Settle what an engine that died left behind; call with the lock held.

        Its runs still marked running are marked died, and every attempt its journal
        says had started, but that no batch recorded as ended, is recorded as running:
        interrupted, so its outputs are never trusted.
        """
        journal = self.path.parent / JOURNAL_FILE
        started: list[AttemptRecord] = []
        if journal.exists():
            lines = journal.read_text(errors="replace").splitlines()
            started = [r for r in map(_journal_line, lines) if r is not None]
        interrupted = [r for r in started if not self._ended(r)]
        running = self._query("SELECT record FROM runs WHERE status = 'running'")
        died = [attrs.evolve(_load(r[0], RunRecord), status=RunStatus.DIED) for r in running]
        if interrupted or died:
            self.apply([*died, *interrupted])
        journal.write_bytes(b"")

    def _ended(self, record: AttemptRecord) -> bool:
        rows = self._query(
            "SELECT status FROM attempts WHERE run_id = ? AND key = ? AND attempt = ?",
            (record.run_id, record.key, record.attempt),
        )
        return bool(rows) and rows[0][0] != AttemptStatus.RUNNING.value

    # -- reading ----------------------------------------------------------------------

    def load_history(self) -> History:
        with self._lock:
            status_of = {s.value: s for s in AttemptStatus}
            tasks = {
                key: TaskState(status_of[status], run_id, key, attempt, self)
                for key, status, run_id, attempt in self._db.execute(
                    "SELECT key, status, run_id, attempt FROM tasks"
                )
            }
            files = {
                path: (key, command)
                for path, key, command in self._db.execute("SELECT path, key, command FROM files")
            }
        return History(tasks, files)

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        sql = "SELECT record FROM runs ORDER BY started DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_load(r[0], RunRecord) for r in self._query(sql)]

    def find_run(self, ref: str) -> RunRecord | None:
        """A run by id, by id prefix, by name (the latest of that name), or 'last'."""
        if ref == "last":
            rows = self._query("SELECT record FROM runs ORDER BY started DESC LIMIT 1")
        else:
            rows = self._query(
                "SELECT record FROM runs WHERE run_id = ? OR name = ? OR run_id LIKE ? "
                "ORDER BY (run_id = ?) DESC, started DESC LIMIT 1",
                (ref, ref, ref + "%", ref),
            )
        return _load(rows[0][0], RunRecord) if rows else None

    def outcomes(self, run_id: str) -> list[TaskOutcome]:
        """How each task of the run ended, in the order they ended, with their edges."""
        return [
            TaskOutcome(run_id, key, name, status, attempts, duration, ended, tuple(after.split()))
            for run_id, key, name, status, attempts, duration, ended, after in self._query(
                "SELECT run_id, key, name, status, attempts, duration, ended, after "
                "FROM run_tasks WHERE run_id = ? ORDER BY ended",
                (run_id,),
            )
        ]

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        return [
            _load(r[0], AttemptRecord)
            for r in self._query(
                "SELECT record FROM attempts WHERE run_id = ? ORDER BY started", (run_id,)
            )
        ]

    def last_attempt(self, ref: str) -> AttemptRecord | None:
        """The latest attempt of a task, by name or key prefix."""
        # a key prefix as a range, so that both sides of the OR use an index
        rows = self._query(
            "SELECT record FROM attempts WHERE name = ? OR (key >= ? AND key < ?) "
            "ORDER BY started DESC, attempt DESC LIMIT 1",
            (ref, ref, ref + "\U0010ffff"),
        )
        return _load(rows[0][0], AttemptRecord) if rows else None

    def maker(self, path: str) -> AttemptRecord | None:
        """The successful attempt that last made ``path`` (relative to the project)."""
        rows = self._query(
            "SELECT t.record FROM files f JOIN attempts t ON t.key = f.key "
            "WHERE f.path = ? AND t.status = 'succeeded' ORDER BY t.started DESC LIMIT 1",
            (path,),
        )
        return _load(rows[0][0], AttemptRecord) if rows else None

    def files_made_by(self, keys: Iterable[str]) -> list[str]:
        wanted = set(keys)
        return sorted(p for p, k in self._query("SELECT path, key FROM files") if k in wanted)

    def keys_of_flow(self, flow: str) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT rt.key FROM run_tasks rt JOIN runs r ON r.run_id = rt.run_id "
            "WHERE r.flow = ?",
            (flow,),
        )
        return [r[0] for r in rows]

    def forget_files(self, paths: Iterable[str]) -> None:
        with self._lock:
            try:
                self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"the store {self.path} cannot be written: {exc}") from None

    def integrity(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"the store {self.path} cannot be read: {exc}") from None


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a store written by an older scriptflow_trio up to this schema."""
    db.execute("BEGIN")
    if version < 2:
        db.execute("ALTER TABLE run_tasks ADD COLUMN after TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE tasks RENAME TO tasks_v1")
        db.execute(_TASKS)
        db.execute(
            "INSERT INTO tasks SELECT key, name, status, json_extract(record, '$.run_id'), "
            "json_extract(record, '$.attempt') FROM tasks_v1"
        )
        db.execute("DROP TABLE tasks_v1")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
    db.execute("COMMIT")


def open_existing(state_dir: Path, *, write: bool = False) -> Store:
    """Open the store for a command; a clear error when there is none.

    A store this user may not write is opened read-only, which is all that a command
    that looks needs (``write``: a command that changes it says so instead).
    """
    path = state_dir / STORE_FILE
    if not path.exists():
        raise StoreError(
            f"there is no store in {state_dir}: run a flow here first "
            "(or point --state-dir at the right directory)"
        )
    if os.access(path, os.W_OK) and os.access(state_dir, os.W_OK):
        return Store.open(state_dir)
    if write:
        raise StoreError(
            f"the store {path} cannot be changed by this user (no write access to it or to "
            f"{state_dir}); run this as its owner"
        )
    return Store.open_read_only(state_dir)


def _cannot_write(path: Path, why: str) -> str:
    return (
        f"the store {path} cannot be written ({why}): free the disk or fix what blocks it, "
        "and run again; the tasks it could not record will run again (its journal keeps "
        "them as interrupted)"
    )


# run as a module, not a script, so that its bytecode is cached
# it leaves with os._exit once it has said it is done: nothing is left to flush, and the
# engine waits for it to be gone (tearing the interpreter down took a few milliseconds)
_LAUNCH = (
    "import os, sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; import _storewrite; "
    "os._exit(_storewrite.main(sys.argv))"
)


class StoreWriter:
    """Hands records to the writer process in batches, while the flow goes on.

    ``write`` queues a record (``ended`` an attempt's end); ``started`` appends an
    attempt's start to the journal at once, so that it is on record before the
    attempt's process starts, and hands it to the writer only if the attempt still runs
    at the next hand-over (an ended attempt's record holds its start). Run :meth:`run`
    in a nursery, and ``await close()`` at the end (also when :meth:`run` never ran).

    The event loop only turns records into plain tuples and hands them over, marshal'd
    (C code): every ``interval`` from :meth:`run`, and at once when ``batch`` records
    are waiting, so that a long synchronous stretch of the flow (a bag of 10,000 tasks,
    decided in one go) is written while it goes on; what the socket cannot take at
    once is sent as soon as it can. Batches stay small (250 records: 250 tasks, a few
    milliseconds of the writer's work) because the last one is waited for at the
    close. The writer (``_storewrite.py``)
    turns them into rows and commits them on the other core. It holds ``hold`` (the
    state directory's lock) until it ends, so that no session opens the store while
    it still writes what a dead engine handed over. Where no process can be started,
    the same writer runs in a thread.

    The writer starts with the first hand-over, one ``interval`` into the session or
    at the first full batch: a session that ends sooner with fewer records (a few
    tasks) writes them itself at the close, and does not pay for a process start
    (about 10 ms of CPU).
    """

    def __init__(self, path: Path, *, hold: int | None = None, batch: int = 250) -> None:
        self.path = path  # the store's file: the writer connects when the first batch comes
        self._batch = batch
        self._pending: list[Record] = []
        # starts journaled but not handed over: most attempts end before the next
        # hand-over, and their end, which holds the start, is all the writer needs then
        self._starts: dict[tuple[str, int], AttemptStart] = {}
        self._wake = trio.Event()
        self._woken = False  # _wake is set (one call less per record)
        self._outbox = bytearray()  # what the socket would not take at once
        self._sendable = trio.Event()  # the outbox has something: _send() sends it
        self._inbox = bytearray()
        self._failed: StoreError | None = None
        self._ended = False  # the writer's end of the socket is closed
        self._closed = False
        self._scope: trio.CancelScope | None = None  # run()'s, while it runs
        self._nursery: trio.Nursery | None = None  # run()'s too: the socket's tasks
        self._stopped = trio.Event()  # run() is over
        self._journal = os.open(
            path.parent / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self._journaled = False  # a start of this session is in the journal
        self._hold = hold
        self._sock: socket.socket | None = None  # and the writer, once started
        self._writer: int | threading.Thread = 0

    def ended(self, end: EndRecord) -> None:
        """Queue an attempt's end (from :func:`attempt_end`): its start goes no further."""
        if self._starts:
            start = end[1]
            self._starts.pop((start[1], start[3]), None)
        self.write(end)

    def write(self, record: Record) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._batch:
            self._hand_over()
        elif not self._woken:
            self._nudge()

    def _nudge(self) -> None:
        """Wake run(): to hand over, to send what waits, or to raise a failure."""
        if not self._woken:
            self._woken = True
            self._wake.set()

    def started(self, start: AttemptStart) -> None:
        """Record an attempt as running, durably, before its process starts."""
        os.write(self._journal, _journal_text(start))
        self._journaled = True
        self._starts[start.key, start.attempt] = start  # a later one (its job id) replaces it
        self._nudge()

    async def run(self, interval: float = 0.2) -> None:
        """Hand over what is queued whenever there is something, at most every ``interval``.

        The journal already has every start on record, so a commit may wait: fewer,
        larger transactions cost the disk far less than one per task. A write that
        fails in the writer is raised here, as soon as the writer says so.
        """
        if self._closed:  # close() came first, and does it all
            return
        try:
            async with trio.open_nursery() as nursery:
                self._scope, self._nursery = nursery.cancel_scope, nursery
                if self._sock is not None:  # a batch came first
                    self._serve()
                await trio.sleep(interval)  # a session that ends sooner needs no writer
                while True:
                    await self._wake.wait()
                    self._wake, self._woken = trio.Event(), False
                    self._hand_over()
                    if self._failed is not None:
                        raise self._failed
                    await trio.sleep(interval)
        finally:
            self._nursery = None
            self._stopped.set()

    def _serve(self) -> None:
        """Start listening to the writer, and sending to it, once it has started."""
        assert self._nursery is not None
        self._nursery.start_soon(self._listen)
        self._nursery.start_soon(self._send)

    def _hand_over(self) -> None:
        if (self._pending or self._starts) and not self._ended:
            if self._sock is None:
                try:
                    self._sock, self._writer = _start_writer(self.path, self._hold)
                except OSError as exc:  # no socket pair: out of descriptors
                    self._lost(f"the store writer cannot start ({exc})")
                    return
                if self._nursery is not None:
                    self._serve()
            batch = self._take()
            try:  # what the socket does not take now, _send() or close() sends
                if send_now(self._sock, self._outbox, frame([_plain(r) for r in batch])):
                    self._sendable.set()
            except OSError as exc:
                self._lost(f"the store writer cannot be reached ({exc})")

    def _take(self) -> list[Record]:
        """What waits to be handed over, in order; then the starts of attempts still running.

        A start comes after every record queued before it, as it happened: a task's
        failed attempt, then the start of its next one.
        """
        batch: list[Record] = [*self._pending, *self._starts.values()]
        self._starts, self._pending = {}, []
        return batch

    async def _send(self) -> None:
        """Send what waits in the outbox as soon as the writer can take it.

        Not at the next hand-over: the socket holds far less than a batch, and a writer
        left waiting meanwhile falls behind, to be waited for at the close.
        """
        while not self._ended:
            await self._sendable.wait()
            self._sendable = trio.Event()
            await self._send_all()
        if self._failed is not None:
            self._nudge()  # run() raises it

    async def _send_all(self) -> None:
        sock = self._sock
        while self._outbox and not self._ended and sock is not None:
            await trio.lowlevel.wait_writable(sock)
            try:
                sent = sock.send(self._outbox)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._lost(f"the store writer cannot be reached ({exc})")
                return
            del self._outbox[:sent]

    async def _listen(self) -> None:
        while not self._ended:
            await self._receive()
        if self._failed is not None:
            self._nudge()  # run() raises it

    async def _receive(self) -> None:
        """Read what the writer says: an error as soon as a write fails, then its end."""
        sock = self._sock
        assert sock is not None  # listened to once the writer has started
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("the store writer ended before it had written everything")
            return
        self._inbox += data
        for message in frames(self._inbox):
            if message[1]:  # ("error", why) or ("closed", why): a write failed
                self._fail(message[1])
                self._nudge()
            if message[0] == "closed":
                self._ended = True

    def _fail(self, why: str) -> None:
        if self._failed is None:
            self._failed = StoreError(_cannot_write(self.path, why))

    def _lost(self, why: str) -> None:
        self._ended = True
        self._fail(why)

    async def close(self, store: Store | None = None) -> None:
        """Hand over everything queued, wait for the writer to end, then empty the journal.

        Shielded: runs at shutdown. If a write failed, the journal stays: the next
        session recovers from it (as it does when this session never started anything:
        what the journal holds then is not this session's). A short session, which
        started no writer, writes its records itself: through ``store`` when given (the
        session's own connection, closed in the same trip to a thread: a new connection
        and a second close, the last one checkpointing on the event loop, cost 0.5 ms).
        """
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            if self._scope is not None:  # run() and its listener: the rest happens here
                self._scope.cancel()
                await self._stopped.wait()
            if self._sock is None:  # no writer started: a short session writes itself
                if self._failed is None:
                    await self._write_here(store)
            else:
                try:
                    self._hand_over()
                    await self._send_all()
                    if not self._ended:
                        try:
                            self._sock.shutdown(socket.SHUT_WR)  # the writer's end of input
                        except OSError:
                            pass
                    while not self._ended:
                        await self._receive()
                finally:
                    self._sock.close()
                    await self._reap()
            if self._failed is None and self._journaled:  # every start is on record
                os.ftruncate(self._journal, 0)
            os.close(self._journal)
            if self._failed is not None:
                raise self._failed

    async def _write_here(self, store: Store | None) -> None:
        plain = [_plain(r) for r in self._take()]
        try:
            if store is not None:  # closed there too, with or without records
                await trio.to_thread.run_sync(store.close_after, plain)
            elif plain:
                await trio.to_thread.run_sync(_write_once, self.path, plain)
        except sqlite3.Error as exc:
            self._fail(str(exc))

    async def _reap(self) -> None:
        writer = self._writer
        if isinstance(writer, threading.Thread):
            await trio.to_thread.run_sync(writer.join)
        else:  # its socket is closed: it is ending, if not gone
            await trio.to_thread.run_sync(os.waitpid, writer, 0)


def _write_once(path: Path, plain: list[tuple[Any, ...]]) -> None:
    """Write plain records in one transaction, on a connection of their own."""
    db = _storewrite.connect(str(path))
    try:
        _storewrite.write(db, _storewrite.rows(plain))
    finally:
        db.close()


def _start_writer(path: Path, hold: int | None) -> tuple[socket.socket, int | threading.Thread]:
    """The writer process, fed by a socket; a thread running the same loop where that fails.

    Its descriptors go above every descriptor the file actions read, so that no action
    overwrites what a later one copies. It starts in a session of its own: no signal
    from the terminal reaches it, and it ends when the engine closes its socket or dies.
    """
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mine.setblocking(False)
    try:
        if sys.executable and hasattr(os, "posix_spawn"):
            sources = [theirs.fileno()] + ([hold] if hold is not None else [])
            first = max(sources) + 1
            here = os.path.dirname(os.path.abspath(__file__))
            try:
                pid = os.posix_spawn(
                    sys.executable,
                    [sys.executable, "-I", "-S", "-c", _LAUNCH, here]
                    + [os.path.join(here, "executors"), str(first), str(path)],
                    os.environ,
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    ]
                    + [(os.POSIX_SPAWN_DUP2, fd, first + i) for i, fd in enumerate(sources)],
                    setsid=True,
                )
            except (OSError, NotImplementedError):
                pass
            else:
                theirs.close()
                return mine, pid
        thread = threading.Thread(
            target=_serve_in_thread, args=(theirs, str(path)), name="scriptflow store writer"
        )
        thread.daemon = True
        thread.start()
    except BaseException:
        mine.close()
        theirs.close()
        raise
    return mine, thread


def _serve_in_thread(sock: socket.socket, path: str) -> None:
    try:
        _storewrite.main(["", str(sock.fileno()), path])
    finally:
        sock.close()


def fingerprint(root: str, path: str, *, digest: bool = False) -> Fingerprint | None:
    """The fingerprint of ``path`` now (None if it does not exist); hashing blocks."""
    row = fingerprint_row(root, path, digest=digest)
    return None if row is None else Fingerprint(*row)


def fingerprint_row(
    root: str, path: str, *, digest: bool = False, known: FingerprintRow | None = None
) -> FingerprintRow | None:
    """:func:`fingerprint` as the writer takes it, for an attempt's record.

    ``known``, an earlier row of the same path with a digest, is the answer while the
    file's size and time are still its own: the file is not hashed again.
    """
    full = path if os.path.isabs(path) else os.path.join(root, path)
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if (
        known is not None
        and digest
        and known[3] is not None
        and known[1] == st.st_size
        and known[2] == st.st_mtime_ns
    ):
        return known
    hashed = hash_file(full) if digest and not os.path.isdir(full) else None
    return path, st.st_size, st.st_mtime_ns, hashed


def hash_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
