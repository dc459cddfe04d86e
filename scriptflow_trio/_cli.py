"""The command line: argv, loading the flows file, trio.run, exit codes, errors for people.

    python -m scriptflow_trio FLOWFILE                 list the flows
    python -m scriptflow_trio FLOWFILE NAME [k=v ...]  run one
    scriptflow-trio run NAME [k=v ...]                 the same with FLOWFILE=sflow.py
    scriptflow-trio runs|show|log|why|clean|report|dag ...  look into the store (_inspect.py)

Exit codes: 0 success, 1 a task or the flow failed, 2 bad input, 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import trio

from ._argv import add_place_options, change_directory, command_argv
from ._errors import (
    FlowFileError,
    ScriptflowError,
    StoreError,
    TaskError,
    TaskFailed,
    UsageError,
)
from ._flowfile import FlowFile, bind_arguments, load_flow_file
from ._session import SessionConfig, new_run_id, open_session
from ._ui import Printer, TerminalView, escape
from .executors._base import Executor
from .executors._clusters import BATCH_EXECUTORS, batch_executor
from .executors.local import LocalExecutor

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# a flows file whose tasks say executor="dask" gets a Dask executor without asking
_NAMES_DASK = re.compile(r"""\bexecutor\s*=\s*["']dask["']""")
_SIGNAL_EXIT: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scriptflow-trio",
        description="Run a flow (an async Python function) from a flows file, make-style.",
        epilog="`scriptflow-trio run NAME` reads the flows file sflow.py, as scriptflow did. "
        "Past runs: `scriptflow-trio runs`, `show [RUN]`, `log TASK`, `why FILE`, "
        "`clean FLOWFILE NAME`, `report [RUN]`, `dag [RUN]` (each with --help).",
    )
    p.add_argument("flowfile", help="the Python file that defines the flows")
    p.add_argument("name", nargs="?", help="the flow to run (omit to list them)")
    p.add_argument("args", nargs="*", metavar="key=value", help="arguments of the flow")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="local slots (default: CPU count)")
    p.add_argument(
        "--executor",
        choices=("local", "dask", *BATCH_EXECUTORS),
        default="local",
        help="where tasks that name no executor run (default: local); slurm, sge and pbs "
        "take their settings from sf.init({'executors': {'slurm': {...}}})",
    )
    p.add_argument(
        "--dask-workers",
        type=int,
        metavar="N",
        help="run the Dask executor on a local cluster of N worker processes (default: 2)",
    )
    p.add_argument(
        "--dask-address",
        metavar="ADDR",
        help="run the Dask executor on the existing scheduler at ADDR (tcp://host:port)",
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would run, run nothing")
    p.add_argument(
        "-f",
        "--force",
        action="append",
        default=[],
        metavar="PATTERN",
        help="re-run tasks whose name matches this glob (repeatable)",
    )
    p.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="let independent tasks finish after a failure; report all at the end",
    )
    p.add_argument("--plain", action="store_true", help="plain timestamped lines, no live view")
    p.add_argument("-q", "--quiet", action="store_true", help="only failures and the summary")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="commands, every skipped task, and tracebacks"
    )
    add_place_options(p, "where logs and the store live")
    p.add_argument("--run-name", metavar="NAME", help="a name for this run (`show NAME` finds it)")
    p.add_argument(
        "--freshness",
        choices=("mtime", "hash"),
        default="mtime",
        help="hash: a touched input whose content is unchanged is no reason to re-run",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="when the run ends (however it ends), write its HTML report to FILE",
    )
    p.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="POST the run's events as JSON to URL (repeatable); slack:URL posts readable "
        "messages to a Slack incoming webhook",
    )
    p.add_argument(
        "--notify-every",
        type=float,
        metavar="SECONDS",
        help="at most one progress notification per SECONDS (default: 60)",
    )
    p.add_argument(
        "--notify-token-env",
        metavar="VAR",
        help="send the token in environment variable VAR as 'Authorization: Bearer'",
    )
    p.add_argument(
        "--no-notify",
        action="store_true",
        help="send no notification, not even to the endpoints the flows file names",
    )
    return p


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    parser = _parser()
    if argv and argv[0] == "run":
        argv = ["sflow.py", *argv[1:]]
        if not any(not a.startswith("-") for a in argv[1:]):
            parser.error("`run` needs the name of a flow: scriptflow-trio run NAME")
    return parser.parse_intermixed_args(argv)


def run() -> NoReturn:
    """The process's entry point (``python -m scriptflow_trio``, ``scriptflow-trio``).

    The objects made at import are moved out of the garbage collector's sight
    (``gc.freeze``). Once :func:`main` has returned, the run's records are committed
    and its files closed; what normal interpreter shutdown would still do is tear down
    every module's objects, 20-30 ms here of a start-up that counts. So this runs the
    exit handlers (the flow's own among them) and flushes the standard streams, then
    leaves at once, unless a thread that is not a daemon still runs (shutdown waits
    for it).
    """
    # what the imports made lives until the end: the collector need not go through it
    # again and again (a run of 10,000 up-to-date tasks spent 5 % of its time there)
    gc.freeze()
    code = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    command = command_argv(argv)  # runs, show, log, why, clean, report, dag: see _inspect.py
    if command is not None:
        from ._inspect import main as inspect_main

        return inspect_main(command)
    args = _parse(argv)
    console = Printer(sys.stdout, plain=args.plain)
    errors = Printer(sys.stderr, plain=args.plain)
    try:
        change_directory(args)
        flows = load_flow_file(args.flowfile)
        _apply_init_config(args, flows)
        if not args.name:
            _list_flows(console, flows)
            return EXIT_OK
        fn = flows.get(args.name)
        kwargs = bind_arguments(fn, args.name, args.args)
        if args.jobs is not None and args.jobs < 1:
            raise UsageError(f"-j/--jobs must be 1 or more, not {args.jobs}")
        _check_dask_options(args, flows)
        _check_notify_options(args)
        args.run_id = new_run_id()
        args.local = LocalExecutor(args.jobs)
        if not args.dry_run:
            args.local.prepare()  # its helper process starts while the store opens
        code = trio.run(_run, fn, kwargs, args, console, errors)
        if args.report:
            _write_report(args, console, errors)
        return code
    except UsageError as exc:
        _print_error(errors, exc, verbose=args.verbose and not isinstance(exc, FlowFileError))
        return EXIT_USAGE
    except KeyboardInterrupt:
        errors.print("interrupted", style="magenta")
        return 130


def _apply_init_config(args: argparse.Namespace, flows: FlowFile) -> None:
    """Fold scriptflow's ``sf.init({...})`` into the options; the command line wins."""
    config = flows.config
    args.executors_config = config.get("executors") or {}
    local = args.executors_config.get("local") or {}
    if args.jobs is None and local.get("maxsize"):
        args.jobs = int(local["maxsize"])
    if config.get("force") and not args.force:
        args.force = [str(config["force"])]
    if config.get("debug"):
        args.verbose = True
    if config.get("classic_terminal"):
        args.plain = True
    notify = config.get("notify") or []
    args.notify_config = [notify] if isinstance(notify, str) else list(notify)
    if args.notify_every is None and config.get("notify_every") is not None:
        args.notify_every = config["notify_every"]
    if args.notify_token_env is None:
        args.notify_token_env = config.get("notify_token_env")


def _check_notify_options(args: argparse.Namespace) -> None:
    """Parse the notification endpoints (``args.notify_endpoints``): none unless asked for."""
    args.notify_endpoints = []
    if args.no_notify or args.dry_run:
        return
    var = args.notify_token_env
    token = os.environ.get(var) if var else None
    if var and not token and (args.notify or args.notify_config):
        raise UsageError(
            f"the notification token is to be read from the environment variable {var} "
            "(--notify-token-env, or notify_token_env in sf.init), which is not set or is "
            "empty: set it, or drop that setting to send no token"
        )
    given = [(u, "sf.init 'notify'") for u in args.notify_config] + [
        (u, "--notify") for u in args.notify
    ]
    if given:
        from ._notify import Endpoint  # only a run that notifies pays for importing it
    for url, where in given:
        if not isinstance(url, str):
            raise UsageError(f"{where}: {url!r} is not a URL")
        try:
            endpoint = Endpoint.parse(url, token)
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if endpoint not in args.notify_endpoints:
            args.notify_endpoints.append(endpoint)
    try:
        every = 60.0 if args.notify_every is None else float(args.notify_every)
    except (TypeError, ValueError):
        every = 0.0
    if not every > 0:
        raise UsageError(
            f"--notify-every must be a number of seconds above 0, not {args.notify_every!r}"
        )
    args.notify_every = every


def _check_dask_options(args: argparse.Namespace, flows: FlowFile) -> None:
    """Decide whether the run needs a Dask executor (``args.dask``)."""
    if args.dask_workers is not None and args.dask_workers < 1:
        raise UsageError(f"--dask-workers must be 1 or more, not {args.dask_workers}")
    if args.dask_workers is not None and args.dask_address:
        raise UsageError("give --dask-workers (a local cluster) or --dask-address, not both")
    try:
        names_dask = bool(_NAMES_DASK.search(flows.path.read_text(errors="replace")))
    except OSError:
        names_dask = False
    args.dask = (
        args.executor == "dask"
        or names_dask
        or args.dask_workers is not None
        or bool(args.dask_address)
    )


def _executors(args: argparse.Namespace) -> list[Executor]:
    """The session's executors; the first is the default one."""
    local = getattr(args, "local", None) or LocalExecutor(args.jobs)
    executors: list[Executor] = [local]
    if args.executor in BATCH_EXECUTORS:  # the default, and local for executor="local"
        config = getattr(args, "executors_config", None)
        executors.insert(0, batch_executor(args.executor, config))
    if not getattr(args, "dask", False):
        return executors
    from .executors.dask import DaskExecutor

    dask = DaskExecutor(args.dask_address, workers=args.dask_workers or 2)
    return [dask, local] if args.executor == "dask" else [*executors, dask]


def _list_flows(console: Printer, flows: FlowFile) -> None:
    described = flows.describe()
    if not described:
        console.print(
            f"{flows.path} defines no flow: name an async function flow_NAME, "
            "or decorate it with @sf.flow"
        )
        return
    console.print(f"flows in {flows.path}:")
    width = max(len(name) for name, _ in described)
    for name, doc in described:
        row = f"  {name:<{width}}  {doc}"
        console.print(row, markup=f"  [bold]{escape(name):<{width}}[/]  {escape(doc)}")


async def _run(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    args: argparse.Namespace,
    console: Printer,
    error_console: Printer,
) -> int:
    """Run the flow; with notification endpoints, send its events while it runs, and the
    last ones after the summary is printed (for at most a few seconds)."""
    endpoints = getattr(args, "notify_endpoints", [])
    if not endpoints:  # nothing is sent unless asked for
        return await _run_session(fn, kwargs, args, console, error_console, [])
    from ._notify import Notifier

    notifier = Notifier(
        endpoints, every=args.notify_every, run_name=args.run_name, arguments=kwargs
    )
    # the session has signal handlers of its own while it runs; these are for the flush
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as outer:

            async def hurry() -> None:
                async for _ in signals:  # Ctrl-C while the last messages go: leave now
                    notifier.abandon()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(notifier.run)
                code = await _run_session(fn, kwargs, args, console, error_console, [notifier])
                outer.start_soon(hurry)
                nursery.cancel_scope.cancel()  # notifier.run sends what is left, bounded
            outer.cancel_scope.cancel()
    for s in notifier.statistics():
        if s.failed or s.dropped or args.verbose:
            lost = f", {s.failed + s.dropped} dropped/failed" if s.failed or s.dropped else ""
            why = f" (last error: {s.last_error})" if s.last_error else ""
            error_console.print(
                f"notifications: {s.sent} sent{lost} to {s.endpoint}{why}",
                style="yellow" if lost else "",
            )
    return code


async def _run_session(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    args: argparse.Namespace,
    console: Printer,
    error_console: Printer,
    listeners: list[Any],
) -> int:

    view = TerminalView(console, plain=args.plain, quiet=args.quiet, verbose=args.verbose)
    config = SessionConfig(
        force=tuple(args.force),
        dry_run=args.dry_run,
        keep_going=args.keep_going,
        freshness=args.freshness,
        run_name=args.run_name,
    )
    received: list[int] = []
    errors: list[BaseException] = []
    failures: list[TaskError] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            run_scope = trio.CancelScope()

            async def watch_signals() -> None:
                async for signum in signals:
                    if not received:
                        received.append(signum)
                        run_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(view.run)
            with run_scope:
                try:
                    async with open_session(
                        executors=_executors(args),
                        state_dir=args.state_dir,
                        config=config,
                        listeners=[view, *listeners],
                        run_id=args.run_id,
                    ) as session:
                        try:
                            await session.run(fn, **kwargs)
                        finally:
                            failures = session.failures
                except BaseException as exc:  # rendered below
                    errors.append(exc)
                    if not _leaves([exc]):  # only our own scope's cancellation
                        raise
            nursery.cancel_scope.cancel()
    view.print_summary([_describe_failure(f, args.verbose) for f in failures])
    reported = {id(f) for f in failures}
    for leaf in _leaves(errors):
        if id(leaf) not in reported:
            _print_error(error_console, leaf, verbose=args.verbose)
    if received:
        return _SIGNAL_EXIT.get(received[0], 130)
    leaves = _leaves(errors)
    if leaves and all(isinstance(e, StoreError) for e in leaves):
        return EXIT_USAGE  # the store or its lock, not the flow, is what to fix
    return EXIT_FAILED if (leaves or failures) else EXIT_OK


def _write_report(args: argparse.Namespace, console: Printer, error_console: Printer) -> None:
    """``--report FILE``: the run's HTML report, once the session has ended, however.

    A report that cannot be written is said, and leaves the run's exit code alone.
    """
    from pathlib import Path

    from ._report import write_report
    from ._store import open_existing

    if args.dry_run:
        error_console.print("no report: a dry run records nothing", style="yellow")
        return
    try:
        store = open_existing(Path(os.path.abspath(args.state_dir)))
        try:
            run = store.find_run(args.run_id)
            if run is None:
                error_console.print(
                    f"no report: run {args.run_id} was not recorded", style="yellow"
                )
                return
            write_report(store, run, args.report, root=os.getcwd())
        finally:
            store.close()
    except (ScriptflowError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        error_console.print(
            f"error: cannot write the report {args.report}: {detail}", style="bold red"
        )
        return
    console.print(f"report: {args.report}")


def _leaves(errors: list[BaseException]) -> list[BaseException]:
    """The errors inside (nested) exception groups, less trio's cancellations."""
    out: list[BaseException] = []
    for exc in errors:
        if isinstance(exc, BaseExceptionGroup):
            out += _leaves(list(exc.exceptions))
        elif not isinstance(exc, trio.Cancelled):
            out.append(exc)
    return out


def _describe_failure(error: TaskError, verbose: bool) -> str:
    if not isinstance(error, TaskFailed):
        return str(error)
    attempts = f" (after {error.attempts} attempts)" if error.attempts > 1 else ""
    lines = [f"task {error.name!r} failed{attempts}: {error.reason}"]
    if error.log_path:
        lines.append(f"  log: {os.path.relpath(error.log_path)}")
    if error.log_tail:
        lines.append("  last lines of the log:")
        lines += [f"    {line}" for line in error.log_tail.splitlines()[-(20 if verbose else 8) :]]
    return "\n".join(lines)


def _print_error(console: Printer, exc: BaseException, *, verbose: bool) -> None:
    if isinstance(exc, ScriptflowError):
        message = f"error: {exc}"
    else:
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if "scriptflow_trio" not in f.filename and "/trio/" not in f.filename
        ]
        where = f" at {frames[-1].filename}, line {frames[-1].lineno}" if frames else ""
        message = f"error: the flow raised {type(exc).__name__}{where}: {exc}"
    if verbose:
        console.print("".join(traceback.format_exception(exc)))
    console.print(message, style="bold red")
