"""runs, show, log, why, clean: the store looked into from the real command line.

A module fixture runs the DESIGN example twice in a project directory (the first run
named, the second skipping everything and adding a task that fails); read-only tests
query it where it is, and tests that change files work on a copy (paths in the store
are relative to the project, and copies keep modification times).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

TRACEBACK = "Traceback (most recent call last)"

FLOWS = r"""
import sys
import scriptflow_trio as sf

PY = sys.executable


def solve(i):
    code = f"open('test_{i}.txt', 'w').write('5'); print('SOLVED-{i}-MARKER')"
    return sf.Task(cmd=[PY, "-c", code], outputs=f"test_{i}.txt", name=f"solve-{i}")


async def flow_sleepit(fail: bool = False):
    t1 = solve(1)
    t2 = solve(2)
    await sf.bag(t1, t2)
    final = sf.Task(cmd=[PY, "combine.py"], name="final",
                    inputs=[*t1.get_outputs(), *t2.get_outputs()], outputs="final.txt")
    await final
    if fail:
        await sf.Task(cmd=[PY, "-c", "print('BROKEN-MARKER'); raise SystemExit(3)"],
                      name="broken", outputs="never.txt")


async def flow_forward():
    await sf.Task(cmd=["cp", "x.txt", "y.txt"], inputs="x.txt", outputs="y.txt", name="x-to-y")


async def flow_backward():
    await sf.Task(cmd=["cp", "y.txt", "x.txt"], inputs="y.txt", outputs="x.txt", name="y-to-x")


async def flow_chain(n: int = 25):
    for i in range(n):
        await sf.Task(cmd=["cp", f"c{i}.txt", f"c{i + 1}.txt"], inputs=f"c{i}.txt",
                      outputs=f"c{i + 1}.txt", name=f"link-{i + 1}")


MKDIR = (
    "import os; os.makedirs('outdir', exist_ok=True); "
    "open('outdir/a.txt', 'w').write('a'); open('single.txt', 'w').write('b')"
)


async def flow_dirout():
    await sf.Task(cmd=[PY, "-c", MKDIR], outputs=["outdir", "single.txt"], name="mk")
"""

COMBINE = """
total = sum(int(open(f"test_{i}.txt").read()) for i in (1, 2))
open("final.txt", "w").write(str(total))
"""

OUTPUTS = ("final.txt", "test_1.txt", "test_2.txt")


@attrs.frozen
class Result:
    returncode: int
    out: str  # stdout
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err

    def line_of(self, word: str) -> str:
        found = [line for line in self.out.splitlines() if word in line]
        assert found, f"no line with {word!r} in:\n{self.out}"
        return found[0]


def sf(cwd: Path, *args: str, user: Callable[[], None] | None = None) -> Result:
    """The command line in ``cwd``; ``user`` switches to another user first (``reader``)."""
    env = dict(os.environ, COLUMNS="1000")
    proc = subprocess.run(
        [sys.executable, "-m", "scriptflow_trio", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=user,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS).lstrip())
    (folder / "combine.py").write_text(textwrap.dedent(COMBINE).lstrip())
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DESIGN example, run once named ``first``, then again with a failing task."""
    folder = project(tmp_path_factory.mktemp("inspect") / "base")
    r = sf(folder, "flows.py", "sleepit", "--run-name", "first")
    assert r.returncode == 0, r.all
    r = sf(folder, "flows.py", "sleepit", "fail=true")
    assert r.returncode == 1, r.all
    return folder


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Path:
    """A copy of the base project to change (copy2 keeps modification times)."""
    return Path(shutil.copytree(base, tmp_path / "copy", symlinks=True))


def run_ids(folder: Path) -> list[str]:
    r = sf(folder, "runs")
    return [line.split()[0] for line in r.out.splitlines()[1:] if line.strip()]


# -- runs and show ----------------------------------------------------------------------


def test_runs_lists_both_newest_first_with_name(base: Path) -> None:
    r = sf(base, "runs")
    assert r.returncode == 0, r.all
    lines = [line for line in r.out.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["run", "name", "flow"]
    newest, oldest = lines[1], lines[2]
    assert "sleepit" in newest and "failed" in newest and "1 failed" in newest
    assert "3 skipped" in newest
    assert "first" in oldest and "succeeded" in oldest and "3 ok" in oldest
    limited = sf(base, "runs", "--limit", "1")
    assert len([line for line in limited.out.splitlines() if line.strip()]) == 2


def test_show_last_lists_skipped_and_failed_with_exit_code(base: Path) -> None:
    for args in (("show",), ("show", "last")):
        r = sf(base, *args)
        assert r.returncode == 0, r.all
        assert "fail=True" in r.out  # the run's arguments
        for name in ("solve-1", "solve-2", "final"):
            assert "skipped" in r.line_of(name), r.out
        broken = r.line_of("broken")
        # task, status, attempts, duration ("0.1 s"), exit code, log
        words = broken.split()
        assert words[:3] == ["broken", "failed", "1"] and words[4:6] == ["s", "3"], broken
        assert ".scriptflow/logs/" in broken and broken.rstrip().endswith(".1.log"), broken


def test_show_by_name_and_by_id_prefix(base: Path) -> None:
    r = sf(base, "show", "first")
    assert r.returncode == 0, r.all
    assert "(first)" in r.out.splitlines()[0]
    for name in ("solve-1", "solve-2", "final"):
        line = r.line_of(name)
        assert "succeeded" in line and " 0 " in line, line
    newest, oldest = run_ids(base)
    by_id = sf(base, "show", oldest)
    assert by_id.out.splitlines()[0] == r.out.splitlines()[0]
    # the shortest prefix of the oldest id that the newest does not share
    prefix = next(oldest[:n] for n in range(1, len(oldest)) if not newest.startswith(oldest[:n]))
    by_prefix = sf(base, "show", prefix)
    assert by_prefix.returncode == 0, by_prefix.all
    assert by_prefix.out.splitlines()[0] == r.out.splitlines()[0]
    shared = sf(base, "show", oldest[: len(prefix) - 1])  # the start of both ids
    assert shared.returncode == 2, shared.all
    assert "is the start of 2 run ids" in shared.err and TRACEBACK not in shared.all


def test_show_unknown_run_lists_the_latest(base: Path) -> None:
    r = sf(base, "show", "no-such-run")
    assert r.returncode == 2, r.all
    assert "no run matches 'no-such-run'" in r.err
    assert "(first)" in r.err
    for run_id in run_ids(base):
        assert run_id in r.err
    assert TRACEBACK not in r.all


# -- log --------------------------------------------------------------------------------


def test_log_prints_the_last_attempt(base: Path) -> None:
    r = sf(base, "log", "broken")
    assert r.returncode == 0, r.all
    header = r.out.splitlines()[0]
    assert "task broken" in header and "attempt 1" in header and "failed" in header
    assert "exit code 3" in header and ".scriptflow/logs/" in header
    assert "BROKEN-MARKER" in r.out.splitlines()[1:]

    r = sf(base, "log", "solve-2")
    assert r.returncode == 0, r.all
    assert "succeeded" in r.out.splitlines()[0] and "exit code 0" in r.out.splitlines()[0]
    assert "SOLVED-2-MARKER" in r.out


def test_log_of_a_task_that_printed_nothing(tmp_path: Path) -> None:
    folder = project(tmp_path / "quiet")
    (folder / "x.txt").write_text("x")
    r = sf(folder, "flows.py", "forward")
    assert r.returncode == 0, r.all
    assert not list((folder / ".scriptflow" / "logs").rglob("*.log"))  # none was made
    r = sf(folder, "log", "x-to-y")
    assert r.returncode == 0, r.all
    assert "succeeded" in r.out and "it printed nothing" in r.out and TRACEBACK not in r.all


def test_log_errors(base: Path, copy: Path) -> None:
    r = sf(base, "log", "no-such-task")
    assert r.returncode == 2, r.all
    assert "no task named 'no-such-task'" in r.err and TRACEBACK not in r.all

    r = sf(base, "log", "broken", "--attempt", "2")
    assert r.returncode == 2, r.all
    assert "no attempt 2" in r.err and TRACEBACK not in r.all

    shutil.rmtree(copy / ".scriptflow" / "logs")
    r = sf(copy, "log", "broken")
    assert r.returncode == 1, r.all
    assert "no longer on disk" in r.err and TRACEBACK not in r.all


# -- why --------------------------------------------------------------------------------


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def test_why_shows_the_chain_back_to_both_solve_tasks(base: Path) -> None:
    r = sf(base, "why", "final.txt")
    assert r.returncode == 0, r.all
    lines = r.out.splitlines()
    assert lines[0].startswith("final.txt") and "unchanged" in lines[0], r.out
    made = r.line_of("made by task final")
    assert indent(made) == 2 and "(first)" in made and "ended" in made
    assert "combine.py" in r.line_of("command:")
    for i in (1, 2):
        file_line = r.line_of(f"test_{i}.txt  ")
        assert indent(file_line) == 4 and "unchanged" in file_line and "CHANGED" not in r.out
        maker = r.line_of(f"made by task solve-{i}")
        assert indent(maker) == 6
    assert "not made by any task" not in r.out


def test_why_marks_a_hand_edited_input(copy: Path) -> None:
    edited = copy / "test_1.txt"
    before = edited.stat().st_mtime
    edited.write_text("55")
    os.utime(edited, (before + 10, before + 10))
    r = sf(copy, "why", "final.txt")
    assert r.returncode == 0, r.all
    assert "CHANGED" not in r.out.splitlines()[0]  # final.txt itself is as it was made
    line = r.line_of("test_1.txt  ")
    assert "CHANGED since it was made" in line and "final used it" in line, line
    assert "CHANGED" not in r.line_of("test_2.txt  ")

    (copy / "test_2.txt").unlink()
    r = sf(copy, "why", "final.txt")
    assert "MISSING" in r.line_of("test_2.txt  ")
    assert "made by task solve-2" in r.out


def test_why_a_touched_file_with_hashes(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    r = sf(folder, "flows.py", "sleepit", "--freshness", "hash")
    assert r.returncode == 0, r.all
    touched = folder / "test_1.txt"
    later = touched.stat().st_mtime + 10
    os.utime(touched, (later, later))
    r = sf(folder, "why", "final.txt")
    line = r.line_of("test_1.txt  ")
    assert "touched" in line and "content the same" in line and "CHANGED" not in line, line

    touched.write_text("6")  # same size, new content
    os.utime(touched, (later + 10, later + 10))
    r = sf(folder, "why", "final.txt")
    assert "CHANGED" in r.line_of("test_1.txt  ") and "content differs" in r.out


def test_why_a_source_file_and_path_forms(base: Path) -> None:
    r = sf(base, "why", "combine.py")
    assert r.returncode == 0, r.all
    assert "not made by any task (a source file)" in r.out
    (base / "sub").mkdir(exist_ok=True)
    for form in ("./test_1.txt", str(base / "test_1.txt"), "sub/../test_1.txt"):
        r = sf(base, "why", form)
        assert r.returncode == 0, r.all
        assert r.out.startswith("test_1.txt  ") and "made by task solve-1" in r.out, r.out
    r = sf(base / "sub", "-C", "..", "why", "test_1.txt")
    assert r.returncode == 0 and "made by task solve-1" in r.out, r.all
    r = sf(base / "sub", "why", "-C", "..", "test_1.txt")
    assert r.returncode == 0 and "made by task solve-1" in r.out, r.all


def test_why_unknown_file(base: Path) -> None:
    r = sf(base, "why", "nothing-here.txt")
    assert r.returncode == 2, r.all
    assert "nothing-here.txt does not exist, and no task made it" in r.err
    assert TRACEBACK not in r.all


def test_why_stops_at_a_cycle(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    (folder / "x.txt").write_text("x")
    assert sf(folder, "flows.py", "forward").returncode == 0
    time.sleep(0.01)
    assert sf(folder, "flows.py", "backward").returncode == 0  # now x.txt is made from y.txt
    r = sf(folder, "why", "y.txt")
    assert r.returncode == 0, r.all
    assert "made by task x-to-y" in r.out and "made by task y-to-x" in r.out
    assert "cycle" in r.line_of("    y.txt")


def test_why_depth_limit(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    (folder / "c0.txt").write_text("c")
    r = sf(folder, "flows.py", "chain", "n=22")
    assert r.returncode == 0, r.all
    r = sf(folder, "why", "c22.txt")
    assert r.returncode == 0, r.all
    assert "made by task link-22" in r.out and "made by task link-2 " in r.out
    assert "deeper than 20 links" in r.out
    assert "link-1 " not in r.out and "c0.txt" not in r.out


# -- clean ------------------------------------------------------------------------------


def test_clean_lists_then_removes_only_recorded_outputs(copy: Path) -> None:
    (copy / "notes.txt").write_text("made by hand")
    r = sf(copy, "clean", "flows.py", "sleepit")
    assert r.returncode == 0, r.all
    assert [line.strip() for line in r.out.splitlines()[:-1]] == sorted(OUTPUTS)
    assert "3 files; run again with --yes to remove them" in r.out
    assert all((copy / f).exists() for f in OUTPUTS)

    r = sf(copy, "clean", "flows.py", "sleepit", "--yes")
    assert r.returncode == 0, r.all
    assert "removed 3 files" in r.out
    assert not any((copy / f).exists() for f in OUTPUTS)
    for kept in ("notes.txt", "flows.py", "combine.py"):
        assert (copy / kept).exists(), kept

    r = sf(copy, "clean", "flows.py", "sleepit")
    assert "none of the outputs recorded" in r.out
    r = sf(copy, "why", "notes.txt")
    assert "not made by any task" in r.out

    r = sf(copy, "flows.py", "sleepit")
    assert r.returncode == 0, r.all
    assert all((copy / f).exists() for f in OUTPUTS)
    assert (copy / "final.txt").read_text() == "10"
    assert "skipped" not in sf(copy, "show").out


def test_clean_keeps_a_directory_with_unrecorded_files(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    assert sf(folder, "flows.py", "dirout").returncode == 0
    r = sf(folder, "clean", "flows.py", "dirout")
    assert "outdir/  (a directory: removed only if empty)" in r.out, r.out
    r = sf(folder, "clean", "flows.py", "dirout", "--yes")
    assert r.returncode == 0, r.all
    assert "removed single.txt" in r.out and "kept outdir" in r.out
    assert (folder / "outdir" / "a.txt").exists() and not (folder / "single.txt").exists()


def test_clean_errors(base: Path) -> None:
    r = sf(base, "clean", "flows.py", "nope")
    assert r.returncode == 2, r.all
    assert "no flow named 'nope'" in r.err and TRACEBACK not in r.all
    r = sf(base, "clean", "missing.py", "sleepit")
    assert r.returncode == 2, r.all
    assert "does not exist" in r.err and TRACEBACK not in r.all
    r = sf(base, "clean", "flows.py", "chain")
    assert r.returncode == 0, r.all
    assert "no recorded run" in r.out


# -- no store, bad usage ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        ("show",),
        ("show", "first"),
        ("log", "final"),
        ("why", "final.txt"),
        ("clean", "flows.py", "sleepit"),
    ],
)
def test_no_store_is_a_clear_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    project(tmp_path)
    r = sf(tmp_path, *args)
    assert r.returncode == 2, r.all
    assert "run a flow here first" in r.err, r.all
    assert TRACEBACK not in r.all
    assert not (tmp_path / ".scriptflow").exists()  # looking creates nothing


def test_bad_usage_exits_2(base: Path, tmp_path: Path) -> None:
    for args in (
        ("runs", "--limit", "0"),
        ("show", "--bogus"),
        ("log",),
        ("why", "-C", str(tmp_path / "nowhere"), "x"),
        ("runs", "--state-dir", str(tmp_path / "elsewhere")),
    ):
        r = sf(base, *args)
        assert r.returncode == 2, (args, r.all)
        assert TRACEBACK not in r.all


def test_state_dir_option(base: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(base, tmp_path / "moved"))
    (moved / ".scriptflow").rename(moved / "state")
    r = sf(moved, "runs", "--state-dir", "state")
    assert r.returncode == 0 and "first" in r.out, r.all
    r = sf(moved, "--state-dir", "state", "show", "first")
    assert r.returncode == 0 and "final" in r.out, r.all


# -- a store this user may not write --------------------------------------------------

NOBODY = 65534


def reader(folder: Path) -> tuple[Path, Callable[[], None] | None]:
    """A copy of ``folder`` its reader may not write, and how to run as that reader.

    Not root: the copy's state directory loses its write bits. Root may write anything,
    so the commands then run as ``nobody`` on a copy outside pytest's private folders.
    """
    if os.geteuid() != 0:
        copy = shutil.copytree(folder, folder.parent / f"{folder.name}-ro")
        for path in [copy / ".scriptflow", *(copy / ".scriptflow").rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return copy, None
    import tempfile

    copy = Path(tempfile.mkdtemp(prefix="sf-read-only-")) / folder.name
    shutil.copytree(folder, copy)
    for path in [copy.parent, copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o555 if path.is_dir() else path.stat().st_mode | 0o444)

    def drop() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import scriptflow_trio"], preexec_fn=drop, capture_output=True
        )
    except PermissionError as exc:  # the interpreter lies in a folder nobody may enter
        pytest.skip(f"user nobody cannot run this interpreter: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this interpreter: {probe.stderr.decode()[-200:]}")
    return copy, drop


def test_a_store_this_user_may_not_write_is_read_not_called_damaged(base: Path) -> None:
    folder, drop = reader(base)
    try:
        runs = sf(folder, "runs", user=drop)
        assert runs.returncode == 0, runs.all
        assert "first" in runs.out and "damaged" not in runs.all
        show = sf(folder, "show", user=drop)
        assert show.returncode == 0 and "broken" in show.out, show.all
        log = sf(folder, "log", "broken", user=drop)
        assert log.returncode == 0 and "BROKEN-MARKER" in log.out, log.all
        # what would change it says why it cannot, without a traceback
        clean = sf(folder, "clean", "flows.py", "sleepit", "--yes", user=drop)
        assert clean.returncode == 2 and "cannot be changed by this user" in clean.err, clean.all
        run = sf(folder, "flows.py", "sleepit", "--plain", user=drop)
        assert run.returncode == 2, run.all
        assert "cannot use the state directory" in run.all and TRACEBACK not in run.all
        assert all((folder / name).exists() for name in OUTPUTS)  # nothing was removed
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        shutil.rmtree(folder if drop is None else folder.parent)
