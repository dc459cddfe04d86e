"""Ctrl-C and SIGTERM on the real CLI: every process tree dies, the exit code tells."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import alive

FLOWS = """
import scriptflow_trio as sf

async def flow_sleepy():
    tasks = [sf.Task(cmd=f"sleep 60 & echo $! > {i}.child; echo $$ > {i}.sh; wait",
                     shell=True, outputs=f"{i}.out", name=f"sleepy-{i}") for i in range(2)]
    tasks.append(sf.Task(cmd="sleep 60", outputs="plain.out", name="plain"))
    await sf.bag(*tasks)
"""


def wait_for(paths: list[Path], limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while not all(p.exists() and p.read_text().strip() for p in paths):
        assert time.monotonic() < deadline, "the tasks did not start"
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_kills_every_process_and_exits(tmp_path: Path, signum: int, code: int) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_trio", "flows.py", "sleepy", "-j", "3", "--plain"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pid_files = [tmp_path / f"{i}.{k}" for i in range(2) for k in ("child", "sh")]
        wait_for(pid_files)
        pids = [int(p.read_text()) for p in pid_files]
        started = time.monotonic()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == code, out
    assert elapsed < 5, out
    assert not [p for p in pids if alive(p)]
    assert "interrupted: " in out and "sleepy-0" in out and "plain" in out
    assert "Traceback" not in out and "error:" not in out
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
