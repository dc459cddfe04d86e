"""The embedded store: SQLite under the state directory, written in batches off the loop.

Every record is serialized by this module's own cattrs converter into a JSON column,
beside the few columns that queries need. The database runs in WAL mode with
``synchronous=NORMAL``: a commit survives ``kill -9`` of the engine at any moment
(SQLite's journal makes each commit atomic), and many commits do not mean many fsyncs.
Writes go through :class:`StoreWriter`, which commits whatever piled up since its last
commit in one transaction, in a thread of its own.

An attempt must be recorded as running before its process starts, yet waiting for a
commit there would add a thread round trip to every task. So the start is appended to
a journal file first (one ``write`` call, which like a commit survives the engine's
death), and the batch follows. A clean close empties the journal; the next session
turns what a dead engine left in it into interrupted attempts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import attrs
import trio

from ._errors import StoreError
from ._jsontext import dumps

if TYPE_CHECKING:
    import cattrs
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


class AttemptEnd(NamedTuple):
    """An attempt that ended: its start as the journal has it, then how it ended.

    Made for every attempt and turned straight into its row and its JSON (the same
    JSON as ``AttemptRecord``'s, defaults left out): building the attrs record and
    unstructuring it cost two thirds of what the store spent per task.
    """

    start: AttemptStart
    status: AttemptStatus
    ended: float | None
    log_path: str
    job_id: str = ""
    host: str = ""
    returncode: int | None = None
    reason: str = ""
    inputs: tuple[Fingerprint, ...] = ()
    outputs: tuple[Fingerprint, ...] = ()
    result: Any = None
    cpu_seconds: float | None = None
    max_rss: int | None = None

    def record(self) -> AttemptRecord:
        return self.start.record(
            status=self.status,
            ended=self.ended,
            log_path=self.log_path,
            job_id=self.job_id,
            host=self.host,
            returncode=self.returncode,
            reason=self.reason,
            inputs=self.inputs,
            outputs=self.outputs,
            result=self.result,
            cpu_seconds=self.cpu_seconds,
            max_rss=self.max_rss,
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


def _fingerprints_json(fps: tuple[Fingerprint, ...]) -> list[dict[str, Any]]:
    out = []
    for fp in fps:
        d: dict[str, Any] = {"path": fp.path, "size": fp.size, "mtime_ns": fp.mtime_ns}
        if fp.digest is not None:
            d["digest"] = fp.digest
        out.append(d)
    return out


def _end_json(end: AttemptEnd) -> str:
    """The JSON of ``end.record()`` as the converter writes it, without building it."""
    s = end.start
    d: dict[str, Any] = {
        "run_id": s.run_id,
        "key": s.key,
        "name": s.name,
        "attempt": s.attempt,
        "command": s.command,
        "executor": s.executor,
        "started": s.started,
    }
    if end.status is not AttemptStatus.RUNNING:
        d["status"] = end.status.value
    if end.log_path:
        d["log_path"] = end.log_path
    if end.job_id:
        d["job_id"] = end.job_id
    if end.host:
        d["host"] = end.host
    if end.ended is not None:
        d["ended"] = end.ended
    if end.returncode is not None:
        d["returncode"] = end.returncode
    if end.reason:
        d["reason"] = end.reason
    if end.inputs:
        d["inputs"] = _fingerprints_json(end.inputs)
    if end.outputs:
        d["outputs"] = _fingerprints_json(end.outputs)
    if end.result is not None:
        d["result"] = end.result  # what a result file held: JSON already
    if end.cpu_seconds is not None:
        d["cpu_seconds"] = end.cpu_seconds
    if end.max_rss is not None:
        d["max_rss"] = end.max_rss
    return dumps(d)


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


Record = RunRecord | AttemptRecord | AttemptStart | AttemptEnd | TaskOutcome | OutcomeRow
Rows = dict[str, list[tuple[Any, ...]]]  # table -> rows, in the order of its columns


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
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing = threading.Lock()
        self._max_rows: dict[int, int] = {}  # rows per INSERT statement, by row width

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

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._checkpointer is not None:
                self._checkpointer.close()

    def take_over_checkpoints(self) -> None:
        """Stop commits from checkpointing: :meth:`checkpoint` will, from a thread."""
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10
        )

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file (blocks on fsync: call from a thread).

        One at a time: the writer's periodic checkpoint may still run when its close
        asks for the last one, and both use the same connection.
        """
        if self._checkpointer is not None:
            with self._checkpointing:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- writing ----------------------------------------------------------------------

    def apply(self, batch: Sequence[Record]) -> None:
        """Write a batch of records in one transaction (:meth:`rows`, then :meth:`write`)."""
        self.write(self.rows(batch))

    def rows(self, batch: Sequence[Record]) -> Rows:
        """The rows of a batch of records, table by table; cheap: call it on the loop.

        An attempt recorded as running and again as ended in the same batch is written
        once, ended: the journal already had its start.
        """
        latest: dict[tuple[str, str, int], AttemptRecord | AttemptStart | AttemptEnd] = {}
        outcomes: list[tuple[Any, ...]] = []
        runs: list[tuple[Any, ...]] = []
        for record in batch:
            kind = type(record)  # the exact type first: the frequent ones are tuples
            if kind is AttemptEnd:
                end = cast(AttemptEnd, record)
                latest[end.start.ident] = end
            elif kind is OutcomeRow:
                outcomes.append(cast(OutcomeRow, record))
            elif kind is AttemptStart:
                start = cast(AttemptStart, record)
                latest[start.ident] = start
            elif isinstance(record, AttemptRecord):
                latest[record.run_id, record.key, record.attempt] = record
            elif isinstance(record, TaskOutcome):
                o = record
                outcomes.append(
                    (o.run_id, o.key, o.name, o.status, o.attempts, o.duration, o.ended)
                    + (" ".join(o.after),)
                )
            elif isinstance(record, RunRecord):
                runs.append(
                    (
                        record.run_id,
                        record.name,
                        record.flow,
                        record.started,
                        record.status.value,
                        _run_json(record),
                    )
                )
        attempt_rows: list[tuple[Any, ...]] = []
        task_rows: list[tuple[Any, ...]] = []
        file_rows: list[tuple[str, str, str]] = []
        succeeded = AttemptStatus.SUCCEEDED
        for r in latest.values():
            if type(r) is AttemptStart:
                r = AttemptEnd(r, AttemptStatus.RUNNING, None, r.log_path, r.job_id)
            if type(r) is AttemptEnd:
                s = r.start
                status = r.status.value
                attempt_rows.append(
                    (s.run_id, s.key, s.attempt, s.name, status, s.started, _end_json(r))
                )
                task_rows.append((s.key, s.name, status, s.run_id, s.attempt))
                if r.status is succeeded:
                    file_rows.extend((fp.path, s.key, s.command) for fp in r.outputs)
                continue
            a: AttemptRecord = r  # type: ignore[assignment]
            status = a.status.value
            attempt_rows.append((a.run_id, a.key, a.attempt, a.name, status, a.started, _dump(a)))
            task_rows.append((a.key, a.name, status, a.run_id, a.attempt))
            if a.status is succeeded:
                file_rows.extend((fp.path, a.key, a.command) for fp in a.outputs)
        return {
            "runs": runs,
            "attempts": attempt_rows,
            "tasks": task_rows,
            "files": file_rows,
            "run_tasks": outcomes,
        }

    def write(self, rows: Rows) -> None:
        """Write the rows of :meth:`rows` in one transaction; safe from a worker thread.

        Rows go many to a statement (``INSERT ... VALUES (...), (...), ...``): SQLite
        then runs a whole chunk with the GIL released, where ``executemany`` takes the
        GIL back for every row. From a thread, one row at a time cost the event loop
        more than writing on it; a chunk at a time leaves it nearly all of its core.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                for table, values in rows.items():
                    if values:
                        self._insert(table, values)
                db.execute("COMMIT")
            except BaseException as exc:
                db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(
                        f"the store {self.path} cannot be written ({exc}): free the disk or "
                        "fix what blocks it, and run again; the tasks it could not record "
                        "will run again (its journal keeps them as interrupted)"
                    ) from None
                raise

    def _insert(self, table: str, values: Sequence[tuple[Any, ...]]) -> None:
        """``INSERT OR REPLACE`` ``values`` into ``table``, in chunks of a few fixed sizes.

        A power of two rows per statement, up to what SQLite binds in one statement: a
        handful of statement texts, each prepared once and kept in the connection's
        statement cache.
        """
        width = len(values[0])
        most = self._max_rows.get(width)
        if most is None:
            fits = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
            most = self._max_rows[width] = 1 << max(0, min(10, fits.bit_length() - 1))
        row = f"({','.join('?' * width)})"
        done, total = 0, len(values)
        size = most
        while done < total:
            while size > total - done:
                size >>= 1
            sql = f"INSERT OR REPLACE INTO {table} VALUES {','.join([row] * size)}"
            end = done + size
            while end <= total:
                self._db.execute(sql, [v for r in values[done:end] for v in r])
                done, end = end, end + size

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


def open_existing(state_dir: Path) -> Store:
    """Open the store for reading by a command; a clear error when there is none."""
    if not (state_dir / STORE_FILE).exists():
        raise StoreError(
            f"there is no store in {state_dir}: run a flow here first "
            "(or point --state-dir at the right directory)"
        )
    return Store.open(state_dir)


class StoreWriter:
    """Commits records in batches, from a thread of its own, while the flow goes on.

    ``write`` queues a record; ``started`` also appends it to the journal at once, so
    that it is on record before the attempt's process starts. Run :meth:`run` in a
    nursery, and ``await close()`` at the end.

    The event loop only turns records into rows (:meth:`Store.rows`) and hands them
    over: every ``interval`` from :meth:`run`, and at once when ``batch`` records are
    waiting, so that a long synchronous stretch of the flow (a bag of 10,000 tasks,
    decided in one go) is written while it goes on. The thread writes them in order,
    many rows to a statement, with the GIL released. With WAL and synchronous=NORMAL
    a commit only appends to the WAL file; copying the WAL back into the database,
    with its fsyncs, is done by a second connection, in a worker thread too.
    """

    def __init__(self, store: Store, *, batch: int = 1000) -> None:
        self.store = store
        self._batch = batch
        self._pending: list[Record] = []
        self._wake = trio.Event()
        self._woken = False  # _wake is set (one call less per record)
        self._journal = os.open(
            store.path.parent / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self.batches = 0
        self._rows: queue.SimpleQueue[Rows | None] = queue.SimpleQueue()
        self._failed: BaseException | None = None  # what the thread's last write raised
        self._thread = threading.Thread(
            target=self._write_rows, name="scriptflow store writer", daemon=True
        )
        store.take_over_checkpoints()
        self._thread.start()

    def write(self, record: Record) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._batch:
            self._hand_over()
        elif not self._woken:
            self._woken = True
            self._wake.set()

    def started(self, start: AttemptStart) -> None:
        """Record an attempt as running, durably, before its process starts."""
        os.write(self._journal, (dumps(start) + "\n").encode())
        self.write(start)

    async def run(self, interval: float = 0.2, checkpoint_every: float = 2.0) -> None:
        """Hand over what is queued whenever there is something, at most every ``interval``.

        The journal already has every start on record, so a commit may wait: fewer,
        larger transactions cost the disk far less than one per task. Checkpoints go
        on beside, so that a slow fsync does not hold back the hand-overs.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checkpoints, checkpoint_every)
            while True:
                await self._wake.wait()
                self._wake, self._woken = trio.Event(), False
                self._hand_over()
                if self._failed is not None:
                    raise self._failed
                await trio.sleep(interval)

    async def _checkpoints(self, every: float) -> None:
        """Copy the WAL back every ``every`` seconds (PASSIVE: commits go on meanwhile)."""
        while True:
            await trio.sleep(every)
            await trio.to_thread.run_sync(self.store.checkpoint)

    def _hand_over(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._rows.put(self.store.rows(batch))
            self.batches += 1

    def _write_rows(self) -> None:
        """The thread: write each batch in turn; after a failure, none (close raises it)."""
        while (rows := self._rows.get()) is not None:
            if self._failed is None:
                try:
                    self.store.write(rows)
                except BaseException as exc:  # raised by run() or close(), on the loop
                    self._failed = exc

    async def close(self) -> None:
        """Write everything queued, then empty the journal (shielded: runs at shutdown).

        If a write failed, the journal stays: the next session recovers from it.
        """
        with trio.CancelScope(shield=True):
            self._hand_over()
            self._rows.put(None)
            await trio.to_thread.run_sync(self._thread.join)
            if self._failed is not None:
                raise self._failed
            await trio.to_thread.run_sync(self.store.checkpoint)
            os.ftruncate(self._journal, 0)
            os.close(self._journal)


def fingerprint(root: str, path: str, *, digest: bool = False) -> Fingerprint | None:
    """The fingerprint of ``path`` now (None if it does not exist); hashing blocks."""
    full = path if os.path.isabs(path) else os.path.join(root, path)
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    hashed = hash_file(full) if digest and not os.path.isdir(full) else None
    return Fingerprint(path, st.st_size, st.st_mtime_ns, hashed)


def hash_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
