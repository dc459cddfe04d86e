"""The store's writer: records in, SQLite rows out, in a small process of its own.

The engine (``StoreWriter`` in ``_store.py``) runs this module as ``python -I -S -c
"..." DIRS FD DB`` with the standard library only (and, of this package, the modules
``_jsontext`` and ``_spawner``, which need nothing else), so that it starts in a few
milliseconds. It reads batches of records from its socket, turns them into rows and
writes them, each read's worth in one transaction.

Why a process: turning a record into rows and its JSON, and binding the rows, is
Python work that held the GIL, in the event loop's thread or beside it. Here the
engine only turns its records into plain tuples and marshals them (C code), and the
writer does the rest on the other core. A batch handed over also survives the
engine's death: the writer reads what is in the socket to the end, writes it, and
ends.

Records travel as plain tuples, the first item saying what they are (``START``,
``END``, ...; see ``_store._plain``), batched: a marshal'd list behind its length, as
``_spawner`` frames its messages. The writer answers once, at the end (the engine
closed its end, or died): ``("closed", error)``, error being "" when every batch was
written; and ``("error", message)`` as soon as a write fails, after which it writes
nothing more (the engine keeps its journal, and the next session recovers from it).

:func:`rows` and :func:`write` are also what the engine uses in its own process
(recovery at open, tests).
"""

from __future__ import annotations

import os
import sys

try:  # the C module alone: the sqlite3 package also imports datetime, a fifth of the start
    import _sqlite3 as sqlite3  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter without it
    import sqlite3  # type: ignore[no-redef]

if __package__:  # in the engine: scriptflow_trio._storewrite
    from ._jsontext import dumps, quote
    from .executors._spawner import frame, frames
else:  # the writer process, run from the package's directories
    from _jsontext import dumps, quote  # type: ignore[import-not-found, no-redef]
    from _spawner import frame, frames  # type: ignore[import-not-found, no-redef]

TYPE_CHECKING = False  # typing itself would be a third of the start
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    Rows = dict[str, list[tuple[Any, ...]]]  # table -> rows, in the order of its columns

# what a plain record is: its first item
START = 0  # (START, (run_id, key, name, attempt, command, executor, started, log_path, job_id))
END = 1  # (END, start, status, ended, log_path, job_id, host, returncode, reason,
#            inputs, outputs, result, cpu_seconds, max_rss, outcome); fingerprints as
#            4-tuples, outcome the task's run_tasks row when this was its last attempt
OUTCOME = 2  # (OUTCOME, run_tasks row)
ATTEMPT = 3  # (ATTEMPT, attempts row, files rows): an attempt written whole, as it is
RUN = 4  # (RUN, runs row)

_NO_FINGERPRINTS: tuple[tuple[str, int, int, str | None], ...] = ()


def end_json(
    start: Sequence[Any],
    status: str,
    ended: float | None,
    log_path: str,
    job_id: str,
    host: str = "",
    returncode: int | None = None,
    reason: str = "",
    inputs: Sequence[Sequence[Any]] = _NO_FINGERPRINTS,
    outputs: Sequence[Sequence[Any]] = _NO_FINGERPRINTS,
    result: Any = None,
    cpu_seconds: float | None = None,
    max_rss: int | None = None,
) -> str:
    """The JSON of the attempt's ``AttemptRecord``, as the store's converter writes it.

    Defaults are left out, as the converter leaves them out (``omit_if_default``).
    Written by hand, strings quoted by the C encoder's quote: a dict for the encoder
    took 7.1 us an attempt, and the fingerprints of a task with 10,000 inputs 10 ms
    (3 ms this way). Times and CPU seconds are clock readings, always finite: ``repr``
    writes them as JSON does.
    """
    parts = [
        f'{{"run_id":{quote(start[0])},"key":{quote(start[1])},"name":{quote(start[2])},'
        f'"attempt":{start[3]:d},"command":{quote(start[4])},"executor":{quote(start[5])},'
        f'"started":{start[6]!r}'
    ]
    if status != "running":
        parts.append(f',"status":{quote(status)}')
    if log_path:
        parts.append(f',"log_path":{quote(log_path)}')
    if job_id:
        parts.append(f',"job_id":{quote(job_id)}')
    if host:
        parts.append(f',"host":{quote(host)}')
    if ended is not None:
        parts.append(f',"ended":{ended!r}')
    if returncode is not None:
        parts.append(f',"returncode":{returncode:d}')
    if reason:
        parts.append(f',"reason":{quote(reason)}')
    if inputs:
        parts.append(',"inputs":')
        parts.append(_fingerprints_text(inputs))
    if outputs:
        parts.append(',"outputs":')
        parts.append(_fingerprints_text(outputs))
    if result is not None:
        parts.append(',"result":')
        parts.append(dumps(result))  # what a result file held: JSON already
    if cpu_seconds is not None:
        parts.append(f',"cpu_seconds":{cpu_seconds!r}')
    if max_rss is not None:
        parts.append(f',"max_rss":{max_rss:d}')
    parts.append("}")
    return "".join(parts)


def _fingerprints_text(fps: Iterable[Sequence[Any]]) -> str:
    """Fingerprint rows as the JSON list of their records (sizes and times are ints)."""
    items = []
    for path, size, mtime_ns, digest in fps:
        if digest is None:
            items.append(f'{{"path":{quote(path)},"size":{size:d},"mtime_ns":{mtime_ns:d}}}')
        else:
            items.append(
                f'{{"path":{quote(path)},"size":{size:d},"mtime_ns":{mtime_ns:d},'
                f'"digest":{quote(digest)}}}'
            )
    return "[" + ",".join(items) + "]"


def rows(batch: Iterable[Sequence[Any]]) -> Rows:
    """The rows of a batch of plain records, table by table, in order.

    An attempt recorded as running and again as ended in the same batch is written
    once, ended: the journal already had its start.
    """
    latest: dict[tuple[str, str, int], Sequence[Any]] = {}
    outcomes: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    for record in batch:
        kind = record[0]
        if kind == END or kind == START:
            s = record[1]
            latest[s[0], s[1], s[3]] = record
            if kind == END and record[14] is not None:
                outcomes.append(record[14])
        elif kind == OUTCOME:
            outcomes.append(record[1])
        elif kind == ATTEMPT:
            a = record[1]
            latest[a[0], a[1], a[2]] = record
        elif kind == RUN:
            runs.append(record[1])
    attempt_rows: list[tuple[Any, ...]] = []
    task_rows: list[tuple[Any, ...]] = []
    file_rows: list[tuple[Any, ...]] = []
    for record in latest.values():
        kind = record[0]
        if kind == ATTEMPT:
            a = record[1]
            attempt_rows.append(a)
            task_rows.append((a[1], a[3], a[4], a[0], a[2]))
            file_rows.extend(record[2])
            continue
        s = record[1]
        if kind == START:
            status = "running"
            text = end_json(s, status, None, s[7], s[8])
        else:
            status = record[2]
            text = end_json(s, *record[2:14])
            if status == "succeeded":
                file_rows.extend([(fp[0], s[1], s[4]) for fp in record[10]])
        attempt_rows.append((s[0], s[1], s[3], s[2], status, s[6], text))
        task_rows.append((s[1], s[2], status, s[0], s[3]))
    return {
        "runs": runs,
        "attempts": attempt_rows,
        "tasks": task_rows,
        "files": file_rows,
        "run_tasks": outcomes,
    }


def write(db: sqlite3.Connection, tables: Rows) -> None:
    """Write ``tables`` in one transaction (rolled back, and the error raised, on failure).

    One ``executemany`` per table. Multi-row ``INSERT ... VALUES (...), (...)``
    statements kept the GIL released longer, which mattered while the engine wrote
    from a thread beside its event loop. The writer is a process of its own now, and a
    short session writes at its close, while the loop waits; there they were slower:
    200 attempts (800 rows) took 2.6 ms against 1.6 ms on a new connection (their long
    statements were prepared again), and 2.9 against 2.7 ms a batch on the writer's.
    """
    db.execute("BEGIN")
    try:
        for table, values in tables.items():
            if values:
                marks = ",".join("?" * len(values[0]))
                db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", values)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def connect(path: str) -> sqlite3.Connection:
    """A connection that writes: WAL (set when the store was made), synchronous=NORMAL."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def serve(fd: int, path: str) -> None:
    """Write what arrives on ``fd`` until its end, then checkpoint and say how it went.

    Everything that arrived by the time one write is over goes into the next: when the
    engine hands over faster than the disk commits, transactions grow, not the queue.
    """
    failed = ""
    db = None  # connected when the first batch comes: the engine may still be opening it
    inbox = bytearray()
    while data := _read(fd):
        inbox += data
        batches = frames(inbox)
        if failed or not batches:
            continue
        try:
            db = db or connect(path)
            write(db, rows([r for batch in batches for r in batch]))
        except sqlite3.Error as exc:
            failed = str(exc)
            _send(fd, ("error", failed))
    if db is not None and not failed:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # the next session's connection checkpoints
        db.close()
    _send(fd, ("closed", failed))


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except ConnectionResetError:
        return b""


def _send(fd: int, message: tuple[Any, ...]) -> None:
    try:
        view = memoryview(frame(message))
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the engine is gone: nobody to tell


def main(argv: list[str]) -> int:
    fd, path = int(argv[1]), argv[2]
    try:
        serve(fd, path)
    except BaseException:
        import traceback

        _send(fd, ("closed", "the store writer failed: " + traceback.format_exc()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
