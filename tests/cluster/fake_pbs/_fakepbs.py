"""A fake PBS/Torque server for the tests: qsub, qstat and qdel share this module.

No PBS server can be installed on the test machines, so these behave like Torque's
commands as far as the PBS executor sees them: qsub prints an id like ``12.fakeserver``
and runs the job script in the background (with PBS_JOBID set, output to the ``-o``
file of its ``#PBS`` lines); qstat lists the jobs as ``Q``, ``R`` or ``C`` (completed
jobs stay listed, as with Torque's keep_completed); qdel kills a job's process group.
State lives in $FAKE_PBS_DIR. $FAKE_PBS_QDEL_ONE=1 makes qdel refuse several ids at
once, as some sites do.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

SERVER = "fakeserver"
QUEUES = {"batch"}


def state_dir() -> Path:
    default = Path(os.environ.get("TMPDIR", "/tmp")) / f"fake_pbs_{os.getuid()}"
    path = Path(os.environ.get("FAKE_PBS_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def next_number(base: Path) -> int:
    with open(base / "counter.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = base / "counter"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        return n


def directives(script: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in script.read_text().splitlines():
        if not line.startswith("#PBS"):
            continue
        words = shlex.split(line[4:])
        if len(words) >= 2 and words[0].startswith("-"):
            found[words[0]] = words[1]
    return found


def qsub(argv: list[str]) -> int:
    if not argv:
        print("usage: qsub [options] script", file=sys.stderr)
        return 2
    script = Path(argv[-1]).resolve()
    options = directives(script)
    words = argv[:-1]
    for flag, value in zip(words[::2], words[1::2], strict=False):
        options[flag] = value
    queue = options.get("-q", "batch")
    if queue not in QUEUES:
        print(
            f"qsub: submit error: (Unknown queue MSG=requested queue not found: {queue})",
            file=sys.stderr,
        )
        return 1
    base = state_dir()
    n = next_number(base)
    job_id = f"{n}.{SERVER}"
    (base / f"{n}.name").write_text(options.get("-N", script.name)[:16])
    log = options.get("-o", str(Path.cwd() / f"{script.name}.o{n}"))
    env = {**os.environ, "PBS_JOBID": job_id, "PBS_O_WORKDIR": os.getcwd()}
    runner = (
        'echo $$ > "$1.pid"; bash "$2" >> "$3" 2>&1; '
        'rc=$?; [ -e "$1.done" ] || echo "$rc" > "$1.done"'
    )
    subprocess.Popen(
        ["/bin/sh", "-c", runner, "fakepbs", str(base / str(n)), str(script), log],
        cwd=options.get("-d", os.getcwd()),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    print(job_id)
    return 0


def qstat(argv: list[str]) -> int:
    base = state_dir()
    numbers = sorted(int(p.stem) for p in base.glob("*.name"))
    if not numbers:
        return 0
    print(f"{'Job ID':<25} {'Name':<16} {'User':<15} {'Time Use':<8} S Queue")
    print(f"{'-' * 25} {'-' * 16} {'-' * 15} {'-' * 8} - -----")
    user = os.environ.get("USER", "root")
    for n in numbers:
        if (base / f"{n}.done").exists():
            state = "C"
        elif (base / f"{n}.pid").exists():
            state = "R"
        else:
            state = "Q"
        name = (base / f"{n}.name").read_text()
        print(f"{f'{n}.{SERVER}':<25} {name:<16} {user:<15} {'00:00:00':<8} {state} batch")
    return 0


def qdel(argv: list[str]) -> int:
    if len(argv) > 1 and os.environ.get("FAKE_PBS_QDEL_ONE"):
        print("qdel: this site deletes one job per call", file=sys.stderr)
        return 2
    base = state_dir()
    status = 0
    for job_id in argv:
        n = job_id.split(".")[0]
        if not (base / f"{n}.name").exists():
            print(f"qdel: Unknown Job Id {job_id}", file=sys.stderr)
            status = 153
            continue
        pid_file = base / f"{n}.pid"
        if pid_file.exists() and not (base / f"{n}.done").exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        if not (base / f"{n}.done").exists():
            (base / f"{n}.done").write_text("cancelled")
    return status


def main() -> int:
    command = {"qsub": qsub, "qstat": qstat, "qdel": qdel}[Path(sys.argv[0]).name]
    return command(sys.argv[1:])
