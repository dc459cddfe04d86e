"""Looking into the store from the command line: runs, show, log, why, clean, report, dag.

    scriptflow-trio runs [--limit N]          the latest runs, newest first
    scriptflow-trio show [RUN]                one run and its tasks (RUN: id, prefix, name, last)
    scriptflow-trio log TASK [--attempt N]    the log of a task's last attempt
    scriptflow-trio why FILE                  which task made FILE, from what, and what changed
    scriptflow-trio clean FLOWFILE NAME [--yes]  remove the outputs recorded for a flow
    scriptflow-trio report [RUN] [-o FILE]    one self-contained HTML report of a run
    scriptflow-trio dag [RUN] [--format dot|mermaid] [-o FILE]  the run's task graph

Every command takes ``--state-dir DIR`` and ``-C DIR``. Paths in the store are relative
to the project directory, the directory the engine ran in: here, the current directory
(after ``-C``). Each command queries the store, then renders with rich on the console
it is given. Errors for people exit 2 (bad input, no store), or 1 (a log file gone).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ._argv import add_place_options, change_directory
from ._errors import ScriptflowError, StoreError, UsageError
from ._records import AttemptRecord, AttemptStatus, Fingerprint, RunRecord, RunStatus
from ._store import Store, fingerprint, hash_file, open_existing

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_DEPTH = 20

_STATUS_STYLE = {
    "succeeded": "green",
    "skipped": "dim",
    "failed": "bold red",
    "cancelled": "yellow",
    "died": "magenta",
    "running": "cyan",
    "interrupted": "magenta",
}


# -- the command line -------------------------------------------------------------------


def _parser(command: str) -> argparse.ArgumentParser:
    prog = f"scriptflow-trio {command}"
    if command == "runs":
        p = argparse.ArgumentParser(prog=prog, description="List the runs, newest first.")
        p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (20)")
    elif command == "show":
        p = argparse.ArgumentParser(prog=prog, description="Show one run and its tasks.")
        p.add_argument(
            "run", nargs="?", default="last", help="run id, id prefix, run name, or last (default)"
        )
    elif command == "log":
        p = argparse.ArgumentParser(prog=prog, description="Print the log of a task's attempt.")
        p.add_argument("task", help="task name or key prefix")
        p.add_argument(
            "--attempt", type=int, metavar="N", help="attempt N of the task's latest run"
        )
    elif command == "why":
        p = argparse.ArgumentParser(
            prog=prog, description="Explain which task made a file, from what, and what changed."
        )
        p.add_argument("file", help="a file, relative to the current directory")
    elif command == "report":
        p = argparse.ArgumentParser(
            prog=prog,
            description="Write one self-contained HTML report of a run: summary, timeline, "
            "tasks, task graph.",
        )
        p.add_argument(
            "run", nargs="?", default="last", help="run id, id prefix, run name, or last (default)"
        )
        p.add_argument(
            "-o", "--output", default="report.html", metavar="FILE", help="(default: report.html)"
        )
    elif command == "dag":
        p = argparse.ArgumentParser(
            prog=prog,
            description="Print a run's task graph (an edge where a task used another's output).",
        )
        p.add_argument(
            "run", nargs="?", default="last", help="run id, id prefix, run name, or last (default)"
        )
        p.add_argument("--format", choices=("dot", "mermaid"), default="dot", help="(default: dot)")
        p.add_argument(
            "--group",
            action="store_true",
            help="one node per group of tasks whose names differ only in their numbers",
        )
        p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    else:
        p = argparse.ArgumentParser(
            prog=prog,
            description="Remove the outputs the store recorded for a flow's tasks (and "
            "nothing else).",
        )
        p.add_argument("flowfile", help="the Python file that defines the flows")
        p.add_argument("name", help="the flow whose outputs to remove")
        p.add_argument("--yes", action="store_true", help="remove them (else only list them)")
    return add_place_options(p)


def main(argv: Sequence[str], console: Console | None = None, errors: Console | None = None) -> int:
    """Run ``argv`` (``[command, *arguments]``, command one of :data:`COMMANDS`)."""
    from ._cli import _print_error
    from ._ui import Printer

    command, rest = argv[0], list(argv[1:])
    args = _parser(command).parse_args(rest)  # bad usage: argparse says so, exit 2
    console = console or Console(highlight=False, soft_wrap=True)
    errors = errors or Console(stderr=True, highlight=False, soft_wrap=True)
    handler: Callable[[argparse.Namespace, Console, Console], int] = _HANDLERS[command]
    try:
        change_directory(args)
        return handler(args, console, errors)
    except ScriptflowError as exc:
        _print_error(Printer(console=errors), exc, verbose=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        errors.print("[magenta]interrupted[/]")
        return 130


def _open(args: argparse.Namespace, *, write: bool = False) -> Store:
    return open_existing(Path(os.path.abspath(args.state_dir)), write=write)  # errors name it


# -- formatting -------------------------------------------------------------------------


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _print_table(console: Console, table: Table) -> None:
    """A table; piped (no terminal to fit), as wide as its content instead of 80 columns."""
    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    previous = console.width
    console.width = max(previous, needed)
    try:
        console.print(table)
    finally:
        console.width = previous


def _status(value: str) -> Text:
    return Text(value, style=_STATUS_STYLE.get(value, ""))


def _run_status(run: RunRecord) -> str:
    """The run's recorded status; a run still marked running whose engine is gone, died."""
    if run.status is RunStatus.RUNNING and run.pid and run.host == socket.gethostname():
        try:
            os.kill(run.pid, 0)
        except ProcessLookupError:
            return "died"
        except OSError:
            pass  # alive, owned by someone else
    return run.status.value


_COUNTED = (
    ("succeeded", "ok"),
    ("skipped", "skipped"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
)


def _counts(counts: dict[str, int]) -> str:
    """``3 ok, 1 failed``: the non-zero counts of a run's tasks by how they ended."""
    parts = [f"{counts[k]} {word}" for k, word in _COUNTED if counts.get(k)]
    return ", ".join(parts) or "-"


def _run_label(run: RunRecord) -> str:
    return f"{run.run_id} ({run.name})" if run.name else run.run_id


def _run_duration(run: RunRecord) -> str:
    if run.ended is None:
        return "-"
    return _duration(run.ended - run.started)


# -- runs -------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace, console: Console, errors: Console) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit must be 1 or more, not {args.limit}")
    store = _open(args)
    try:
        runs = store.runs(args.limit)
    finally:
        store.close()
    render_runs(console, runs)
    return EXIT_OK


def render_runs(console: Console, runs: Sequence[RunRecord]) -> None:
    if not runs:
        console.print("no run is recorded yet")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("run", "name", "flow", "started", "duration", "tasks", "status"):
        wraps = {"name": 6, "tasks": 10}.get(column)  # these may wrap, down to this width
        table.add_column(column, no_wrap=not wraps, min_width=wraps)
    this_year = time.localtime().tm_year
    for run in runs:
        started = _when(run.started)
        if time.localtime(run.started).tm_year == this_year:
            started = started[5:]  # the year goes without saying
        table.add_row(
            Text(run.run_id),
            Text(run.name or "-"),
            Text(run.flow),
            started,
            _run_duration(run),
            _counts(run.counts),
            _status(_run_status(run)),
        )
    _print_table(console, table)


# -- show -------------------------------------------------------------------------------


@attrs.frozen
class TaskRow:
    """One task of a run: its outcome, with its last attempt in that run (if it ran)."""

    name: str
    key: str
    status: str
    attempts: int
    duration: float | None
    last: AttemptRecord | None


def task_rows(store: Store, run_id: str, *, live: bool = False) -> list[TaskRow]:
    """The run's tasks: outcomes joined with attempts; attempts not ended come last.

    An attempt not ended is running if the run is ``live``, else it was interrupted.
    """
    last: dict[str, AttemptRecord] = {}
    for attempt in store.attempts(run_id):
        seen = last.get(attempt.key)
        if seen is None or attempt.attempt >= seen.attempt:
            last[attempt.key] = attempt
    rows = []
    for outcome in store.outcomes(run_id):
        rows.append(
            TaskRow(
                outcome.name,
                outcome.key,
                outcome.status,
                outcome.attempts,
                outcome.duration,
                last.pop(outcome.key, None),
            )
        )
    for key, attempt in last.items():  # no outcome: the engine died, or is still running
        status = attempt.status.value
        if attempt.status is AttemptStatus.RUNNING and not live:
            status = "interrupted"
        duration = None if attempt.ended is None else attempt.ended - attempt.started
        rows.append(TaskRow(attempt.name, key, status, attempt.attempt, duration, attempt))
    return rows


def find_run(store: Store, ref: str) -> RunRecord:
    """A run by id, run name (the latest of that name), unique id prefix, or ``last``.

    Run ids are unique only to the second plus a random suffix, so a prefix that
    matches several runs is an error, not a guess.
    """
    if ref == "last":
        run = store.find_run("last")
        matches = [run] if run is not None else []
    else:
        runs = store.runs()  # newest first
        matches = [r for r in runs if r.run_id == ref] or [r for r in runs if r.name == ref]
        if not matches:
            matches = [r for r in runs if r.run_id.startswith(ref)]
            if len(matches) > 1:
                listed = ", ".join(_run_label(r) for r in matches[:5])
                more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
                raise UsageError(
                    f"{ref!r} is the start of {len(matches)} run ids: {listed}{more}; "
                    "give more of the id"
                )
    if matches:
        return matches[0]
    latest = store.runs(5)
    if not latest:
        raise UsageError("no run is recorded in the store yet: run a flow here first")
    listed = ", ".join(_run_label(r) for r in latest)
    raise UsageError(
        f"no run matches {ref!r} (give a run id, an id prefix, a run name, or last); "
        f"the latest runs: {listed}"
    )


def cmd_show(args: argparse.Namespace, console: Console, errors: Console) -> int:
    store = _open(args)
    try:
        run = find_run(store, args.run)
        rows = task_rows(store, run.run_id, live=_run_status(run) == "running")
    finally:
        store.close()
    render_show(console, run, rows)
    return EXIT_OK


def render_show(console: Console, run: RunRecord, rows: Sequence[TaskRow]) -> None:
    head = Text()
    head.append(f"run {_run_label(run)}", style="bold")
    head.append(f"  flow {run.flow}  started {_when(run.started)}")
    head.append(f"  duration {_run_duration(run)}  ")
    head.append_text(_status(_run_status(run)))
    head.append(f"  ({_counts(run.counts)})")
    console.print(head)
    if run.arguments:
        args = " ".join(f"{k}={v}" for k, v in run.arguments.items())
        console.print(Text(f"arguments: {args}"))
    if not rows:
        console.print("no task was recorded in this run")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("task", "status", "attempts", "duration", "exit"):
        table.add_column(column, no_wrap=True)
    table.add_column("log", overflow="fold")
    reasons = [_reason(row.last) for row in rows]
    if any(reasons):
        table.add_column("reason")
    for row, reason in zip(rows, reasons, strict=True):
        last = row.last
        exit_code = "-" if last is None or last.returncode is None else str(last.returncode)
        cells: list[Text | str] = [
            Text(row.name),
            _status(row.status),
            str(row.attempts) if row.attempts else "-",
            _duration(row.duration) if row.status != "skipped" else "-",
            exit_code,
            Text(last.log_path if last is not None and last.log_path else "-"),
        ]
        table.add_row(*cells, *([Text(reason)] if any(reasons) else []))
    _print_table(console, table)


def _reason(attempt: AttemptRecord | None) -> str:
    """Why an attempt failed, unless the exit code column says it all."""
    if attempt is None or attempt.reason == f"exit code {attempt.returncode}":
        return ""
    return attempt.reason


# -- log --------------------------------------------------------------------------------


def cmd_log(args: argparse.Namespace, console: Console, errors: Console) -> int:
    store = _open(args)
    try:
        attempt = store.last_attempt(args.task)
        if attempt is None:
            raise UsageError(
                f"no task named {args.task!r} (nor with a key starting so) has a recorded "
                "attempt: `scriptflow-trio show` lists the tasks of the last run"
            )
        if args.attempt is not None and args.attempt != attempt.attempt:
            same = [a for a in store.attempts(attempt.run_id) if a.key == attempt.key]
            chosen = [a for a in same if a.attempt == args.attempt]
            if not chosen:
                numbers = ", ".join(str(a.attempt) for a in same)
                raise UsageError(
                    f"task {attempt.name!r} has no attempt {args.attempt} in run "
                    f"{attempt.run_id}; it has: {numbers}"
                )
            attempt = chosen[0]
    finally:
        store.close()
    header = Text()
    header.append(f"task {attempt.name}", style="bold")
    header.append(f"  run {attempt.run_id}  attempt {attempt.attempt}  ")
    status = "interrupted" if attempt.status is AttemptStatus.RUNNING else attempt.status.value
    header.append_text(_status(status))
    code = "-" if attempt.returncode is None else str(attempt.returncode)
    header.append(f"  exit code {code}  log {attempt.log_path or '-'}")
    console.print(header)
    if not attempt.log_path:
        console.print(Text("(it printed nothing: no log file was made)", style="dim"))
        return EXIT_OK
    try:
        data = Path(attempt.log_path).read_bytes()
    except OSError as exc:
        reason = (
            "is no longer on disk"
            if isinstance(exc, FileNotFoundError)
            else f"cannot be read: {exc}"
        )
        errors.print(Text(f"error: the log file {attempt.log_path} {reason}", style="bold red"))
        return EXIT_FAILED
    text = data.decode(errors="replace")
    if text:
        console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
    else:
        console.print(Text("(the log is empty)", style="dim"))
    return EXIT_OK


# -- why --------------------------------------------------------------------------------


@attrs.frozen
class Check:
    """How a file on disk compares with a recorded fingerprint."""

    state: str  # same, touched (same content), changed, missing, unknown
    detail: str = ""


def compare(root: str, path: str, recorded: Fingerprint | None) -> Check:
    """Compare ``path`` now with ``recorded``; hash when only the mtime differs."""
    now = fingerprint(root, path)
    if now is None:
        return Check("missing")
    if recorded is None:
        return Check("unknown", "no fingerprint recorded")
    if now.size != recorded.size:
        return Check("changed", f"size {recorded.size} -> {now.size} bytes")
    if now.mtime_ns == recorded.mtime_ns:
        return Check("same")
    if recorded.digest is not None and not os.path.isdir(os.path.join(root, path)):
        try:
            same = hash_file(os.path.join(root, path)) == recorded.digest
        except OSError as exc:
            return Check("unknown", f"cannot hash it: {exc}")
        if same:
            return Check("touched", "modified time changed, content the same")
        return Check("changed", "content differs")
    later = "later" if now.mtime_ns > recorded.mtime_ns else "earlier"
    return Check("changed", f"modified {_when(now.mtime_ns / 1e9)}, {later} than recorded")


def project_path(file: str, root: str) -> str:
    """``file`` (relative to the current directory) as the store keeps it."""
    return os.path.normpath(os.path.relpath(os.path.abspath(file), root))


class _Why:
    def __init__(self, store: Store, root: str, console: Console) -> None:
        self.store = store
        self.root = root
        self.console = console
        self.run_names = {r.run_id: r.name for r in store.runs()}
        self.explained: set[str] = set()
        self.makers: dict[str, AttemptRecord | None] = {}

    def maker(self, path: str) -> AttemptRecord | None:
        if path not in self.makers:
            self.makers[path] = self.store.maker(path)
        return self.makers[path]

    def line(self, level: int, *parts: str | Text) -> None:
        text = Text("  " * level)
        for part in parts:
            if isinstance(part, str):
                text.append(part)
            else:
                text.append_text(part)
        self.console.print(text)

    def explain(
        self,
        path: str,
        depth: int = 0,
        chain: tuple[str, ...] = (),
        consumer: AttemptRecord | None = None,
        used: Fingerprint | None = None,
    ) -> None:
        """One file: how it compares with its records, who made it, and from what."""
        level = 2 * depth
        made_by = self.maker(path)
        flags = self._flags(path, made_by, consumer, used)
        head = Text(path, style="bold")
        if flags:
            head.append("  ")
            head.append_text(flags)
        if path in chain:
            head.append("  (a cycle: it is among its own inputs; not followed)", style="yellow")
            self.line(level, head)
            return
        if made_by is None:
            head.append("  not made by any task (a source file)", style="dim")
            self.line(level, head)
            return
        if path in self.explained:
            head.append(f"  made by {made_by.name}, explained above", style="dim")
            self.line(level, head)
            return
        self.line(level, head)
        self.explained.add(path)
        run = made_by.run_id
        name = self.run_names.get(run)
        self.line(
            level + 1,
            "made by task ",
            Text(made_by.name, style="bold"),
            f" [{made_by.key[:8]}] in run {run}{f' ({name})' if name else ''}, "
            f"ended {_when(made_by.ended)}",
        )
        self.line(level + 1, "command: ", Text(made_by.command, style="cyan"))
        if not made_by.inputs:
            self.line(level + 1, Text("no inputs", style="dim"))
            return
        if depth >= MAX_DEPTH:
            self.line(level + 1, Text(f"inputs not shown: deeper than {MAX_DEPTH} links"))
            return
        self.line(level + 1, "inputs:")
        for fp in made_by.inputs:
            self.explain(fp.path, depth + 1, (*chain, path), made_by, fp)

    def _flags(
        self,
        path: str,
        made_by: AttemptRecord | None,
        consumer: AttemptRecord | None,
        used: Fingerprint | None,
    ) -> Text:
        checks: list[tuple[str, Check]] = []
        if made_by is not None:
            out = next((fp for fp in made_by.outputs if fp.path == path), None)
            checks.append(("since it was made", compare(self.root, path, out)))
        if consumer is not None:
            checks.append((f"since {consumer.name} used it", compare(self.root, path, used)))
        if not checks:
            missing = fingerprint(self.root, path) is None
            return Text("MISSING", style="bold red") if missing else Text("")
        if any(c.state == "missing" for _, c in checks):
            return Text("MISSING", style="bold red")
        if len(checks) == 2 and checks[0][1] == checks[1][1]:  # say it once
            checks = [(f"{checks[0][0]} and {checks[1][0]}", checks[0][1])]
        parts: list[Text] = []
        for when, check in checks:
            if check.state == "changed":
                parts.append(Text(f"CHANGED {when} ({check.detail})", style="bold red"))
            elif check.state == "touched":
                parts.append(Text(f"touched {when} ({check.detail})", style="yellow"))
            elif check.state == "unknown":
                parts.append(Text(f"cannot tell {when}: {check.detail}", style="yellow"))
        if not parts:
            return Text(f"unchanged {checks[0][0]}", style="green")
        return Text("; ").join(parts)


def cmd_why(args: argparse.Namespace, console: Console, errors: Console) -> int:
    root = os.getcwd()
    path = project_path(args.file, root)
    store = _open(args)
    try:
        why = _Why(store, root, console)
        if why.maker(path) is None and fingerprint(root, path) is None:
            raise UsageError(
                f"{args.file} does not exist, and no task made it (paths are relative to "
                "the current directory, which should be where the flow ran; see -C)"
            )
        why.explain(path)
    finally:
        store.close()
    return EXIT_OK


# -- clean ------------------------------------------------------------------------------


def cmd_clean(args: argparse.Namespace, console: Console, errors: Console) -> int:
    from ._flowfile import load_flow_file
    from ._lock import StateLock

    load_flow_file(args.flowfile).get(args.name)  # a clear error for a wrong name
    root = os.getcwd()
    store = _open(args, write=args.yes)
    lock = StateLock(Path(args.state_dir)) if args.yes else None
    try:
        if lock is not None:
            lock.acquire()  # never delete outputs under a running session
        keys = store.keys_of_flow(args.name)
        if not keys:
            console.print(f"flow {args.name} has no recorded run here: nothing to clean")
            return EXIT_OK
        recorded = store.files_made_by(keys)
        existing = [p for p in recorded if os.path.lexists(os.path.join(root, p))]
        gone = [p for p in recorded if p not in existing]
        if not args.yes:
            for path in existing:
                note = "/  (a directory: removed only if empty)" if _is_dir(root, path) else ""
                console.print(Text(f"  {path}{note}"))
            console.print(
                f"{_files(len(existing))}; run again with --yes to remove them"
                if existing
                else f"none of the outputs recorded for flow {args.name} exists"
            )
            return EXIT_OK
        removed, kept = remove(root, existing)
        _forget(store, [*removed, *gone])
        for path in removed:
            console.print(Text(f"  removed {path}"))
        for path, why in kept:
            console.print(Text(f"  kept {path}: {why}", style="yellow"))
        console.print(f"removed {_files(len(removed))}")
        return EXIT_FAILED if any(why != _NOT_EMPTY for _, why in kept) else EXIT_OK
    finally:
        if lock is not None:
            lock.release()
        store.close()


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


_NOT_EMPTY = "a directory that holds files the store did not record"


def remove(root: str, paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove files; a directory only when empty (what is inside was not recorded).

    Returns what was removed, and what was kept with why.
    """
    removed: list[str] = []
    kept: list[tuple[str, str]] = []
    files = [p for p in paths if not _is_dir(root, p)]
    dirs = sorted((p for p in paths if _is_dir(root, p)), key=len, reverse=True)
    for path in [*files, *dirs]:
        full = os.path.join(root, path)
        try:
            if path in dirs:
                os.rmdir(full)
            else:
                os.remove(full)
        except OSError as exc:
            not_empty = path in dirs and exc.errno in (errno.ENOTEMPTY, errno.EEXIST)
            kept.append((path, _NOT_EMPTY if not_empty else str(exc)))
        else:
            removed.append(path)
    return removed, kept


def _is_dir(root: str, path: str) -> bool:
    full = os.path.join(root, path)
    return os.path.isdir(full) and not os.path.islink(full)


def _forget(store: Store, paths: list[str]) -> None:
    import sqlite3

    try:
        store.forget_files(paths)
    except sqlite3.Error as exc:
        raise StoreError(f"the store {store.path} cannot be written: {exc}") from None


# -- report and dag ---------------------------------------------------------------------


def cmd_report(args: argparse.Namespace, console: Console, errors: Console) -> int:
    """Write the run's HTML report (``_report.py``); log paths are relative to here."""
    from ._report import write_report

    store = _open(args)
    try:
        run = find_run(store, args.run)
        try:
            write_report(store, run, args.output, root=os.getcwd(), status=_run_status(run))
        except OSError as exc:
            raise _unwritable(args.output, exc) from None
    finally:
        store.close()
    console.print(Text(f"report: {args.output}"))
    return EXIT_OK


def cmd_dag(args: argparse.Namespace, console: Console, errors: Console) -> int:
    """Print the run's task graph (``_graph.py``) as dot or Mermaid."""
    from ._graph import collapse, graph_of, to_dot, to_mermaid

    store = _open(args)
    try:
        run = find_run(store, args.run)
        graph = graph_of(store.outcomes(run.run_id), store.attempts(run.run_id))
    finally:
        store.close()
    if args.group:
        graph = collapse(graph)
    text = to_mermaid(graph) if args.format == "mermaid" else to_dot(graph, run.run_id)
    if not args.output:
        console.out(text, end="", highlight=False)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _unwritable(args.output, exc) from None
    return EXIT_OK


def _unwritable(path: str, exc: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {exc.strerror or exc}")


_HANDLERS: dict[str, Callable[[argparse.Namespace, Console, Console], int]] = {
    "runs": cmd_runs,
    "show": cmd_show,
    "log": cmd_log,
    "why": cmd_why,
    "clean": cmd_clean,
    "report": cmd_report,
    "dag": cmd_dag,
}
