"""Instructions the engine executes, counted by valgrind: a measure that noise leaves alone.

    python benchmarks/instructions.py [--tasks N]

On a shared VM wall times of the same run vary by 20 % and more from one minute to the
next; ``valgrind --tool=callgrind`` counts the instructions a process executes, the
same from one run to the next (within a few in a thousand). This prints, for the
engine process alone (its children are not traced):

* import: ``import scriptflow_trio._cli``, the bulk of the start-up;
* one task: the whole CLI on one up-to-date task;
* no-op: the CLI on N up-to-date tasks, per task beyond the one-task run (W2);
* engine: ``_engine.py`` on N independent tasks on the FakeExecutor, with and without
  the store, and a chain of 200 with it, per task beyond a one-task run (W5). The
  chain runs with ``--short``: outside valgrind it ends before the store's writer
  process would start, and writes its records at its close; under valgrind it would
  last long enough to start that process, which is not traced.

Each figure is split by thread: the main one, which runs the event loop (the engine's
own core), and the others (trio's worker threads; the store's writer where it runs
as a thread). The engine's helper processes, the spawner and the store's writer, are
not traced: they run on the other core.

It needs valgrind on the PATH and takes a few minutes (valgrind runs Python about 50
times slower). Compare two commits by running it in each: only the differences mean
something, not the absolute figures.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _tools import flows_source, package_root, repo_env

HERE = Path(__file__).resolve().parent


def count(argv: list[str], cwd: Path) -> tuple[int, int]:
    """Instructions the command's own process executed: its main thread, its others.

    The main thread runs the event loop; trio's worker threads (the store's opening,
    a short session's records) can use the other core.
    """
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--trace-children=no", "--separate-threads=yes"]
            + [f"--callgrind-out-file={out}/cg"]
            + argv,
            cwd=cwd,
            env={**os.environ, **repo_env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
        totals: dict[int, int] = {}
        for path in Path(out).glob("cg-*"):
            found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
            if found is None:
                raise SystemExit(f"no count from valgrind in {path.name} for {argv}")
            totals[int(path.name.rsplit("-", 1)[1])] = int(found.group(1))
    if not totals:
        raise SystemExit(f"no count from valgrind for {argv}")
    main = totals.pop(min(totals))
    return main, sum(totals.values())


def fresh(base: Path, name: str) -> Path:
    work = base / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    (work / "c").mkdir()
    (work / "c" / "0.txt").write_text("seed of the chain\n")
    return work


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000, help="tasks per case (default 2,000)")
    n = p.parse_args().tasks
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    compileall.compile_dir(str(package_root() / "scriptflow_trio"), quiet=1)
    py = sys.executable
    engine = str(HERE / "_engine.py")
    memory = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=memory) as tmp:
        base = Path(tmp)
        rows: list[tuple[str, float, float]] = []
        imported = count([py, "-c", "import scriptflow_trio._cli"], base)
        rows.append(("import scriptflow_trio._cli (M)", imported[0] / 1e6, imported[1] / 1e6))
        cli = fresh(base, "cli")
        (cli / "flows.py").write_text(flows_source("scriptflow_trio", n))
        (cli / "one.py").write_text(flows_source("scriptflow_trio", 1))
        cli_argv = [py, "-m", "scriptflow_trio", "{}", "bench", "-j", "2", "--plain", "-q"]
        run = [a.format("flows.py") for a in cli_argv]
        env = {**os.environ, **repo_env()}
        subprocess.run(run, cwd=cli, env=env, check=True, stdout=subprocess.DEVNULL)
        one = count([a.format("one.py") for a in cli_argv], cli)
        rows.append(("CLI, one up-to-date task (M)", one[0] / 1e6, one[1] / 1e6))
        noop = count(run, cli)
        rows.append((f"CLI no-op, per up-to-date task of {n:,} (k)", *per(noop, one, n)))
        single = count([py, engine, "independent", "1"], fresh(base, "single"))
        for label, args, tasks in (
            ("engine, independent, store", ["independent", str(n)], n),
            ("engine, independent, no store", ["independent", str(n), "--no-store"], n),
            # as short as it is outside valgrind: its records written at the close
            ("engine, chain of 200, store", ["chain", "200", "--short"], 200),
        ):
            total = count([py, engine, *args], fresh(base, label.replace(" ", "_")))
            rows.append((f"{label}, per task (k)", *per(total, single, tasks)))
    width = max(len(label) for label, _, _ in rows)
    print(f"{'':<{width}}  {'loop thread':>12}  {'others':>8}")
    for label, main_thread, others in rows:
        print(f"{label:<{width}}  {main_thread:12.1f}  {others:8.1f}")
    return 0


def per(total: tuple[int, int], base: tuple[int, int], n: int) -> tuple[float, float]:
    """Thousands of instructions per task beyond ``base``, thread by thread."""
    return (total[0] - base[0]) / n / 1e3, (total[1] - base[1]) / n / 1e3


if __name__ == "__main__":
    sys.exit(main())
