"""The command line, run for real: ``python -m scriptflow_trio`` in a subprocess.

Every test writes a flows file into ``tmp_path``, runs the CLI there with real
processes and real files, and checks the exit code, that the output names what to
fix, and that no Python traceback reaches the person running it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest

TRACEBACK = "Traceback (most recent call last)"


@attrs.frozen
class Result:
    returncode: int
    out: str  # stdout then stderr


@pytest.fixture(scope="session")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``python`` is this interpreter, so task commands find it."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "python").symlink_to(sys.executable)
    return folder


def cli_env(python_bin: Path, *, wide: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{python_bin}{os.pathsep}{env.get('PATH', '')}"
    env.pop("COLUMNS", None)
    if wide:
        # keep message checks independent of line wrapping (see test_error_not_hard_wrapped)
        env["COLUMNS"] = "1000"
    return env


def run(
    cwd: Path,
    python_bin: Path,
    *args: str,
    timeout: float = 30,
    wide: bool = True,
    program: list[str] | None = None,
) -> Result:
    cmd = program or [sys.executable, "-m", "scriptflow_trio"]
    proc = subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(python_bin, wide=wide),
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout + proc.stderr)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def sf(tmp_path: Path, python_bin: Path):
    """``sf(*args)`` runs the CLI in tmp_path."""

    def call(*args: str, **kw) -> Result:
        return run(tmp_path, python_bin, *args, **kw)

    return call


# -- the flows file -------------------------------------------------------------------


def test_missing_flows_file(tmp_path: Path, sf) -> None:
    r = sf("nofile.py")
    assert r.returncode == 2, r.out
    assert "nofile.py" in r.out
    assert "does not exist" in r.out
    assert TRACEBACK not in r.out


def test_missing_flows_file_when_running_a_flow(tmp_path: Path, sf) -> None:
    r = sf("nofile.py", "build", "x=1")
    assert r.returncode == 2, r.out
    assert "nofile.py" in r.out
    assert TRACEBACK not in r.out


def test_flows_file_with_syntax_error(tmp_path: Path, sf) -> None:
    write(
        tmp_path / "broken.py",
        """
        import scriptflow_trio as sf

        async def flow_a(:
            pass
    """,
    )
    r = sf("broken.py")
    assert r.returncode == 2, r.out
    assert "broken.py" in r.out
    assert "line 3" in r.out
    assert "async def flow_a(:" in r.out  # the offending line itself
    assert TRACEBACK not in r.out
    # the same when a flow is named
    r = sf("broken.py", "a")
    assert r.returncode == 2, r.out
    assert "broken.py" in r.out and "line 3" in r.out
    assert TRACEBACK not in r.out


def test_flows_file_raising_at_import(tmp_path: Path, sf) -> None:
    write(
        tmp_path / "raises.py",
        """
        import scriptflow_trio as sf
        SETTING = 1
        raise RuntimeError("boom at import time")

        async def flow_a():
            pass
    """,
    )
    r = sf("raises.py", "a")
    assert r.returncode == 2, r.out
    assert "raises.py" in r.out
    assert "line 3" in r.out
    assert "boom at import time" in r.out
    assert "RuntimeError" in r.out
    assert TRACEBACK not in r.out


def test_flows_file_raising_inside_a_helper_at_import(tmp_path: Path, sf) -> None:
    write(
        tmp_path / "raises.py",
        """
        import scriptflow_trio as sf

        def helper():
            return 1 / 0

        helper()
    """,
    )
    r = sf("raises.py")
    assert r.returncode == 2, r.out
    assert "raises.py" in r.out
    assert "line 4" in r.out  # the deepest line of the flows file
    assert "ZeroDivisionError" in r.out
    assert TRACEBACK not in r.out


FLOWS = '''
import scriptflow_trio as sf
from pathlib import Path


async def flow_build(n: int, x: float = 1.0, b: bool = False, p: Path = Path("."), s="dflt"):
    """Build everything from scratch.

    SECOND-DOC-LINE that must not be listed.
    """
    Path("args.txt").write_text(repr((n, x, b, p, s)))


async def flow_plain():
    pass


@sf.flow
async def decorated():
    """Decorated without the flow_ prefix."""


@sf.flow(name="everything")
async def some_function():
    """Named by the decorator."""'''


def test_listing_flows_shows_docstring_first_lines(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py")
    assert r.returncode == 0, r.out
    assert TRACEBACK not in r.out
    listed = {line.split()[0]: line for line in r.out.splitlines()[1:] if line.strip()}
    assert "build" in listed and "plain" in listed
    assert "Build everything from scratch." in listed["build"]
    assert "SECOND-DOC-LINE" not in r.out


def test_decorated_flows_are_listed_and_runnable(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py")
    assert r.returncode == 0, r.out
    listed = {line.split()[0]: line for line in r.out.splitlines()[1:] if line.strip()}
    assert "Decorated without the flow_ prefix." in listed["decorated"]
    assert "Named by the decorator." in listed["everything"]
    assert "some_function" not in listed
    r = sf("flows.py", "everything")
    assert r.returncode == 0, r.out
    r = sf("flows.py", "decorated", "-q")
    assert r.returncode == 0, r.out


def test_unknown_flow_lists_the_available_ones(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "biuld")
    assert r.returncode == 2, r.out
    assert "biuld" in r.out
    for name in ("build", "plain", "decorated", "everything"):
        assert name in r.out
    assert TRACEBACK not in r.out


# -- flow arguments -------------------------------------------------------------------


def test_flow_arguments_are_converted_by_annotation(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "build", "n=3", "x=2.5", "b=yes", "p=sub/d", "s=hello")
    assert r.returncode == 0, r.out
    assert (tmp_path / "args.txt").read_text() == repr((3, 2.5, True, Path("sub/d"), "hello"))
    r = sf("flows.py", "build", "n=-7", "b=false", "-q")
    assert r.returncode == 0, r.out
    assert (tmp_path / "args.txt").read_text() == repr((-7, 1.0, False, Path("."), "dflt"))


def test_flow_arguments_with_postponed_annotations(tmp_path: Path, sf) -> None:
    write(
        tmp_path / "flows.py",
        """
        from __future__ import annotations
        from pathlib import Path

        async def flow_a(n: int, p: Path | None = None, on: bool = True):
            Path("args.txt").write_text(repr((n, p, on)))
    """,
    )
    r = sf("flows.py", "a", "n=4", "p=x/y", "on=off")
    assert r.returncode == 0, r.out
    assert (tmp_path / "args.txt").read_text() == repr((4, Path("x/y"), False))


def test_unknown_argument(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "build", "n=1", "colour=red")
    assert r.returncode == 2, r.out
    assert "'colour'" in r.out
    assert "n, x, b, p, s" in r.out  # what it takes instead
    assert not (tmp_path / "args.txt").exists()
    assert TRACEBACK not in r.out


def test_argument_not_of_the_form_key_value(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "build", "n")
    assert r.returncode == 2, r.out
    assert "key=value" in r.out
    assert TRACEBACK not in r.out


@pytest.mark.parametrize(
    ("word", "key", "type_name"),
    [("n=abc", "n", "int"), ("x=fast", "x", "float"), ("b=maybe", "b", "bool")],
)
def test_badly_typed_argument(tmp_path: Path, sf, word: str, key: str, type_name: str) -> None:
    write(tmp_path / "flows.py", FLOWS)
    args = [word] if key == "n" else ["n=1", word]
    r = sf("flows.py", "build", *args)
    assert r.returncode == 2, r.out
    value = word.partition("=")[2]
    assert f"{key}=" in r.out and value in r.out
    assert type_name in r.out
    assert not (tmp_path / "args.txt").exists()
    assert TRACEBACK not in r.out


def test_missing_required_argument(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "build", "x=2")
    assert r.returncode == 2, r.out
    assert "n=VALUE" in r.out
    assert not (tmp_path / "args.txt").exists()
    assert TRACEBACK not in r.out


def test_bad_jobs_and_directory_options(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FLOWS)
    r = sf("flows.py", "plain", "-j", "0")
    assert r.returncode == 2, r.out
    assert "-j" in r.out
    assert TRACEBACK not in r.out
    r = sf("-C", "no-such-dir", "flows.py")
    assert r.returncode == 2, r.out
    assert "no-such-dir" in r.out
    assert TRACEBACK not in r.out


def test_directory_option_runs_there(tmp_path: Path, sf) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "flows.py", FLOWS)
    r = sf("-C", "sub", "flows.py", "build", "n=9", "-q")
    assert r.returncode == 0, r.out
    assert (tmp_path / "sub" / "args.txt").read_text() == repr((9, 1.0, False, Path("."), "dflt"))


def test_flow_raising_an_exception(tmp_path: Path, sf) -> None:
    write(
        tmp_path / "flows.py",
        """
        async def flow_a():
            x = 1
            raise ValueError("the flow went wrong")
    """,
    )
    r = sf("flows.py", "a")
    assert r.returncode == 1, r.out
    assert "ValueError" in r.out and "the flow went wrong" in r.out
    assert "flows.py" in r.out and "line 3" in r.out
    assert TRACEBACK not in r.out


# -- failing tasks --------------------------------------------------------------------


TASKS = r"""
import scriptflow_trio as sf


async def flow_nocmd():
    await sf.Task(cmd="no-such-command-xyz --flag", outputs="o.txt", name="needs-tool")


async def flow_nocwd():
    await sf.Task(cmd="python -c pass", outputs="o.txt", name="in-nowhere", cwd="no/such/dir")


async def flow_noinput():
    await sf.Task(cmd="python -c pass", inputs="missing-input.txt", outputs="o.txt",
                  name="needs-input")


async def flow_retry():
    code = ("import sys; open('counter.txt', 'a').write('attempt\\n'); "
            "print('RECOGNIZABLE-LOG-LINE'); sys.exit(3)")
    await sf.Task(cmd=["python", "-c", code], outputs="o.txt", name="flaky-task", retry=2)
"""


def test_command_that_does_not_exist(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", TASKS)
    r = sf("flows.py", "nocmd")
    assert r.returncode == 1, r.out
    assert "no-such-command-xyz" in r.out
    assert "not found" in r.out
    assert "needs-tool" in r.out
    assert TRACEBACK not in r.out


def test_task_cwd_that_does_not_exist(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", TASKS)
    r = sf("flows.py", "nocwd")
    assert r.returncode == 1, r.out
    assert "no/such/dir" in r.out
    assert "in-nowhere" in r.out
    assert "cwd" in r.out or "directory" in r.out
    assert TRACEBACK not in r.out


def test_missing_input_that_no_task_makes(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", TASKS)
    r = sf("flows.py", "noinput")
    assert r.returncode == 1, r.out
    assert "missing-input.txt" in r.out
    assert "needs-input" in r.out
    assert "does not exist" in r.out
    assert TRACEBACK not in r.out


def test_failing_task_is_retried_and_reported(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", TASKS)
    r = sf("flows.py", "retry")
    assert r.returncode == 1, r.out
    assert lines(tmp_path / "counter.txt") == ["attempt"] * 3
    assert "flaky-task" in r.out
    assert "exit code 3" in r.out
    assert "3 attempts" in r.out
    assert "RECOGNIZABLE-LOG-LINE" in r.out  # the last lines of the log
    assert not (tmp_path / "o.txt").exists()
    assert TRACEBACK not in r.out


MORE_TASKS = r"""
import scriptflow_trio as sf


async def flow_noout():
    await sf.Task(cmd="python -c pass", outputs="declared-never-made.txt", name="lazy-task")


async def flow_noexec():
    await sf.Task(cmd="./script.sh", outputs="x.txt", name="runs-script")


async def flow_loud():
    code = "import sys; print('LOUD-LINE'); sys.exit(2)"
    await sf.Task(cmd=["python", "-c", code], outputs="x.txt", name="loud-task")
"""


def test_task_that_does_not_make_its_output(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", MORE_TASKS)
    r = sf("flows.py", "noout")
    assert r.returncode == 1, r.out
    assert "lazy-task" in r.out
    assert "missing output declared-never-made.txt" in r.out
    # it printed nothing: no log file was made, and none is pointed at
    assert "log:" not in r.out, r.out
    assert not list((tmp_path / ".scriptflow" / "logs").rglob("lazy-task*")), r.out
    assert TRACEBACK not in r.out


def test_command_that_is_not_executable(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", MORE_TASKS)
    script = write(tmp_path / "script.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    r = sf("flows.py", "noexec")
    assert r.returncode == 1, r.out
    assert "./script.sh" in r.out and "not executable" in r.out
    assert "runs-script" in r.out
    assert TRACEBACK not in r.out


def test_quiet_still_reports_the_failure(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", MORE_TASKS)
    r = sf("flows.py", "loud", "-q")
    assert r.returncode == 1, r.out
    assert "loud-task" in r.out and "exit code 2" in r.out and "LOUD-LINE" in r.out
    assert " start " not in r.out
    assert TRACEBACK not in r.out


# -- the DESIGN example ---------------------------------------------------------------


DESIGN = r"""
import scriptflow_trio as sf


def solve(i):
    # appends to marker.txt each time it runs; records its start and end times
    code = (
        "import time; t0 = time.time(); "
        f"open('marker.txt', 'a').write('solve-{i}\\n'); "
        "time.sleep(0.5); "
        f"open('test_{i}.txt', 'w').write('5'); "
        f"open('times_{i}.txt', 'w').write(repr((t0, time.time())))"
    )
    return sf.Task(cmd=["python", "-c", code], outputs=f"test_{i}.txt", name=f"solve-{i}")


async def flow_sleepit():
    t1 = solve(1)
    t2 = solve(2)
    await sf.bag(t1, t2)
    final = sf.Task(cmd="python combine.py", name="final",
                    inputs=[*t1.get_outputs(), *t2.get_outputs()], outputs="final.txt")
    await final
"""

COMBINE = """
open("marker.txt", "a").write("final\\n")
total = sum(int(open(f"test_{i}.txt").read()) for i in (1, 2))
open("final.txt", "w").write(str(total))
"""


def design(tmp_path: Path) -> None:
    write(tmp_path / "flows.py", DESIGN)
    write(tmp_path / "combine.py", COMBINE)


def test_design_example_make_semantics(tmp_path: Path, sf) -> None:
    design(tmp_path)
    marker = tmp_path / "marker.txt"

    r = sf("flows.py", "sleepit", "-j", "2")
    assert r.returncode == 0, r.out
    assert (tmp_path / "final.txt").read_text() == "10"
    assert sorted(lines(marker)) == ["final", "solve-1", "solve-2"]
    assert lines(marker)[-1] == "final"
    assert TRACEBACK not in r.out

    # second run: everything up to date, no process started
    r = sf("flows.py", "sleepit", "-j", "2")
    assert r.returncode == 0, r.out
    assert len(lines(marker)) == 3, r.out
    assert "up to date" in r.out

    # an input newer than final.txt: only final runs again
    future = time.time() + 5
    os.utime(tmp_path / "test_1.txt", (future, future))
    r = sf("flows.py", "sleepit", "-j", "2")
    assert r.returncode == 0, r.out
    assert lines(marker)[3:] == ["final"], r.out
    assert "test_1.txt" in r.out  # the reason names the newer input


def test_design_example_solves_overlap(tmp_path: Path, sf) -> None:
    design(tmp_path)
    r = sf("flows.py", "sleepit", "-j", "2")
    assert r.returncode == 0, r.out
    s1, e1 = eval((tmp_path / "times_1.txt").read_text())
    s2, e2 = eval((tmp_path / "times_2.txt").read_text())
    assert max(s1, s2) < min(e1, e2), (s1, e1, s2, e2)


def test_dry_run_says_what_and_why_and_runs_nothing(tmp_path: Path, sf) -> None:
    design(tmp_path)
    r = sf("flows.py", "sleepit", "-n")
    assert r.returncode == 0, r.out
    assert "would run" in r.out
    for name in ("solve-1", "solve-2", "final"):
        assert name in r.out
    assert "output test_1.txt is missing" in r.out  # why
    assert "test_2.txt" in r.out
    assert "python combine.py" in r.out  # what
    for name in ("marker.txt", "test_1.txt", "test_2.txt", "final.txt"):
        assert not (tmp_path / name).exists(), name
    assert TRACEBACK not in r.out


def test_dry_run_after_a_change(tmp_path: Path, sf) -> None:
    design(tmp_path)
    assert sf("flows.py", "sleepit", "-q").returncode == 0
    future = time.time() + 5
    os.utime(tmp_path / "test_2.txt", (future, future))
    before = (tmp_path / "final.txt").stat().st_mtime_ns
    r = sf("flows.py", "sleepit", "--dry-run")
    assert r.returncode == 0, r.out
    would = [line for line in r.out.splitlines() if " would run " in line and " - " in line]
    assert len(would) == 1 and "final" in would[0], r.out
    assert "test_2.txt" in would[0]
    assert len(lines(tmp_path / "marker.txt")) == 3
    assert (tmp_path / "final.txt").stat().st_mtime_ns == before


FORCE = r"""
import scriptflow_trio as sf


def make(x):
    code = f"open('marker.txt', 'a').write('{x}\\n'); open('{x}.txt', 'w').write('{x}')"
    return sf.Task(cmd=["python", "-c", code], outputs=f"{x}.txt", name=f"make-{x}")


async def flow_two():
    await sf.bag(make("a"), make("b"))
"""


def test_force_reruns_matching_tasks_only(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", FORCE)
    marker = tmp_path / "marker.txt"
    assert sf("flows.py", "two").returncode == 0
    assert sorted(lines(marker)) == ["a", "b"]

    r = sf("flows.py", "two", "-f", "make-a")
    assert r.returncode == 0, r.out
    assert lines(marker)[2:] == ["a"], r.out
    assert "forced" in r.out

    r = sf("flows.py", "two", "--force", "*-b")
    assert r.returncode == 0, r.out
    assert lines(marker)[3:] == ["b"], r.out

    r = sf("flows.py", "two", "-f", "nothing-matches-*")
    assert r.returncode == 0, r.out
    assert len(lines(marker)) == 4


# -- scriptflow-trio run NAME ---------------------------------------------------------


def test_console_script_run_reads_sflow_py(tmp_path: Path, python_bin: Path) -> None:
    program = shutil.which("scriptflow-trio")
    if program is None:
        pytest.skip("scriptflow-trio is not on PATH")
    write(tmp_path / "sflow.py", FLOWS)
    r = run(tmp_path, python_bin, "run", "build", "n=5", "b=on", program=[program])
    assert r.returncode == 0, r.out
    assert (tmp_path / "args.txt").read_text() == repr((5, 1.0, True, Path("."), "dflt"))

    r = run(tmp_path, python_bin, "run", "nope", program=[program])
    assert r.returncode == 2, r.out
    assert "nope" in r.out and "build" in r.out
    assert TRACEBACK not in r.out


def test_console_script_run_without_sflow_py(tmp_path: Path, python_bin: Path) -> None:
    program = shutil.which("scriptflow-trio")
    if program is None:
        pytest.skip("scriptflow-trio is not on PATH")
    r = run(tmp_path, python_bin, "run", "build", program=[program])
    assert r.returncode == 2, r.out
    assert "sflow.py" in r.out
    assert TRACEBACK not in r.out


# -- keep going -----------------------------------------------------------------------


KEEP_GOING = r"""
import scriptflow_trio as sf


def bad(name, delay):
    code = f"import sys, time; time.sleep({delay}); print('{name} says goodbye'); sys.exit(1)"
    return sf.Task(cmd=["python", "-c", code], outputs=f"{name}.txt", name=name)


async def flow_kg():
    slow = sf.Task(
        cmd=["python", "-c", "import time; time.sleep(0.8); open('slow.txt', 'w').write('ok')"],
        outputs="slow.txt", name="slow-ok",
    )
    await sf.bag(bad("bad-a", 0), bad("bad-b", 0.2), slow)
"""


def test_keep_going_runs_everything_and_reports_all(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", KEEP_GOING)
    r = sf("flows.py", "kg", "-j", "4", "-k")
    assert r.returncode == 1, r.out
    assert (tmp_path / "slow.txt").read_text() == "ok"
    assert "task 'bad-a' failed" in r.out
    assert "task 'bad-b' failed" in r.out
    assert "bad-a says goodbye" in r.out and "bad-b says goodbye" in r.out
    assert TRACEBACK not in r.out


def test_without_keep_going_first_failure_stops_the_rest(tmp_path: Path, sf) -> None:
    write(tmp_path / "flows.py", KEEP_GOING)
    r = sf("flows.py", "kg", "-j", "4")
    assert r.returncode == 1, r.out
    assert "task 'bad-a' failed" in r.out
    time.sleep(1.0)  # the slow task, were it still running, would have written by now
    assert not (tmp_path / "slow.txt").exists()
    assert TRACEBACK not in r.out


# -- signals --------------------------------------------------------------------------


LONG = r"""
import scriptflow_trio as sf


async def flow_long():
    code = ("import os, time; open('pid.txt', 'w').write(str(os.getpid())); "
            "time.sleep(30); open('long.txt', 'w').write('x')")
    await sf.Task(cmd=["python", "-c", code], outputs="long.txt", name="long-task")
"""


def _interrupt(tmp_path: Path, python_bin: Path, signum: int) -> tuple[Result, int]:
    write(tmp_path / "flows.py", LONG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_trio", "flows.py", "long"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(python_bin),
        stdin=subprocess.DEVNULL,
    )
    try:
        pid_file = tmp_path / "pid.txt"
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the task never started"
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.02)
        child = int(pid_file.read_text())
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Result(proc.returncode, out), child


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exit_code_and_kills_the_task(
    tmp_path: Path, python_bin: Path, signum: int, code: int
) -> None:
    r, child = _interrupt(tmp_path, python_bin, signum)
    assert r.returncode == code, r.out
    assert _gone(child), "the task's process survived the interrupted run"
    assert not (tmp_path / "long.txt").exists()
    assert "long-task" in r.out  # reported as interrupted
    assert TRACEBACK not in r.out
    # the CLI's own cancellation is not reported as an error of the flow
    assert "Cancelled" not in r.out and "error:" not in r.out, r.out


# -- output format --------------------------------------------------------------------


def test_error_not_hard_wrapped_when_piped(tmp_path: Path, python_bin: Path) -> None:
    deep = tmp_path / ("a_rather_long_folder_name_" * 4 + "end")
    deep.mkdir()
    r = run(deep, python_bin, "nofile.py", wide=False)
    assert r.returncode == 2, r.out
    assert f"does not exist in {deep}" in r.out, r.out
    assert all(line == line.rstrip() for line in r.out.splitlines()), r.out
