"""What the benchmarks compare: each tool's generated inputs, its commands, its install.

Shared by ``run.py`` (the entry point). Only the standard library is used here: the
harness must not depend on what it measures.

Two task shapes are generated for every tool:

* ``independent``: N tasks, task I runs ``touch out/I.txt`` and declares that output;
* ``chain``: H tasks, task I (1..H) runs ``cp c/{I-1}.txt c/{I}.txt`` with the
  previous file as its input; the harness writes ``c/0.txt`` before the run.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 2
SCRIPTFLOW_VERSION = "0.2.13"
SNAKEMAKE_VERSION = "9.27.1"
DOIT_VERSION = "0.37.0"
#: the root of the repository this file lives in: the scriptflow_trio that is measured
REPO = Path(__file__).resolve().parent.parent

INDEPENDENT = "independent"
CHAIN = "chain"
#: the flow (or target) name of each shape, in the generated files
FLOW_NAMES = {INDEPENDENT: "bench", CHAIN: "chain"}


class BenchmarkError(RuntimeError):
    """A tool failed, or did not produce what it should have."""


# -- the task shapes -------------------------------------------------------------------


def expected_outputs(shape: str, n: int) -> list[str]:
    """The files the N tasks of ``shape`` create, relative to the tool's directory."""
    if shape == INDEPENDENT:
        return [f"out/{i}.txt" for i in range(n)]
    return [f"c/{i}.txt" for i in range(1, n + 1)]


def seed_directory(workdir: Path, shape: str) -> None:
    """What exists before any tool runs: ``out/``, or ``c/0.txt`` for the chain."""
    if shape == INDEPENDENT:
        (workdir / "out").mkdir()
    else:
        (workdir / "c").mkdir()
        (workdir / "c" / "0.txt").write_text("seed of the chain\n")


# -- generated inputs for each tool ------------------------------------------------------

FLOWS_TEMPLATE = """\
import {module} as sf
{init}

async def flow_bench():
    tasks = [
        sf.Task(cmd=f"touch out/{{i}}.txt", outputs=f"out/{{i}}.txt", name=f"t{{i}}")
        for i in range({n})
    ]
    await sf.bag(*tasks)


async def flow_chain():
    # the natural "flow is Python" form: await each hop in turn
    for i in range(1, {n} + 1):
        await sf.Task(
            cmd=f"cp c/{{i - 1}}.txt c/{{i}}.txt",
            inputs=f"c/{{i - 1}}.txt",
            outputs=f"c/{{i}}.txt",
            name=f"c{{i}}",
        )
"""

SCRIPTFLOW_INIT = f'sf.init({{"executors": {{"local": {{"maxsize": {SLOTS}}}}}, "debug": False}})\n'


def flows_source(module: str, n: int, init: str = "") -> str:
    """A flows file: ``bench`` awaits N tasks in one ``sf.bag``; ``chain`` awaits N hops."""
    return FLOWS_TEMPLATE.format(module=module, init=init, n=n)


def makefile_source(shape: str, n: int) -> str:
    """A Makefile with one explicit target (and recipe) per output."""
    if shape == INDEPENDENT:
        outputs = expected_outputs(shape, n)
        lines = [".PHONY: all", "all: " + " ".join(outputs), ""]
        for out in outputs:
            lines += [f"{out}:", f"\ttouch {out}", ""]
    else:
        lines = [".PHONY: all", f"all: c/{n}.txt", ""]
        for i in range(1, n + 1):
            lines += [f"c/{i}.txt: c/{i - 1}.txt", f"\tcp c/{i - 1}.txt c/{i}.txt", ""]
    return "\n".join(lines)


SNAKEFILE_INDEPENDENT = """\
rule all:
    input: [f"out/{{i}}.txt" for i in range({n})]

rule touch:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""

SNAKEFILE_CHAIN = """\
wildcard_constraints:
    i="[1-9][0-9]*"

rule all:
    input: "c/{n}.txt"

rule copy:
    input: lambda wildcards: f"c/{{int(wildcards.i) - 1}}.txt"
    output: "c/{{i}}.txt"
    shell: "cp {{input}} {{output}}"
"""


def snakefile_source(shape: str, n: int) -> str:
    """A target rule ``all`` and one wildcard rule that makes every output."""
    template = SNAKEFILE_INDEPENDENT if shape == INDEPENDENT else SNAKEFILE_CHAIN
    return template.format(n=n)


DODO_INDEPENDENT = """\
def task_touch():
    for i in range({n}):
        out = f"out/{{i}}.txt"
        # uptodate=[True]: up to date once the target exists (make's rule); without it
        # doit reruns every task that has no file_dep.
        yield {{"name": str(i), "actions": [f"touch {{out}}"], "targets": [out],
               "uptodate": [True]}}
"""

DODO_CHAIN = """\
def task_copy():
    for i in range(1, {n} + 1):
        src, dst = f"c/{{i - 1}}.txt", f"c/{{i}}.txt"
        yield {{"name": str(i), "actions": [f"cp {{src}} {{dst}}"], "file_dep": [src],
               "targets": [dst]}}
"""


def dodo_source(shape: str, n: int) -> str:
    """A dodo.py with one doit task per output."""
    return (DODO_INDEPENDENT if shape == INDEPENDENT else DODO_CHAIN).format(n=n)


# -- tools ---------------------------------------------------------------------------------


@dataclass
class Tool:
    """How to prepare a directory for a tool, and the commands that run it there."""

    key: str  # what --tools knows it by
    label: str  # its name in the table
    files: Callable[[str, int], dict[str, str]]  # shape, n -> {file name: content}
    argv: Callable[[str], list[str]]  # shape -> the command of a run
    shapes: tuple[str, ...] = (INDEPENDENT, CHAIN)
    dry_argv: Callable[[str], list[str]] | None = None  # shape -> a run that runs nothing
    dry_label: str = ""  # what the dry run is, for the table
    stdin_file: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    seconds_per_task: float = 0.1  # a run fails after 120 s plus this per task
    noop: bool = True  # whether a re-run with everything up to date means anything
    note: str = ""  # how it is run, for the notes under the table

    def prepare(self, workdir: Path, shape: str, n: int) -> None:
        seed_directory(workdir, shape)
        for name, text in self.files(shape, n).items():
            (workdir / name).write_text(text)


#: where the measured ``scriptflow_trio`` is imported from: this repository's working tree,
#: or an export of one of its commits (``export_commit``)
_package_root = [REPO]


def package_root() -> Path:
    return _package_root[0]


def export_commit(commit: str, into: Path) -> str:
    """Measure the package as ``commit`` has it: ``git archive`` it into ``into``.

    Returns the commit's short hash. Others' uncommitted changes in the working tree are
    then out of the measurement.
    """
    try:
        short = subprocess.run(
            ["git", "rev-parse", "--short", "--verify", commit + "^{commit}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchmarkError(f"--commit {commit}: not a commit of {REPO}") from exc
    archive = subprocess.Popen(
        ["git", "archive", commit, "scriptflow_trio"], cwd=REPO, stdout=subprocess.PIPE
    )
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise BenchmarkError(f"--commit {commit}: could not export scriptflow_trio")
    _package_root[0] = into
    return short.stdout.strip()


def repo_env() -> dict[str, str]:
    """Makes ``import scriptflow_trio`` find the package measured (see ``package_root``)."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(package_root()) + (os.pathsep + path if path else "")}


def scriptflow_trio_tool() -> Tool:
    def argv(shape: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "scriptflow_trio",
            "flows.py",
            FLOW_NAMES[shape],
            "-j",
            str(SLOTS),
            "--plain",
            "-q",
        ]

    return Tool(
        "scriptflow_trio",
        "scriptflow_trio",
        lambda shape, n: {"flows.py": flows_source("scriptflow_trio", n)},
        argv,
        dry_argv=lambda shape: [*argv(shape), "--dry-run"],
        dry_label="scriptflow_trio --dry-run (whole CLI)",
        env=repo_env(),
        note="`python -m scriptflow_trio flows.py FLOW -j 2 --plain -q`",
    )


def make_tool() -> Tool:
    return Tool(
        "make",
        "make -j2",
        lambda shape, n: {"Makefile": makefile_source(shape, n)},
        lambda shape: ["make", f"-j{SLOTS}"],
        dry_argv=lambda shape: ["make", "-n"],
        dry_label="make -n",
        note="`make -j2`, one explicit target and recipe per output",
    )


def xargs_tool() -> Tool:
    return Tool(
        "xargs",
        "xargs -P2",
        lambda shape, n: {"files.txt": "\n".join(expected_outputs(shape, n)) + "\n"},
        lambda shape: ["xargs", f"-P{SLOTS}", "-n1", "touch"],
        shapes=(INDEPENDENT,),
        stdin_file="files.txt",
        noop=False,
        note="`xargs -P2 -n1 touch` fed the file names: no dependency tracking, a floor",
    )


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
    python = str(venv / "bin" / "python")
    return Tool(
        "scriptflow",
        f"scriptflow {SCRIPTFLOW_VERSION}",
        lambda shape, n: {"sflow.py": flows_source("scriptflow", n, SCRIPTFLOW_INIT)},
        lambda shape: [python, str(wrapper), "run", FLOW_NAMES[shape]],
        seconds_per_task=1.0,
        note=(
            "`scriptflow run FLOW` with the same flows file, through a wrapper that "
            "replaces `Controller.notify` (an HTTP request to its author's server "
            "that hangs the run without network) with a no-op"
        ),
    )


def snakemake_tool(venv: Path) -> Tool:
    exe = str(venv / "bin" / "snakemake")
    base = [exe, "--cores", str(SLOTS), "--quiet", "all"]
    return Tool(
        "snakemake",
        f"snakemake {SNAKEMAKE_VERSION}",
        lambda shape, n: {"Snakefile": snakefile_source(shape, n)},
        lambda shape: [*base, "--scheduler", "greedy"],
        dry_argv=lambda shape: [*base, "--dry-run"],
        dry_label=f"snakemake {SNAKEMAKE_VERSION} --dry-run",
        seconds_per_task=1.0,
        note=(
            "`snakemake --cores 2 --quiet all --scheduler greedy`: with its default "
            "scheduler (`ilp`) it starts the CBC solver at every scheduling round; "
            "1,000 tasks took 23 s that way against 12.5 s with `greedy`, and 10,000 "
            "had made 2,233 outputs after 15 minutes"
        ),
    )


def doit_tool(venv: Path) -> Tool:
    exe = str(venv / "bin" / "doit")
    return Tool(
        "doit",
        f"doit {DOIT_VERSION}",
        lambda shape, n: {"dodo.py": dodo_source(shape, n)},
        lambda shape: [exe, "-n", str(SLOTS), "-P", "process", "-r", "error-only"],
        dry_argv=lambda shape: [exe, "list", "--all", "-q"],
        dry_label=f"doit {DOIT_VERSION} list --all (loads every task, runs none)",
        note=(
            "`doit -n 2 -P process -r error-only`; the independent tasks carry "
            "`uptodate: [True]` (up to date once the target exists, make's rule), the "
            "chain's `file_dep` on the previous file"
        ),
    )


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
            progress(f"using {requirement} from the cache ({venv})")
            return venv
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    progress(f"installing {requirement} into a venv ({venv})...")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", requirement],
        check_argv,
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            progress(
                f"note: could not install {requirement}; skipping it.\n"
                f"  {' '.join(argv[:3])} ... exited {proc.returncode}:\n"
                f"{tail(proc.stdout + proc.stderr)}"
            )
            shutil.rmtree(venv, ignore_errors=True)
            return None
    marker.write_text(requirement + "\n")
    return venv


#: the optional tools: key, package, version, a command that proves the install, factory
OPTIONAL = [
    ("snakemake", "snakemake", SNAKEMAKE_VERSION, ["snakemake", "--version"], snakemake_tool),
    ("doit", "doit", DOIT_VERSION, ["doit", "--version"], doit_tool),
    (
        "scriptflow",
        "scriptflow",
        SCRIPTFLOW_VERSION,
        ["python", "-c", "import scriptflow.cli"],
        scriptflow_tool,
    ),
]


# -- running and measuring -----------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tail(text: str, lines: int = 15, width: int = 240) -> str:
    """The last lines of a tool's output, each cut to ``width`` characters."""
    cut = [
        line if len(line) <= width else line[:width] + " ..." for line in text.strip().splitlines()
    ]
    return "\n".join("    " + line for line in cut[-lines:])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the tools, without an enclosing make's flags."""
    env = dict(os.environ)
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES"):
        env.pop(key, None)
    env.update(extra or {})
    return env


@dataclass
class Measured:
    """One finished process: its wall time and its rusage's peak RSS."""

    seconds: float
    maxrss_kib: int
    returncode: int
    timed_out: bool
    output: str  # its stdout and stderr, interleaved

    def check(self, what: str) -> None:
        if self.timed_out:
            raise BenchmarkError(f"{what}: did not finish in time\n{tail(self.output)}")
        if self.returncode != 0:
            raise BenchmarkError(f"{what}: exited {self.returncode}\n{tail(self.output)}")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


#: prctl(PR_SET_CHILD_SUBREAPER): orphans of our children become our children
PR_SET_CHILD_SUBREAPER = 36
#: run by the launcher in the background: stops itself, and once continued becomes the command
INNER = 'kill -STOP $$; exec "$@"'
#: starts INNER with the command in the background, prints its pid and exits
LAUNCHER = (
    'sh=$1 f=$2 log=$3 inner=$4; shift 4; "$sh" -c "$inner" inner "$@" <"$f" >"$log" 2>&1 & echo $!'
)
_launcher: list[str | None] = []


def launcher_shell() -> str | None:
    """dash, once this process is a child subreaper; None where that cannot be had."""
    if not _launcher:
        dash = shutil.which("dash")
        ok = False
        if dash is not None and sys.platform == "linux":
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        _launcher.append(dash if ok else None)
    return _launcher[0]


def _launch(
    shell: str, argv: Sequence[str], cwd: Path, env: dict[str, str], stdin_name: str, log_name: str
) -> tuple[int, int]:
    """Start ``argv`` through the launcher; return its pid (stopped, just before its exec,
    and our child now) and its process group."""
    launcher = subprocess.Popen(
        [shell, "-c", LAUNCHER, "launcher", shell, stdin_name, log_name, INNER, *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    printed, _ = launcher.communicate()  # the launcher has exited: its orphan is ours
    try:
        pid = int(printed.split()[0])
    except (ValueError, IndexError):
        raise BenchmarkError(f"the launcher printed no pid for {argv}") from None
    try:
        _, status = os.waitpid(pid, os.WUNTRACED)
    except BaseException:
        _kill_group(launcher.pid)
        raise
    if not os.WIFSTOPPED(status):
        raise BenchmarkError(f"{argv}: the launched process ended before its exec")
    return pid, launcher.pid


def run_measured(
    argv: Sequence[str],
    cwd: Path,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin_path: Path | None = None,
) -> Measured:
    """Run ``argv`` in ``cwd``; its wall time and peak RSS, from ``os.wait4``.

    The rusage of ``wait4`` covers the process and every descendant it waited for, so
    ``ru_maxrss`` (KiB on Linux) is the largest RSS of any one of them: the tool's own
    process, unless a job it ran was bigger.

    That maximum also covers the process before its ``exec``: a copy of its parent. Forked
    from this harness (tens of MiB by the end of a run), every command would seem to need
    at least as much. So the command is forked from a small launcher instead: ``dash``
    (about 1.5 MiB) starts it in the background and exits. The orphan becomes this
    process's child (we are a child subreaper). It stops itself just before its ``exec``
    (so that it cannot end, and be reaped by the launcher, too early); the clock starts
    when we let it go on, and stops when ``wait4`` reaps it. Without dash (or off Linux)
    the command is this process's own child: see ``floor_note()``.

    The command runs in a session of its own, whose every process is killed if it is
    still running after ``timeout`` seconds. Its output goes to a file (not a pipe, which
    it could fill while we wait).
    """
    shell = launcher_shell()
    stdin_name = str(stdin_path or os.devnull)
    with tempfile.NamedTemporaryFile(prefix="bench-output-") as log:
        timed_out = threading.Event()
        if shell is not None:
            pid, pgid = _launch(shell, argv, cwd, clean_env(env), stdin_name, log.name)
            start = time.perf_counter()
            os.kill(pid, signal.SIGCONT)
        else:
            with open(stdin_name, "rb") as stdin:
                start = time.perf_counter()
                proc = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    stdin=stdin,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=clean_env(env),
                    start_new_session=True,
                )
            pid = pgid = proc.pid
            proc.returncode = 0  # reaped below with wait4: Popen must not wait for it

        def expire() -> None:
            timed_out.set()
            _kill_group(pgid)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            _, status, usage = os.wait4(pid, 0)
        except BaseException:
            _kill_group(pgid)
            os.waitpid(pid, 0)
            raise
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        _reap_orphans()
        log.seek(0)
        output = log.read().decode(errors="replace")
    returncode = os.waitstatus_to_exitcode(status)
    return Measured(elapsed, usage.ru_maxrss, returncode, timed_out.is_set(), output)


def _reap_orphans() -> None:
    """Reap what a tool left behind and the subreaper inherited (nothing else runs now)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def floor_note() -> str:
    """What the peak RSS column includes besides the tools themselves."""
    if launcher_shell() is not None:
        return (
            "each command is started by a small launcher (dash, about 1.5 MiB), whose "
            "copy it is before its exec, so no figure is below that"
        )
    return (
        "no dash here: each command is forked from the harness, so every figure is at "
        "least the harness's own RSS at that moment"
    )


def output_mtimes(workdir: Path, outputs: Sequence[str], what: str) -> dict[str, int]:
    """Every output's mtime; a ``BenchmarkError`` if one is missing."""
    mtimes: dict[str, int] = {}
    missing: list[str] = []
    for out in outputs:
        try:
            mtimes[out] = (workdir / out).stat().st_mtime_ns
        except FileNotFoundError:
            missing.append(out)
    if missing:
        raise BenchmarkError(
            f"{what}: {len(missing)} of {len(outputs)} expected outputs missing, "
            f"e.g. {', '.join(missing[:5])}"
        )
    return mtimes


def rewritten(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The outputs whose mtime changed."""
    return [out for out, mtime in before.items() if after.get(out) != mtime]


def scriptflow_trio_revision() -> str:
    """The commit of the repository measured, "+dirty" if its package has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "scriptflow_trio"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty.strip() else "")


def check_prerequisites() -> None:
    """``make``, ``xargs``, ``touch`` and ``cp`` on the PATH; this repository's package."""
    for exe in ("make", "xargs", "touch", "cp"):
        if shutil.which(exe) is None:
            raise BenchmarkError(f"`{exe}` is not on the PATH")
    code = "import scriptflow_trio, os; print(os.path.dirname(scriptflow_trio.__file__))"
    probe = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(repo_env()),
        cwd=tempfile.gettempdir(),
    )
    if probe.returncode != 0:
        raise BenchmarkError(
            f"{sys.executable} cannot import scriptflow_trio from {package_root()}:\n"
            f"{tail(probe.stderr)}"
        )
    found = Path(probe.stdout.strip()).resolve()
    if found != package_root().resolve() / "scriptflow_trio":
        raise BenchmarkError(f"scriptflow_trio resolves to {found}, not to {package_root()}")
