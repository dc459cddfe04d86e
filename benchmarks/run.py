"""Benchmarks of scriptflow_trio against make, snakemake, doit and scriptflow 0.2.13.

    python benchmarks/run.py [--quick] [--only W1,W3] [--tools make,doit] [--json PATH]

Every measurement prepares its workload in a fresh temporary directory, runs one tool
there as a process of its own and waits for it with ``os.wait4``: wall time, and the
peak RSS of the tool (or of the biggest process it waited for). The tools take turns
within each workload, the whole round is repeated (3 times by default, 7 for the
tools that take seconds on W0, W1 and W3) and the table shows medians. It prints one
markdown table to stdout (progress goes to stderr) and writes every sample to a JSON
file.

Workloads (each task is a real process unless said otherwise; 2 slots throughout):

* W0 start-up: one task, the whole CLI from launch to exit.
* W1 throughput: 1,000 and 10,000 independent tasks, ``touch out/I.txt``.
* W2 no-op re-run: W1 again in the same directory, everything up to date.
* W3 latency: a chain of 200 tasks, ``cp c/{I-1}.txt c/{I}.txt``; the result is the
  engine's overhead per hop over make's, (tool - make) / 200.
* W4 memory: peak RSS for 10,000 and 100,000 declared tasks, minus that of one task,
  per task. scriptflow_trio's engine: a driver process (``_engine.py``) whose session
  awaits them in one ``sf.bag`` on the FakeExecutor with 2 slots, with the store; the
  other rows are the tools' dry runs (nothing runs, every task is declared).
* W5 engine only: the W1 and W3 flows and a fan-in on the FakeExecutor (no
  processes), the session alone timed inside a fresh process: tasks per second. Each
  runs on disk (the temporary directory) and in memory (a tmpfs directory, where
  there is one): the goal is judged in memory, the engine's own ceiling, since on
  disk the files the FakeExecutor creates cost as much as the engine. A floor row
  per flow runs the FakeExecutor's work alone (a trio checkpoint and a file per task,
  no engine) in memory; the in-memory rows say how many times the floor they take, a
  ratio meant to move less with the VM's speed than tasks per second do.

The tools other than make and xargs are installed with pip into virtual environments
of their own under ``--cache``, reused by later runs; one that cannot be installed is
skipped with a note. scriptflow_trio is the one of the repository this file is in.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _tools import (
    CHAIN,
    INDEPENDENT,
    OPTIONAL,
    SLOTS,
    BenchmarkError,
    Tool,
    check_prerequisites,
    clean_env,
    default_cache,
    expected_outputs,
    export_commit,
    floor_note,
    install_in_venv,
    make_tool,
    output_mtimes,
    package_root,
    progress,
    repo_env,
    rewritten,
    run_measured,
    scriptflow_trio_revision,
    scriptflow_trio_tool,
    seed_directory,
    xargs_tool,
)

HERE = Path(__file__).resolve().parent
WORKLOADS = ("W0", "W1", "W2", "W3", "W4", "W5")
TOOL_KEYS = ("scriptflow_trio", "make", "xargs", "snakemake", "doit", "scriptflow")
ENGINE = "scriptflow_trio engine"
#: W5's reference: the FakeExecutor's own work, without the engine (``_engine.py --floor``)
FLOOR = "floor: the FakeExecutor's work alone, no engine (in tmpfs)"
CHAIN_HOPS = 200
#: scriptflow 0.2.13 polls every 0.1 s: in --quick, its chain is this short (make runs it too)
QUICK_SCRIPTFLOW_HOPS = 20

GOALS = {
    "W0": "start-up ≤ 0.2 s",
    "W1": "≤ 1.5x make's wall time",
    "W2": "10,000 up-to-date tasks < 0.5 s",
    "W3": "≤ 2 ms overhead per hop over make",
    "W4": "≤ 2 KiB per pending task",
    "W5": "≥ 20,000 tasks/s",
}


def n_(n: int) -> str:
    return f"{n:,}"


# -- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a tool on one workload, with every sample taken."""

    workload: str
    case: str
    size: int  # tasks (W0-W2, W4, W5) or hops (W3)
    tool: str
    samples: list[dict[str, float]] = field(default_factory=list)
    failure: str = ""
    skipped: str = ""  # why it was not measured
    notes: list[str] = field(default_factory=list)
    result: str = ""
    goal: str = ""

    def median(self, key: str = "seconds") -> float:
        return statistics.median(s[key] for s in self.samples)

    @property
    def ok(self) -> bool:
        return bool(self.samples) and not self.failure


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], Row] = {}

    def row(self, workload: str, case: str, size: int, tool: str) -> Row:
        key = (workload, case, tool)
        if key not in self.rows:
            self.rows[key] = Row(workload, case, size, tool)
        return self.rows[key]

    def find(self, workload: str, case: str, tool: str) -> Row | None:
        return self.rows.get((workload, case, tool))


# -- the measurements ---------------------------------------------------------------------


@dataclass
class Unit:
    """One tool on one workload: measured once per repeat, in a fresh directory."""

    group: str  # units of one group take turns
    key: str  # the tool's --tools key
    repeat: int
    measure: Callable[[Path, int], None]  # (a fresh directory, repeat index)
    rows: list[Row]  # what a failure marks as failed
    failed: bool = False


def timeout_for(tool: Tool, n: int) -> float:
    return 120 + tool.seconds_per_task * n


def sample(m: Any, **extra: float) -> dict[str, float]:
    return {"seconds": m.seconds, "maxrss_kib": float(m.maxrss_kib), **extra}


def full_run(tool: Tool, shape: str, n: int, workdir: Path, row: Row) -> dict[str, int]:
    """Run the tool on a prepared directory; check and return its outputs' mtimes."""
    m = run_measured(
        tool.argv(shape),
        workdir,
        timeout=timeout_for(tool, n),
        env=tool.env,
        stdin_path=workdir / tool.stdin_file if tool.stdin_file else None,
    )
    m.check(f"{tool.label} on {row.workload} {row.case}")
    mtimes = output_mtimes(workdir, expected_outputs(shape, n), f"{tool.label}, {row.case}")
    row.samples.append(sample(m))
    return mtimes


def noop_run(
    tool: Tool, shape: str, n: int, workdir: Path, row: Row, before: dict[str, int]
) -> None:
    m = run_measured(tool.argv(shape), workdir, timeout=timeout_for(tool, n), env=tool.env)
    m.check(f"{tool.label} on {row.workload} {row.case}")
    outputs = expected_outputs(shape, n)
    touched = rewritten(before, output_mtimes(workdir, outputs, f"{tool.label}, {row.case}"))
    row.samples.append(sample(m, rewritten=len(touched)))
    if touched:
        note = f"rewrote {len(touched)} of {n} outputs (e.g. {touched[0]})"
        progress(f"warning: {tool.label}, {row.workload} {row.case}: {note}")
        if note not in row.notes:
            row.notes.append(note)


def w0_unit(res: Results, tool: Tool, repeat: int) -> Unit:
    row = res.row("W0", "1 task", 1, tool.label)

    def measure(workdir: Path, rep: int) -> None:
        tool.prepare(workdir, INDEPENDENT, 1)
        full_run(tool, INDEPENDENT, 1, workdir, row)

    return Unit("W0", tool.key, repeat, measure, [row])


def w1_unit(
    res: Results, tool: Tool, n: int, repeat: int, only: set[str], noop_only: str = ""
) -> Unit:
    """W1 and, right after it in the same directory, W2 (unless not selected).

    With ``noop_only`` (the reason), the full run is not measured: the harness creates
    the outputs, the tool runs once untimed (it finds everything up to date), then its
    timed no-op re-run follows.
    """
    full = res.row("W1", f"{n_(n)} tasks", n, tool.label) if "W1" in only else None
    noop = None
    if tool.noop and "W2" in only:
        label = tool.label + (" (outputs made by the harness)" if noop_only else "")
        noop = res.row("W2", f"{n_(n)} tasks up to date", n, label)
    if full is not None and noop_only:
        full.skipped = noop_only

    def measure(workdir: Path, rep: int) -> None:
        tool.prepare(workdir, INDEPENDENT, n)
        if noop_only:
            assert noop is not None
            for out in expected_outputs(INDEPENDENT, n):
                (workdir / out).touch()
            before = output_mtimes(workdir, expected_outputs(INDEPENDENT, n), "harness")
            first = run_measured(
                tool.argv(INDEPENDENT), workdir, timeout=timeout_for(tool, n), env=tool.env
            )
            first.check(f"{tool.label}, first contact with outputs it did not make")
            if rewritten(before, output_mtimes(workdir, list(before), tool.label)):
                noop.notes.append("its untimed first contact rewrote outputs")
            noop_run(tool, INDEPENDENT, n, workdir, noop, before)
            return
        if full is not None:
            before = full_run(tool, INDEPENDENT, n, workdir, full)
        else:  # W2 alone: the full run is still needed, untimed
            full_run(tool, INDEPENDENT, n, workdir, Row("W1", "untimed", n, tool.label))
            before = output_mtimes(workdir, expected_outputs(INDEPENDENT, n), tool.label)
        if noop is not None:
            noop_run(tool, INDEPENDENT, n, workdir, noop, before)

    rows = [r for r in (full, noop) if r is not None and not r.skipped]
    return Unit(f"W1 {n}", tool.key, repeat, measure, rows)


def w3_unit(res: Results, tool: Tool, hops: int, repeat: int) -> Unit:
    row = res.row("W3", f"chain of {hops}", hops, tool.label)

    def measure(workdir: Path, rep: int) -> None:
        tool.prepare(workdir, CHAIN, hops)
        full_run(tool, CHAIN, hops, workdir, row)
        seed = (workdir / "c" / "0.txt").read_bytes()
        if (workdir / "c" / f"{hops}.txt").read_bytes() != seed:
            raise BenchmarkError(f"{tool.label}: c/{hops}.txt is not a copy of c/0.txt")

    return Unit(f"W3 {hops}", tool.key, repeat, measure, [row])


def w4_dry_unit(res: Results, tool: Tool, n: int, repeat: int) -> Unit:
    dry_argv = tool.dry_argv
    assert dry_argv is not None
    row = res.row("W4", f"{n_(n)} declared", n, tool.dry_label)

    def measure(workdir: Path, rep: int) -> None:
        tool.prepare(workdir, INDEPENDENT, n)
        m = run_measured(dry_argv(INDEPENDENT), workdir, timeout=timeout_for(tool, n), env=tool.env)
        m.check(f"{tool.dry_label}, {n_(n)} tasks")
        made = list((workdir / "out").iterdir())
        if made:
            raise BenchmarkError(f"{tool.dry_label}: a dry run created {len(made)} outputs")
        row.samples.append(sample(m))

    return Unit(f"W4 {n}", tool.key, repeat, measure, [row])


def engine_unit(
    res: Results,
    workload: str,
    shape: str,
    n: int,
    store: bool,
    repeat: int,
    memory: Path | None = None,
    floor: bool = False,
) -> Unit:
    """The driver ``_engine.py`` in a fresh process: FakeExecutor, 2 slots.

    With ``memory`` (a tmpfs directory) it runs in a fresh directory there: the
    engine's own ceiling, without the disk's cost of the files the FakeExecutor
    creates (one per task) and of the store's writes. ``floor``: the FakeExecutor's
    work alone, without the engine (W5's reference row).
    """
    store_label = "store" if store else "no store"
    if workload == "W5":
        store_label += ", in tmpfs" if memory else ", on disk"
    if workload == "W4" and shape == "pending":
        label = f"{ENGINE} (pending: sf.bag on a blocked FakeExecutor, store)"
        row = res.row("W4", f"{n_(n)} declared", n, label)
    elif workload == "W4":
        label = f"{ENGINE} (whole run: sf.bag on FakeExecutor, store)"
        row = res.row("W4", f"{n_(n)} declared", n, label)
    else:
        what = {
            "independent": f"{n_(n)} independent",
            "chain": f"chain of {n_(n)}",
            "fanin": f"{n_(n)} + 1 fan-in",
        }[shape]
        tool = FLOOR if floor else f"{ENGINE} (FakeExecutor, {store_label})"
        row = res.row("W5", what, n, tool)
    argv = [sys.executable, str(HERE / "_engine.py"), shape, str(n)]
    if not store:
        argv.append("--no-store")
    if floor:
        argv.append("--floor")

    def measure(workdir: Path, rep: int) -> None:
        if memory is None:
            measure_in(workdir)
            return
        inside = Path(tempfile.mkdtemp(prefix="sf-bench-w5-", dir=memory))
        try:
            measure_in(inside)
        finally:
            shutil.rmtree(inside, ignore_errors=True)

    def measure_in(workdir: Path) -> None:
        seed_directory(workdir, CHAIN if shape == "chain" else INDEPENDENT)
        m = run_measured(argv, workdir, timeout=120 + 0.01 * n, env=repo_env())
        m.check(f"{row.tool} on {row.workload} {row.case}")
        try:
            report = json.loads(m.output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchmarkError(f"{row.tool}: no report in its output:\n{m.output}") from None
        if shape == "pending":
            running = min(2, n)
            if report["ran"] != running or report["queued"] != n - running:
                raise BenchmarkError(f"{row.tool}: not all {n} tasks were pending: {report}")
        else:
            if report["ran"] != report["tasks"]:
                raise BenchmarkError(f"{row.tool}: ran {report['ran']} of {report['tasks']} tasks")
            outputs = expected_outputs(CHAIN if shape == "chain" else INDEPENDENT, n)
            output_mtimes(workdir, outputs, f"{row.tool}, {row.case}")
        if workload == "W4":
            row.samples.append(sample(m, session_seconds=report["session_seconds"]))
        else:  # the session alone
            row.samples.append(
                {
                    "seconds": report["session_seconds"],
                    "process_seconds": m.seconds,
                    "maxrss_kib": float(m.maxrss_kib),
                    "tasks": report["tasks"],
                }
            )

    place = " memory" if memory else ""
    return Unit(f"{workload} {shape} {n}", f"scriptflow_trio{place}", repeat, measure, [row])


# -- the plan --------------------------------------------------------------------------------


@dataclass
class Sizes:
    w1: list[int]
    w4: list[int]
    w5: int
    snakemake_full_max: int  # above this, snakemake's W1 is not run (W2: harness outputs)
    snakemake_dry_max: int
    scriptflow_w1_max: int  # 0: scriptflow 0.2.13 gets no W1/W2
    scriptflow_hops: int


FULL = Sizes(
    w1=[1000, 10000],
    w4=[1, 10000, 100000],
    w5=10000,
    snakemake_full_max=1000,
    snakemake_dry_max=10000,
    scriptflow_w1_max=1000,
    scriptflow_hops=CHAIN_HOPS,
)
QUICK = Sizes(
    w1=[1000, 10000],
    w4=[1, 10000],
    w5=10000,
    snakemake_full_max=1000,
    snakemake_dry_max=10000,
    scriptflow_w1_max=0,
    scriptflow_hops=QUICK_SCRIPTFLOW_HOPS,
)


#: runs of each measurement (W1's also give W2's); the table shows their median
FULL_REPEATS = {"W0": 3, "W1": 3, "W3": 3, "W4": 3, "W5": 3}
#: the full run: more runs of the tools that take seconds on the workloads judged as a
#: ratio to make, whose medians of 3 moved by 20 % between runs of the same code
FAST_TOOLS = ("scriptflow_trio", "make", "xargs", "doit")
FULL_FAST_REPEATS = {"W0": 7, "W1": 7, "W3": 7}
#: --quick: what fits in a few minutes; W1 at 10,000 tasks is the slowest part
QUICK_REPEATS = {"W0": 3, "W1": 1, "W3": 2, "W4": 1, "W5": 2}


def plan(
    res: Results, tools: dict[str, Tool], only: set[str], quick: bool, repeat: int | None
) -> list[Unit]:
    sizes = QUICK if quick else FULL
    rounds = dict(QUICK_REPEATS if quick else FULL_REPEATS)
    fast = {} if quick else dict(FULL_FAST_REPEATS)
    if repeat is not None:
        rounds = {workload: repeat for workload in rounds}
        fast = {}
    order = [k for k in TOOL_KEYS if k in tools]
    units: list[Unit] = []

    def runs(workload: str, key: str) -> int:
        return fast.get(workload, rounds[workload]) if key in FAST_TOOLS else rounds[workload]

    def skip(workload: str, case: str, size: int, label: str, why: str) -> None:
        res.row(workload, case, size, label).skipped = why

    if "W0" in only:
        for key in order:
            if key != "xargs":
                units.append(w0_unit(res, tools[key], runs("W0", key)))
    if only & {"W1", "W2"}:
        for n in sizes.w1:
            for key in order:
                tool = tools[key]
                if key == "scriptflow" and n > sizes.scriptflow_w1_max:
                    why = (
                        "not run: about 109 s per 1,000 tasks"
                        if sizes.scriptflow_w1_max
                        else "not run in --quick: about 109 s per 1,000 tasks"
                    )
                    for workload in sorted({"W1", "W2"} & only):
                        what = f"{n_(n)} tasks" + (" up to date" if workload == "W2" else "")
                        skip(workload, what, n, tool.label, why)
                    continue
                noop_only = ""
                if key == "snakemake" and n > sizes.snakemake_full_max:
                    noop_only = (
                        "not run: too slow (one run of 10,000 with `--scheduler greedy` took 373 s)"
                    )
                units.append(w1_unit(res, tool, n, runs("W1", key), only, noop_only))
    if "W3" in only:
        hops_of = {key: CHAIN_HOPS for key in order if key != "xargs"}
        if "scriptflow" in hops_of:
            hops_of["scriptflow"] = sizes.scriptflow_hops
            if sizes.scriptflow_hops != CHAIN_HOPS and "make" in tools:
                hops_of["make (short chain)"] = sizes.scriptflow_hops
        for key, hops in hops_of.items():
            name = key.split()[0]
            units.append(w3_unit(res, tools[name], hops, runs("W3", name)))
    if "W4" in only:
        for n in sizes.w4:
            if "scriptflow_trio" in tools:
                units.append(engine_unit(res, "W4", "pending", n, True, rounds["W4"]))
                units.append(engine_unit(res, "W4", "independent", n, True, rounds["W4"]))
            for key in order:
                tool = tools[key]
                if tool.dry_argv is None:
                    continue
                if key == "snakemake" and n > sizes.snakemake_dry_max:
                    skip(
                        "W4",
                        f"{n_(n)} declared",
                        n,
                        tool.dry_label,
                        "not run: about 9 s at 10,000 and more than linear",
                    )
                    continue
                units.append(w4_dry_unit(res, tool, n, rounds["W4"]))
    if "W5" in only and "scriptflow_trio" in tools:
        memory = memory_directory()
        for shape, n in (("independent", sizes.w5), ("chain", CHAIN_HOPS), ("fanin", sizes.w5)):
            for store in (True, False):
                for place in (memory, None) if memory else (None,):
                    units.append(engine_unit(res, "W5", shape, n, store, rounds["W5"], place))
            if memory:
                floor = engine_unit(res, "W5", shape, n, False, rounds["W5"], memory, floor=True)
                units.append(floor)
    return units


def memory_directory() -> Path | None:
    """A tmpfs directory for W5's in-memory rows (``/dev/shm`` on Linux), if writable."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def warm_up(tools: dict[str, Tool], base: Path) -> None:
    """One untimed run of each tool on one task, so that no timed run is the first to
    read the tool's files from disk (or to write its bytecode).

    scriptflow_trio's bytecode is compiled first, as pip does when it installs a
    package: with PYTHONDONTWRITEBYTECODE set (as it is on some machines), every run
    would otherwise compile the package from source while the other tools, installed
    with pip, load theirs.
    """
    if "scriptflow_trio" in tools:
        compileall.compile_dir(str(package_root() / "scriptflow_trio"), quiet=1)
    for tool in tools.values():
        progress(f"warming up: {tool.key}")
        workdir = Path(tempfile.mkdtemp(prefix=f"warm-{tool.key}-", dir=base))
        tool.prepare(workdir, INDEPENDENT, 1)
        run_measured(
            tool.argv(INDEPENDENT),
            workdir,
            timeout=timeout_for(tool, 1),
            env=tool.env,
            stdin_path=workdir / tool.stdin_file if tool.stdin_file else None,
        )
        shutil.rmtree(workdir, ignore_errors=True)
    if "scriptflow_trio" in tools:
        workdir = Path(tempfile.mkdtemp(prefix="warm-engine-", dir=base))
        seed_directory(workdir, INDEPENDENT)
        run_measured(
            [sys.executable, str(HERE / "_engine.py"), "independent", "1"],
            workdir,
            timeout=120,
            env=repo_env(),
        )
        shutil.rmtree(workdir, ignore_errors=True)


def run_units(units: list[Unit], base: Path) -> None:
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group, []).append(unit)
    rounds = max((u.repeat for u in units), default=0)
    for rep in range(rounds):
        for name, members in groups.items():
            turn = rep % len(members)  # rotate who goes first
            for unit in members[turn:] + members[:turn]:
                if rep >= unit.repeat or unit.failed:
                    continue
                progress(f"[{rep + 1}/{unit.repeat}] {name}: {unit.key}")
                workdir = Path(tempfile.mkdtemp(prefix=f"{unit.key}-", dir=base))
                try:
                    unit.measure(workdir, rep)
                except (BenchmarkError, OSError, KeyError) as exc:
                    progress(f"FAILED: {exc}")
                    unit.failed = True
                    for row in unit.rows:
                        row.failure = str(exc).splitlines()[0]
                        row.notes.append(str(exc))
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)


# -- the table -------------------------------------------------------------------------------


def reference(res: Results, row: Row) -> Row | None:
    """make's row for the same workload and size."""
    if row.workload == "W4":
        return res.find("W4", row.case, "make -n")
    if row.workload == "W5":
        return None
    for candidate in res.rows.values():
        if (candidate.workload, candidate.case) == (
            row.workload,
            row.case,
        ) and candidate.tool == "make -j2":
            return candidate
    return None


def verdict(ok: bool, goal: str) -> str:
    return f"{'yes' if ok else 'no'} ({goal})"


def derive(res: Results) -> None:
    """Fill in each row's workload-specific result and, where a goal applies, its verdict."""
    for row in res.rows.values():
        if not row.ok:
            continue
        med = row.median()
        ref = reference(res, row)
        sf_trio = row.tool == "scriptflow_trio"
        if row.workload == "W0" and sf_trio:
            row.goal = verdict(med <= 0.2, "≤ 0.2 s")
        elif row.workload == "W1" and sf_trio and ref is not None and ref.ok:
            row.goal = verdict(med <= 1.5 * ref.median(), "≤ 1.5x make")
        elif row.workload == "W2" and sf_trio and row.size == 10000:
            row.goal = verdict(med < 0.5, "< 0.5 s")
        elif row.workload == "W3" and ref is not None and ref.ok and ref is not row:
            overhead = (med - ref.median()) / row.size * 1000
            row.result = f"{overhead:+.2f} ms/hop vs make"
            if sf_trio:
                row.goal = verdict(overhead <= 2, "≤ 2 ms/hop")
        elif row.workload == "W4" and row.size > 1:
            one = res.find("W4", "1 declared", row.tool)
            if one is not None and one.ok:
                per_task = (row.median("maxrss_kib") - one.median("maxrss_kib")) / row.size
                row.result = f"{per_task:.2f} KiB/task"
                if row.tool.startswith(ENGINE) and "pending" in row.tool:  # the goal's case
                    row.goal = verdict(per_task <= 2, "≤ 2 KiB/task")
        elif row.workload == "W5":
            tasks = row.samples[0]["tasks"]
            rate = tasks / med
            row.result = f"{rate:,.0f} tasks/s"
            floor = res.find("W5", row.case, FLOOR)
            if row.tool.startswith(ENGINE) and "in tmpfs" in row.tool:  # the engine's ceiling
                row.goal = verdict(rate >= 20000, "≥ 20,000 tasks/s")
                if floor is not None and floor.ok:  # measured in tmpfs too
                    row.result += f", {med / floor.median():.1f}x the floor"


def ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.3f}"


def cell_seconds(row: Row) -> str:
    if row.skipped:
        return "not run"
    if row.failure:
        return "**failed**"
    return f"{row.median():.3f}"


def ordered(res: Results) -> list[Row]:
    """By workload; within one, in the order measured (cases, then tools)."""
    return sorted(res.rows.values(), key=lambda r: WORKLOADS.index(r.workload))


def markdown(res: Results, meta: dict[str, Any]) -> str:
    lines = [
        f"scriptflow_trio {meta['revision']}, Python {meta['python']}, {meta['machine']}; "
        f"{meta['date']}; {meta['mode']}: medians of `runs` runs; {SLOTS} slots",
        "",
        "| workload | case | tool | runs | wall (s) | ms per task | peak RSS (MiB) "
        "| vs make | result | goal met? |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in ordered(res):
        if row.ok:
            med = row.median()
            per_task = ms(med / row.size * 1000)
            rss = f"{row.median('maxrss_kib') / 1024:.1f}"
            ref = reference(res, row)
            ratio = f"{med / ref.median():.2f}x" if ref is not None and ref.ok else ""
        else:
            per_task = rss = ratio = ""
        result = row.result or (row.skipped if row.skipped else "")
        if row.failure:
            result = f"failed: {row.failure}"
        lines.append(
            f"| {row.workload} | {row.case} | {row.tool} | {len(row.samples)} "
            f"| {cell_seconds(row)} "
            f"| {per_task} | {rss} | {ratio} | {result} | {row.goal} |"
        )
    return "\n".join(lines)


def short(tool: str) -> str:
    """What tells the engine's rows apart in one line."""
    if not tool.startswith(ENGINE):
        return ""
    inside = tool[tool.index("(") + 1 : tool.rindex(")")]
    if inside.startswith("FakeExecutor, "):  # W5: store or not, memory or disk
        return f" ({inside.removeprefix('FakeExecutor, ')})"
    return " (no store)" if "no store" in tool else " (store)"


def goals_summary(res: Results) -> str:
    lines = ["Goals (scriptflow_trio):", ""]
    for workload, goal in GOALS.items():
        rows = [r for r in res.rows.values() if r.workload == workload and r.goal]
        failed = [
            r
            for r in res.rows.values()
            if r.workload == workload and r.failure and r.tool.startswith("scriptflow_trio")
        ]
        if failed:
            lines.append(f"- {workload} {goal}: FAILED ({failed[0].case}: {failed[0].failure})")
            continue
        if not rows:
            lines.append(f"- {workload} {goal}: not measured")
            continue
        met = sum(r.goal.startswith("yes") for r in rows)
        status = "met" if met == len(rows) else "partly met" if met else "NOT met"
        what = "; ".join(
            f"{r.case}{short(r.tool)}: {r.result or f'{r.median():.3f} s'}" for r in rows
        )
        lines.append(f"- {workload} {goal}: {status} ({what})")
    return "\n".join(lines)


def notes(res: Results, tools: dict[str, Tool], missing: list[str]) -> str:
    lines = [
        "Notes:",
        "",
        "- wall: median wall time of the command, from its exec to its end (W5: of the "
        "session alone, inside the process); ms per task: wall / tasks (W3: / hops); "
        "vs make: wall / make's wall on the same case (W4: `make -n`).",
        "- peak RSS: `ru_maxrss` of the `os.wait4` that reaped the command: the largest RSS "
        "of its process and of every descendant it waited for (so at least that of its "
        f"biggest job); {floor_note()}.",
        "- W4 KiB/task: (peak RSS with N tasks - peak RSS with 1 task) / N.",
    ]
    for key in TOOL_KEYS:
        if key in tools and tools[key].note:
            lines.append(f"- {tools[key].label}: {tools[key].note}.")
    lines.append(
        "- scriptflow_trio's chain (W3) awaits each hop in turn, as a flow would; "
        "the engine rows use `_engine.py` with `FakeExecutor(slots=2)` and no UI."
    )
    if any("in tmpfs" in r.tool for r in res.rows.values()):
        lines.append(
            "- W5 runs each case on disk and in a tmpfs directory (`/dev/shm`); the goal "
            "is judged in memory: on this VM's disk, creating the one file per task that "
            "the FakeExecutor writes costs about 70 µs, more than the engine's own work."
        )
    if any("(outputs made by the harness)" in r.tool for r in res.rows.values()):
        lines.append(
            '- "outputs made by the harness": the harness created the outputs, the '
            "tool ran once untimed, then the timed no-op re-run (the tool's own "
            "records of a full run are absent, which makes it a little faster)."
        )
    lines += [f"- {m}" for m in missing]
    for row in res.rows.values():
        for note in row.notes:
            if row.failure and note.startswith(row.failure):
                lines.append(
                    f"- {row.tool}, {row.workload} {row.case}: failed:\n\n"
                    + "\n".join("      " + x for x in note.splitlines())
                )
            else:
                lines.append(f"- {row.tool}, {row.workload} {row.case}: {note}")
    return "\n".join(lines)


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def command_line(argv: Sequence[str]) -> str:
    """How this run was started, less the options that only say where files go."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--json", "--cache"):
            skip = True
        elif not arg.startswith(("--json=", "--cache=")):
            kept.append(arg)
    return " ".join(["python benchmarks/run.py", *kept])


def write_readme(readme: Path, meta: dict[str, Any], document: str) -> None:
    """Replace what lies between the README's results markers with ``document``."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise BenchmarkError(f"{readme} has no {BEGIN} ... {END} section")
    section = (
        f"Taken on {meta['date']} with `{meta['command']}`, on {meta['machine']} "
        f"({meta['platform']}), Python {meta['python']}, {meta['make']}; "
        f"scriptflow_trio {meta['revision']}.\n\n{document}\n"
    )
    # paths of this machine have no place in the README
    for path, name in ((str(HERE.parent), "<repo>"), (tempfile.gettempdir(), "<tmp>")):
        section = section.replace(path, name)
    readme.write_text(text[: start + len(BEGIN)] + "\n" + section + text[end:])


def json_data(res: Results, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "goals": GOALS,
        "rows": [
            {
                "workload": r.workload,
                "case": r.case,
                "size": r.size,
                "tool": r.tool,
                "samples": r.samples,
                "median_seconds": r.median() if r.ok else None,
                "median_maxrss_kib": r.median("maxrss_kib") if r.ok else None,
                "result": r.result,
                "goal": r.goal,
                "failure": r.failure,
                "skipped": r.skipped,
                "notes": r.notes,
            }
            for r in res.rows.values()
        ],
    }


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats (1 for W1/W2, 2 for the rest), W4 up to 10,000, "
        f"scriptflow 0.2.13 only on W0 and a chain of {QUICK_SCRIPTFLOW_HOPS}",
    )
    p.add_argument(
        "--repeat",
        type=int,
        metavar="R",
        help="runs of every measurement (default: 3, --quick: 1-2)",
    )
    p.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        metavar="W1,W3",
        help="the workloads to run (default: all)",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOL_KEYS),
        metavar="TOOL,...",
        help=f"the tools to run (default: all of {', '.join(TOOL_KEYS)})",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=HERE / "results" / "latest.json",
        metavar="PATH",
        help="where the raw numbers go (default: benchmarks/results/latest.json)",
    )
    p.add_argument(
        "--write-readme",
        action="store_true",
        help="also replace the results section of benchmarks/README.md with the output",
    )
    p.add_argument(
        "--commit",
        metavar="REV",
        help="measure scriptflow_trio as this commit has it (exported with git archive), "
        "not the working tree",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        metavar="DIR",
        help="where the tools' venvs are kept and reused (default: %(default)s)",
    )
    args = p.parse_args(argv)
    args.only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    args.tools = {t.strip() for t in args.tools.split(",") if t.strip()}
    if args.only - set(WORKLOADS):
        p.error(f"--only: unknown {', '.join(sorted(args.only - set(WORKLOADS)))}")
    if args.tools - set(TOOL_KEYS):
        p.error(f"--tools: unknown {', '.join(sorted(args.tools - set(TOOL_KEYS)))}")
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be 1 or more")
    return args


def available_tools(args: argparse.Namespace) -> tuple[dict[str, Tool], list[str]]:
    """The tools asked for, installing the optional ones; notes on those skipped."""
    tools = {
        t.key: t for t in (scriptflow_trio_tool(), make_tool(), xargs_tool()) if t.key in args.tools
    }
    missing: list[str] = []
    for key, package, version, check, factory in OPTIONAL:
        if key not in args.tools:
            continue
        venv = install_in_venv(args.cache, package, version, check)
        if venv is None:
            missing.append(f"{package} {version}: skipped, it could not be installed")
        else:
            tools[key] = factory(venv)
    return tools, missing


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.system()} {platform.machine()}, {cores} cores"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="sf-bench-"))
    try:
        return measure_all(args, argv, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure_all(args: argparse.Namespace, argv: Sequence[str] | None, base: Path) -> int:
    if args.commit:
        (base / "src").mkdir()
        revision = export_commit(args.commit, base / "src")
        where = f"commit {revision}, exported with git archive"
    else:
        revision = scriptflow_trio_revision()
        where = f"the working tree of {HERE.parent}"
    check_prerequisites()
    tools, missing = available_tools(args)
    res = Results()
    units = plan(res, tools, args.only, args.quick, args.repeat)
    meta = {
        "revision": revision,
        "python": platform.python_version(),
        "machine": machine(),
        "platform": platform.platform(),
        "date": datetime.date.today().isoformat(),
        "mode": "--quick" if args.quick else "full run",
        "max_repeat": max((u.repeat for u in units), default=0),
        "slots": SLOTS,
        "make": subprocess.run(
            ["make", "--version"], capture_output=True, text=True, env=clean_env()
        ).stdout.splitlines()[0],
        "command": command_line(sys.argv[1:] if argv is None else argv),
    }
    progress(f"measuring scriptflow_trio {revision}: {where}")
    warm_up(tools, base)
    run_units(units, base)
    derive(res)
    document = "\n\n".join([markdown(res, meta), goals_summary(res), notes(res, tools, missing)])
    print(document)
    if args.write_readme:
        write_readme(HERE / "README.md", meta, document)
        progress(f"wrote the results into {HERE / 'README.md'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(json_data(res, meta), indent=1) + "\n")
    progress(f"raw numbers: {args.json}")
    failed = [r for r in res.rows.values() if r.failure]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        progress(f"error: {exc}")
        sys.exit(2)
