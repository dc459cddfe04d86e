"""Throughput benchmark: many tiny independent tasks, two parallel slots.

Every tool runs the same N one-process tasks -- ``touch out/I.txt`` for I in
0..N-1 -- with 2 slots, each in a fresh temporary directory:

* scriptflow_trio: ``python -m scriptflow_trio flows.py bench -j 2 --plain -q``,
  where the generated ``flows.py`` awaits ``sf.bag(*tasks)``;
* ``xargs -P2 -n1 touch`` fed the list of files;
* ``make -j2`` with a generated Makefile, one target (and one recipe) per file;
* optionally scriptflow 0.2.13 (``--with-scriptflow``), installed with pip into
  its own venv under the temporary directory. It is very slow (about 109 s for
  1,000 tasks), so it is off by default; if it cannot be installed it is skipped.
  scriptflow 0.2.13 sends an HTTP request to its author's server whenever its
  counters change, and without network access its main loop dies on the failed
  request and the run hangs; so it is run through a small wrapper that replaces
  that method (``Controller.notify``) with a no-op, and its row says so.

Right after the full run, scriptflow_trio and make are run again in the same
directory, where every output is up to date: those are the "no-op re-run" rows.

The tools are run interleaved, ``--repeat`` times; the table shows the median
wall time of each. After every run each output file must exist (the benchmark
stops with an error if one does not), and a no-op re-run must leave every
output's mtime unchanged (a warning is printed if it does not).

Run from the repository root, with scriptflow_trio importable by this Python::

    python benchmarks/throughput.py                       # 1,000 tasks, 3 repeats
    python benchmarks/throughput.py -n 200 --repeat 5 --json results.json
    python benchmarks/throughput.py --with-scriptflow     # adds scriptflow 0.2.13

Only the standard library is used (plus ``make`` and ``xargs`` on the PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 2
FLOW_NAME = "bench"
SCRIPTFLOW_VERSION = "0.2.13"
MAKE_FULL = "make -j2"
MAKE_NOOP = "make -j2 (no-op re-run)"


class BenchmarkError(RuntimeError):
    """A tool failed, or did not produce what it should have."""


# -- what every tool runs -------------------------------------------------------------


def output_names(n: int) -> list[str]:
    """The files the tasks create, relative to the tool's directory."""
    return [f"out/{i}.txt" for i in range(n)]


def task_command(output: str) -> str:
    """The one command every tool runs for one task."""
    return f"touch {output}"


# -- generated inputs for each tool ------------------------------------------------------


FLOWS_TEMPLATE = """\
import {module} as sf
{init}

async def flow_{name}():
    tasks = [
        sf.Task(cmd=f"touch out/{{i}}.txt", outputs=f"out/{{i}}.txt", name=f"t{{i}}")
        for i in range({n})
    ]
    await sf.bag(*tasks)
"""


def flows_source(module: str, n: int, init: str = "") -> str:
    """A flows file whose flow ``bench`` awaits the N tasks with ``sf.bag``."""
    return FLOWS_TEMPLATE.format(module=module, init=init, name=FLOW_NAME, n=n)


def makefile_source(outputs: Sequence[str]) -> str:
    """A Makefile with one explicit target per output file."""
    lines = [".PHONY: all", "all: " + " ".join(outputs), ""]
    for out in outputs:
        lines += [f"{out}:", f"\t{task_command(out)}", ""]
    return "\n".join(lines)


# -- tools ---------------------------------------------------------------------------------


@dataclass
class Tool:
    """How to prepare a directory for a tool and the command that runs the N tasks."""

    name: str
    prepare: Callable[[Path, int], None]
    argv: Callable[[Path], list[str]]
    stdin_file: str | None = None
    timeout_per_task: float = 0.1  # seconds; the run fails after 60 s plus this per task
    noop_name: str | None = None  # if set, also time a re-run with everything up to date


def prepare_scriptflow_trio(workdir: Path, n: int) -> None:
    (workdir / "flows.py").write_text(flows_source("scriptflow_trio", n))


def prepare_xargs(workdir: Path, n: int) -> None:
    (workdir / "files.txt").write_text("\n".join(output_names(n)) + "\n")


def prepare_make(workdir: Path, n: int) -> None:
    (workdir / "Makefile").write_text(makefile_source(output_names(n)))


def prepare_scriptflow(workdir: Path, n: int) -> None:
    init = f'sf.init({{"executors": {{"local": {{"maxsize": {SLOTS}}}}}, "debug": False}})\n'
    (workdir / "sflow.py").write_text(flows_source("scriptflow", n, init))


def base_tools() -> list[Tool]:
    return [
        Tool(
            "scriptflow_trio",
            prepare_scriptflow_trio,
            lambda d: [sys.executable, "-m", "scriptflow_trio", "flows.py", FLOW_NAME,
                       "-j", str(SLOTS), "--plain", "-q"],
            noop_name="scriptflow_trio (no-op re-run)",
        ),
        Tool("xargs -P2", prepare_xargs,
             lambda d: ["xargs", f"-P{SLOTS}", "-n1", "touch"], stdin_file="files.txt"),
        Tool(MAKE_FULL, prepare_make, lambda d: ["make", f"-j{SLOTS}"], noop_name=MAKE_NOOP),
    ]


SCRIPTFLOW_WRAPPER = """\
import sys
import scriptflow.core
from scriptflow.cli import cli

scriptflow.core.Controller.notify = lambda self, running, capacity: None  # no phoning home
sys.exit(cli())
"""


def scriptflow_tool(venv: Path) -> Tool:
    wrapper = venv / "run_scriptflow.py"
    wrapper.write_text(SCRIPTFLOW_WRAPPER)
    python = venv / "bin" / "python"
    return Tool(f"scriptflow {SCRIPTFLOW_VERSION} (notify stubbed)", prepare_scriptflow,
                lambda d: [str(python), str(wrapper), "run", FLOW_NAME],
                timeout_per_task=1.0)


def install_scriptflow(base: Path) -> Path | None:
    """Install scriptflow into a venv under ``base``; None (with a note) if that fails."""
    venv = base / "scriptflow-venv"
    print(f"installing scriptflow=={SCRIPTFLOW_VERSION} into a venv...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", f"scriptflow=={SCRIPTFLOW_VERSION}"],
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"note: could not install scriptflow {SCRIPTFLOW_VERSION}; skipping it.\n"
                  f"  {' '.join(argv[:3])} ... exited {proc.returncode}:\n"
                  f"{_tail(proc.stdout + proc.stderr)}", file=sys.stderr)
            return None
    return venv


# -- running and checking ------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment for the tools, without an enclosing make's flags."""
    env = dict(os.environ)
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES"):
        env.pop(key, None)
    return env


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def timed_run(tool: Tool, workdir: Path, n: int) -> float:
    """Run the tool's command in ``workdir``; return the wall time in seconds."""
    argv = tool.argv(workdir)
    timeout = 60 + tool.timeout_per_task * n
    stdin_path = workdir / tool.stdin_file if tool.stdin_file else Path(os.devnull)
    try:
        with open(stdin_path, "rb") as stdin:
            start = time.perf_counter()
            proc = subprocess.run(argv, cwd=workdir, stdin=stdin, capture_output=True,
                                  text=True, env=clean_env(), timeout=timeout)
            elapsed = time.perf_counter() - start
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise BenchmarkError(
            f"{tool.name}: `{' '.join(argv)}` did not finish within {timeout:.0f} s in "
            f"{workdir}:\n{_tail(output)}") from None
    if proc.returncode != 0:
        raise BenchmarkError(
            f"{tool.name}: `{' '.join(argv)}` exited {proc.returncode} in {workdir}:\n"
            f"{_tail(proc.stdout + proc.stderr)}")
    return elapsed


def output_mtimes(workdir: Path, outputs: Sequence[str], tool: str) -> dict[str, int]:
    """Every output's mtime; fail loudly if one is missing."""
    mtimes: dict[str, int] = {}
    missing: list[str] = []
    for out in outputs:
        try:
            mtimes[out] = (workdir / out).stat().st_mtime_ns
        except FileNotFoundError:
            missing.append(out)
    if missing:
        raise BenchmarkError(
            f"{tool}: {len(missing)} of {len(outputs)} output files missing in {workdir}, "
            f"e.g. {', '.join(missing[:5])}")
    return mtimes


def run_tool(tool: Tool, base: Path, n: int, rep: int) -> dict[str, float]:
    """One measurement of a tool (and of its no-op re-run) in a fresh directory."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{tool.name.split()[0]}-{rep}-", dir=base))
    (workdir / "out").mkdir()
    tool.prepare(workdir, n)
    outputs = output_names(n)
    times = {tool.name: timed_run(tool, workdir, n)}
    before = output_mtimes(workdir, outputs, tool.name)
    if tool.noop_name:
        times[tool.noop_name] = timed_run(tool, workdir, n)
        after = output_mtimes(workdir, outputs, tool.noop_name)
        touched = [out for out in outputs if after[out] != before[out]]
        if touched:
            print(f"warning: {tool.noop_name}: {len(touched)} of {n} outputs were rewritten "
                  f"by a re-run that should have done nothing (e.g. {touched[0]})",
                  file=sys.stderr)
    shutil.rmtree(workdir)
    return times


# -- results ---------------------------------------------------------------------------------


@dataclass
class Results:
    tasks: int
    repeat: int
    order: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, times: dict[str, float]) -> None:
        for name, seconds in times.items():
            if name not in self.samples:
                self.order.append(name)
                self.samples[name] = []
            self.samples[name].append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


def reference_for(name: str) -> str:
    """No-op rows are compared with make's no-op re-run, full runs with make's full run."""
    return MAKE_NOOP if "no-op" in name else MAKE_FULL


def ordered_rows(results: Results) -> list[str]:
    full = [name for name in results.order if "no-op" not in name]
    noop = [name for name in results.order if "no-op" in name]
    return full + noop


def markdown_table(results: Results) -> str:
    lines = [
        f"{results.tasks} tasks (`touch out/I.txt`), {SLOTS} slots, "
        f"median of {results.repeat} runs",
        "",
        "| tool | median wall time (s) | ms per task | ratio to make |",
        "|---|---:|---:|---:|",
    ]
    for name in ordered_rows(results):
        med = results.median(name)
        ref = reference_for(name)
        ratio = f"{med / results.median(ref):.1f}x" if ref in results.samples else "n/a"
        lines.append(f"| {name} | {med:.3f} | {med / results.tasks * 1000:.3f} | {ratio} |")
    lines += ["", "Ratios of no-op re-runs are relative to make's no-op re-run."]
    return "\n".join(lines)


def write_json(path: Path, results: Results) -> None:
    data = {
        "tasks": results.tasks,
        "slots": SLOTS,
        "repeat": results.repeat,
        "command": "touch out/I.txt",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tools": {
            name: {
                "seconds": results.samples[name],
                "median_seconds": results.median(name),
                "ms_per_task": results.median(name) / results.tasks * 1000,
            }
            for name in ordered_rows(results)
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--tasks", type=int, default=1000, metavar="N",
                   help="number of tasks (default: 1000)")
    p.add_argument("--repeat", type=int, default=3, metavar="R",
                   help="runs of each tool; the median is reported (default: 3)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the raw numbers here")
    p.add_argument("--with-scriptflow", action="store_true",
                   help=f"also run scriptflow {SCRIPTFLOW_VERSION} (slow; installs it in a venv)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        p.error("--tasks and --repeat must be 1 or more")
    return args


def check_prerequisites() -> None:
    for exe in ("make", "xargs", "touch"):
        if shutil.which(exe) is None:
            raise BenchmarkError(f"`{exe}` is not on the PATH")
    probe = subprocess.run([sys.executable, "-c", "import scriptflow_trio"], capture_output=True)
    if probe.returncode != 0:
        raise BenchmarkError(f"scriptflow_trio is not importable by {sys.executable}")


def run_benchmark(args: argparse.Namespace, base: Path) -> Results:
    tools = base_tools()
    if args.with_scriptflow:
        venv = install_scriptflow(base)
        if venv is not None:
            tools.append(scriptflow_tool(venv))
    results = Results(args.tasks, args.repeat)
    for rep in range(args.repeat):
        for tool in tools:
            print(f"[{rep + 1}/{args.repeat}] {tool.name}...", file=sys.stderr, flush=True)
            results.add(run_tool(tool, base, args.tasks, rep))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base: Path | None = None
    try:
        check_prerequisites()
        base = Path(tempfile.mkdtemp(prefix="sf-throughput-"))
        results = run_benchmark(args, base)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if base is not None:
            print(f"(kept {base} for inspection)", file=sys.stderr)
        return 1
    except BaseException:
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
        raise
    shutil.rmtree(base, ignore_errors=True)
    print(markdown_table(results))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
