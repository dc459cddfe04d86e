"""Throughput benchmark: many tiny independent tasks, two parallel slots.

Every tool runs the same N one-process tasks -- ``touch out/I.txt`` for I in
0..N-1 -- with 2 slots, each in a fresh temporary directory:

* scriptflow_trio: ``python -m scriptflow_trio flows.py bench -j 2 --plain -q``,
  where the generated ``flows.py`` awaits ``sf.bag(*tasks)``;
* ``xargs -P2 -n1 touch`` fed the list of files;
* ``make -j2`` with a generated Makefile, one target (and one recipe) per file;
* optionally snakemake 9.27.1 (``--with-snakemake``): a generated Snakefile with
  a target rule ``all`` whose inputs are the N outputs and one rule with output
  ``out/{i}.txt`` and ``shell: "touch {output}"``, run as
  ``snakemake --cores 2 --quiet all`` (``--quiet all`` prints nothing at all;
  the scheduler is snakemake's default, ``ilp``);
* optionally doit 0.37.0 (``--with-pydoit``): a generated ``dodo.py`` with one
  task per file (``actions: ["touch out/I.txt"]``, ``targets: ["out/I.txt"]``,
  ``uptodate: [True]``), run as ``doit -n 2 -P process -r error-only``. Without
  ``uptodate: [True]`` doit runs a task that has no ``file_dep`` every time, so
  its no-op re-run would redo all N tasks; with it, a task is up to date when its
  target exists, which is make's rule for a target without prerequisites;
* optionally scriptflow 0.2.13 (``--with-scriptflow``). It is very slow (about
  109 s for 1,000 tasks), so it is off by default. scriptflow 0.2.13 sends an
  HTTP request to its author's server whenever its counters change, and without
  network access its main loop dies on the failed request and the run hangs; so
  it is run through a small wrapper that replaces that method
  (``Controller.notify``) with a no-op, and its row says so.

The optional tools are installed with pip, each into a virtual environment of
its own under ``--cache DIR`` (default: a folder in the system's temporary
directory), which later runs reuse; a tool that cannot be installed is skipped
with a note.

Right after the full run, every tool but xargs is run again in the same
directory, where every output is up to date: those are the "no-op re-run" rows.

``--no-op-only`` times only the no-op re-runs, for every tool or for the tools
it names (``--no-op-only snakemake``). Such a tool's directory gets its outputs
from ``make -j2`` (untimed), then the tool is run once untimed (it finds
everything up to date), then the timed re-run follows; its row says "outputs
made by make". That row can differ from a real no-op re-run: the tool's own
records of a full run (snakemake's ``.snakemake/metadata``, doit's ``.doit.db``,
scriptflow_trio's store) are not there. It exists for snakemake at 10,000 tasks:
with its default scheduler, its full run had made 2,233 of the 10,000 outputs
after 15 minutes.

The tools are run interleaved, ``--repeat`` times; the table shows the median
wall time of each. After every run each output file must exist (the benchmark
stops with an error if one does not), and a no-op re-run must leave every
output's mtime unchanged (a warning is printed if it does not).

Run from the repository root, with scriptflow_trio importable by this Python::

    python benchmarks/throughput.py                       # 1,000 tasks, 3 repeats
    python benchmarks/throughput.py -n 200 --repeat 5 --json results.json
    python benchmarks/throughput.py --with-snakemake --with-pydoit
    python benchmarks/throughput.py -n 10000 --repeat 1 --with-snakemake \\
        --with-pydoit --no-op-only snakemake
    python benchmarks/throughput.py --with-scriptflow     # adds scriptflow 0.2.13

Only the standard library is used (plus ``make`` and ``xargs`` on the PATH, and
pip for the optional tools).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SLOTS = 2
FLOW_NAME = "bench"
SCRIPTFLOW_VERSION = "0.2.13"
SNAKEMAKE_VERSION = "9.27.1"
DOIT_VERSION = "0.37.0"
MAKE_FULL = "make -j2"
MAKE_NOOP = "make -j2 (no-op re-run)"
#: what --no-op-only accepts: every tool that has a no-op re-run, or all of them
NOOP_KEYS = {"all", "scriptflow_trio", "make", "snakemake", "doit", "scriptflow"}


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


SNAKEFILE_TEMPLATE = """\
rule all:
    input: [f"out/{{i}}.txt" for i in range({n})]

rule touch:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def snakefile_source(n: int) -> str:
    """A Snakefile: target rule ``all`` needs the N outputs; one rule makes ``out/{i}.txt``."""
    return SNAKEFILE_TEMPLATE.format(n=n)


DODO_TEMPLATE = """\
def task_touch():
    for i in range({n}):
        out = f"out/{{i}}.txt"
        # uptodate=[True]: up to date once the target exists (make's rule); without it
        # doit reruns every task that has no file_dep.
        yield {{"name": str(i), "actions": [f"touch {{out}}"], "targets": [out],
               "uptodate": [True]}}
"""


def dodo_source(n: int) -> str:
    """A dodo.py with one doit task per output file."""
    return DODO_TEMPLATE.format(n=n)


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
    key: str = ""  # the name --no-op-only knows the tool by

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.name.split()[0]


def prepare_scriptflow_trio(workdir: Path, n: int) -> None:
    (workdir / "flows.py").write_text(flows_source("scriptflow_trio", n))


def prepare_xargs(workdir: Path, n: int) -> None:
    (workdir / "files.txt").write_text("\n".join(output_names(n)) + "\n")


def prepare_make(workdir: Path, n: int) -> None:
    (workdir / "Makefile").write_text(makefile_source(output_names(n)))


def prepare_snakemake(workdir: Path, n: int) -> None:
    (workdir / "Snakefile").write_text(snakefile_source(n))


def prepare_doit(workdir: Path, n: int) -> None:
    (workdir / "dodo.py").write_text(dodo_source(n))


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


def snakemake_tool(venv: Path) -> Tool:
    exe = str(venv / "bin" / "snakemake")
    return Tool(f"snakemake {SNAKEMAKE_VERSION} --cores {SLOTS}", prepare_snakemake,
                lambda d: [exe, "--cores", str(SLOTS), "--quiet", "all"],
                timeout_per_task=1.0,
                noop_name=f"snakemake {SNAKEMAKE_VERSION} (no-op re-run)")


def doit_tool(venv: Path) -> Tool:
    exe = str(venv / "bin" / "doit")
    return Tool(f"doit {DOIT_VERSION} -n {SLOTS}", prepare_doit,
                lambda d: [exe, "-n", str(SLOTS), "-P", "process", "-r", "error-only"],
                noop_name=f"doit {DOIT_VERSION} (no-op re-run)")


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "scriptflow-trio-bench-venvs"


def install_in_venv(cache: Path, package: str, version: str, check: Sequence[str]) -> Path | None:
    """``package==version`` in a venv of its own under ``cache``, reused if already there.

    ``check`` is an argv (its first item relative to the venv's ``bin``) that must exit 0
    once the package is installed. Returns None, with a note, if the install fails.
    """
    tag = f"py{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache / f"{package}-{version}-{tag}"
    marker = venv / ".benchmark-installed"
    requirement = f"{package}=={version}"
    check_argv = [str(venv / "bin" / check[0]), *check[1:]]
    if marker.exists() and marker.read_text().strip() == requirement:
        if subprocess.run(check_argv, capture_output=True).returncode == 0:
            print(f"using {requirement} from the cache ({venv})", file=sys.stderr)
            return venv
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing {requirement} into a venv ({venv})...", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", requirement],
        check_argv,
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"note: could not install {requirement}; skipping it.\n"
                  f"  {' '.join(argv[:3])} ... exited {proc.returncode}:\n"
                  f"{_tail(proc.stdout + proc.stderr)}", file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            return None
    marker.write_text(requirement + "\n")
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


def run_in_own_session(argv: list[str], cwd: Path, stdin: IO[bytes], timeout: float
                       ) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a new session, whose every process is killed on a time-out
    (snakemake's shell jobs and solver, doit's workers would outlive the tool itself)."""
    with subprocess.Popen(argv, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=clean_env(),
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def timed_run(tool: Tool, workdir: Path, n: int) -> float:
    """Run the tool's command in ``workdir``; return the wall time in seconds."""
    argv = tool.argv(workdir)
    timeout = 60 + tool.timeout_per_task * n
    stdin_path = workdir / tool.stdin_file if tool.stdin_file else Path(os.devnull)
    try:
        with open(stdin_path, "rb") as stdin:
            start = time.perf_counter()
            proc = run_in_own_session(argv, cwd=workdir, stdin=stdin, timeout=timeout)
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


MAKE_PREPARED = "(no-op re-run, outputs made by make)"


def make_prepared_name(tool: Tool) -> str:
    """The row of a no-op re-run whose outputs make created (make's own row stays)."""
    assert tool.noop_name is not None
    if tool.noop_name == MAKE_NOOP:
        return MAKE_NOOP
    return tool.noop_name.replace("(no-op re-run)", MAKE_PREPARED)


def make_tool() -> Tool:
    return next(tool for tool in base_tools() if tool.name == MAKE_FULL)


def warn_if_rewritten(name: str, outputs: Sequence[str], before: dict[str, int],
                      after: dict[str, int]) -> None:
    touched = [out for out in outputs if after[out] != before[out]]
    if touched:
        print(f"warning: {name}: {len(touched)} of {len(outputs)} outputs were rewritten "
              f"by a re-run that should have done nothing (e.g. {touched[0]})",
              file=sys.stderr)


def run_tool(tool: Tool, base: Path, n: int, rep: int, noop_only: bool = False
             ) -> dict[str, float]:
    """One measurement of a tool (and of its no-op re-run) in a fresh directory.

    With ``noop_only`` the full run is not timed: make creates the outputs, the tool
    runs once untimed, and only its second, no-op run is timed.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{tool.key}-{rep}-", dir=base))
    (workdir / "out").mkdir()
    tool.prepare(workdir, n)
    outputs = output_names(n)
    times: dict[str, float] = {}
    if noop_only:
        assert tool.noop_name is not None
        make = make_tool()
        make.prepare(workdir, n)
        timed_run(make, workdir, n)
        before = output_mtimes(workdir, outputs, f"{MAKE_FULL} (preparing {tool.name})")
        noop_name = make_prepared_name(tool)
        timed_run(tool, workdir, n)  # first contact: finds every output up to date
        warn_if_rewritten(f"{noop_name}, untimed first run", outputs, before,
                          output_mtimes(workdir, outputs, noop_name))
        times[noop_name] = timed_run(tool, workdir, n)
        warn_if_rewritten(noop_name, outputs, before, output_mtimes(workdir, outputs, noop_name))
    else:
        times[tool.name] = timed_run(tool, workdir, n)
        before = output_mtimes(workdir, outputs, tool.name)
        if tool.noop_name:
            times[tool.noop_name] = timed_run(tool, workdir, n)
            after = output_mtimes(workdir, outputs, tool.noop_name)
            warn_if_rewritten(tool.noop_name, outputs, before, after)
    shutil.rmtree(workdir)
    return times


# -- results ---------------------------------------------------------------------------------


@dataclass
class Results:
    tasks: int
    repeat: int
    no_op_only: set[str] = field(default_factory=set)
    revision: str = ""  # of the scriptflow_trio measured
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
        f"median of {results.repeat} runs"
        + (f"; scriptflow_trio at {results.revision}" if results.revision else ""),
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
    if any(MAKE_PREPARED in name for name in results.order):
        lines += [
            "Rows marked \"outputs made by make\": the tool's full run was not timed; "
            "make created the outputs, the tool ran once untimed, then this re-run was "
            "timed (so the tool's own records of a full run are absent)."
        ]
    return "\n".join(lines)


def scriptflow_trio_revision() -> str:
    """The commit of the scriptflow_trio that the runs import, "+dirty" if its working tree
    has changes ("" if that is not a git checkout)."""
    code = "import os, scriptflow_trio as m; print(os.path.dirname(m.__file__))"
    # run from elsewhere, like the tools: from the repository root "." would come first
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=clean_env(), cwd=tempfile.gettempdir())
    if probe.returncode != 0:
        return ""
    root = Path(probe.stdout.strip())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("+dirty" if dirty.strip() else "")


def write_json(path: Path, results: Results) -> None:
    data = {
        "tasks": results.tasks,
        "slots": SLOTS,
        "repeat": results.repeat,
        "command": "touch out/I.txt",
        "no_op_only": sorted(results.no_op_only),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "revision": results.revision,
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
    p.add_argument("--with-snakemake", action="store_true",
                   help=f"also run snakemake {SNAKEMAKE_VERSION} (installs it in a venv)")
    p.add_argument("--with-pydoit", action="store_true",
                   help=f"also run doit {DOIT_VERSION} (installs it in a venv)")
    p.add_argument("--cache", type=Path, default=default_cache(), metavar="DIR",
                   help="where the venvs of the optional tools are kept and reused "
                        "(default: %(default)s)")
    p.add_argument("--no-op-only", nargs="?", const="all", default="", metavar="TOOL,...",
                   help="time only the no-op re-runs, of every tool or of the named ones "
                        "(e.g. snakemake): make creates the outputs, the tool runs once "
                        "untimed, then the timed re-run; xargs, which has no no-op run, "
                        "is left out when it is covered")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        p.error("--tasks and --repeat must be 1 or more")
    args.no_op_only = {key for key in args.no_op_only.split(",") if key}
    unknown = args.no_op_only - NOOP_KEYS
    if unknown:
        p.error(f"--no-op-only: unknown tool(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(NOOP_KEYS))}")
    return args


def check_prerequisites() -> None:
    for exe in ("make", "xargs", "touch"):
        if shutil.which(exe) is None:
            raise BenchmarkError(f"`{exe}` is not on the PATH")
    probe = subprocess.run([sys.executable, "-c", "import scriptflow_trio"], capture_output=True)
    if probe.returncode != 0:
        raise BenchmarkError(f"scriptflow_trio is not importable by {sys.executable}")


def optional_tools(args: argparse.Namespace) -> list[Tool]:
    """The optional tools asked for that could be installed."""
    wanted = [
        (args.with_snakemake, "snakemake", SNAKEMAKE_VERSION, ["snakemake", "--version"],
         snakemake_tool),
        (args.with_pydoit, "doit", DOIT_VERSION, ["doit", "--version"], doit_tool),
        (args.with_scriptflow, "scriptflow", SCRIPTFLOW_VERSION,
         ["python", "-c", "import scriptflow.cli"], scriptflow_tool),
    ]
    tools = []
    for asked, package, version, check, make in wanted:
        if asked:
            venv = install_in_venv(args.cache, package, version, check)
            if venv is not None:
                tools.append(make(venv))
    return tools


def noop_only_for(tool: Tool, keys: set[str]) -> bool:
    return "all" in keys or tool.key in keys


def run_benchmark(args: argparse.Namespace, base: Path) -> Results:
    tools = base_tools() + optional_tools(args)
    # a tool with no no-op run (xargs) has nothing to time in --no-op-only mode
    tools = [tool for tool in tools
             if not (noop_only_for(tool, args.no_op_only) and tool.noop_name is None)]
    results = Results(args.tasks, args.repeat, args.no_op_only, scriptflow_trio_revision())
    for rep in range(args.repeat):
        for tool in tools:
            noop_only = noop_only_for(tool, args.no_op_only)
            what = " (no-op re-run only)" if noop_only else ""
            print(f"[{rep + 1}/{args.repeat}] {tool.name}{what}...", file=sys.stderr, flush=True)
            results.add(run_tool(tool, base, args.tasks, rep, noop_only))
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
