"""The Dask executor on a real LocalCluster, with real processes, on the real clock.

Most tests share one LocalCluster of 2 worker processes (1 thread, 1 core each),
reached through ``DaskExecutor(address)``; the example flow and the command line start
clusters of their own, as a person would.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from helpers import Recorder, alive, wait_for_files, wait_gone

import scriptflow_trio as sf
from scriptflow_trio import _events as ev
from scriptflow_trio._store import Store

distributed = pytest.importorskip("distributed")

PY = sys.executable
Q_PY = shlex.quote(PY)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[distributed.LocalCluster, distributed.Client]]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            resources={"cores": 1},
            dashboard_address=None,
            scheduler_kwargs={"allowed_failures": 0, "dashboard_address": "127.0.0.1:0"},
        ) as cl,
        distributed.Client(cl, set_as_default=False) as client,
    ):
        yield cl, client


@pytest.fixture
def address(cluster) -> str:
    """The shared cluster's scheduler, with both workers up (a test may kill one)."""
    cl, client = cluster
    client.wait_for_workers(2, timeout=30)
    return cl.scheduler_address


def dask(address: str, **kw) -> sf.DaskExecutor:
    return sf.DaskExecutor(address, grace=1, **kw)


# -- the example flow, as DESIGN.md has it -------------------------------------------------


def solve(i: int) -> sf.Task:
    return sf.Task(
        cmd=f"{Q_PY} -c \"open('test_{i}.txt','w').write('5')\"",
        outputs=f"test_{i}.txt",
        name=f"solve-{i}",
        executor="dask",
    )


async def flow_sleepit() -> None:
    t1, t2 = solve(1), solve(2)
    await sf.bag(t1, t2)
    final = sf.Task(
        cmd=f"{Q_PY} combine.py",
        name="final",
        inputs=[*t1.get_outputs(), *t2.get_outputs()],
        outputs="final.txt",
        executor="dask",
    )
    await final


COMBINE = """
a = int(open("test_1.txt").read())
b = int(open("test_2.txt").read())
open("final.txt", "w").write(f"{a + b}\\n")
"""


async def test_example_flow_on_a_cluster_of_its_own_then_a_rerun_skips_all(workdir):
    Path("combine.py").write_text(COMBINE)
    first = Recorder()
    with trio.fail_after(60):
        # no address: the executor starts a LocalCluster and closes it at the end
        executor = sf.DaskExecutor(workers=2)
        local = sf.LocalExecutor(slots=1)
        async with sf.open_session(executors=[local, executor], listeners=[first]) as s:
            assert executor.capacity == 2 and executor.address.startswith("tcp://")
            await s.run(flow_sleepit)
    assert Path("final.txt").read_text() == "10\n"
    started = first.of(ev.AttemptStarted)
    assert sorted(e.name for e in started) == ["final", "solve-1", "solve-2"]
    assert {e.executor for e in started} == {"dask"}
    logs = sorted(Path(".scriptflow/logs").rglob("*.log"))
    assert len(logs) == 3

    second = Recorder()
    with trio.fail_after(60):
        async with sf.open_session(
            executors=[sf.LocalExecutor(slots=1), sf.DaskExecutor(workers=2)], listeners=[second]
        ) as s:
            await s.run(flow_sleepit)
    assert second.of(ev.AttemptStarted) == []
    assert sorted(e.name for e in second.of(ev.TaskSkipped)) == ["final", "solve-1", "solve-2"]
    assert sorted(Path(".scriptflow/logs").rglob("*.log")) == logs


# -- running: output, log, exit codes ------------------------------------------------------


async def test_output_goes_to_the_log_and_env_and_cwd_are_honoured(workdir, address):
    os.mkdir("sub")
    lines = Recorder()
    code = (
        "import os, sys; print('to out'); print('to err', file=sys.stderr); "
        "open('where.txt', 'w').write(os.getcwd() + ' ' + os.environ['SF_X'])"
    )
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)], listeners=[lines]):
            task = sf.Task(
                cmd=[PY, "-c", code],
                cwd="sub",
                env={"SF_X": "42"},
                outputs="sub/where.txt",
                name="loud",
                quiet=False,
            )
            await task
    where, x = Path("sub/where.txt").read_text().split()
    assert Path(where).resolve() == (workdir / "sub").resolve() and x == "42"
    assert sorted(e.line for e in lines.of(ev.OutputLine)) == ["to err", "to out"]
    (log,) = Path(".scriptflow/logs").rglob("*.log")
    assert "to out" in log.read_text() and "to err" in log.read_text()
    (finished,) = lines.of(ev.AttemptFinished)
    assert finished.ok and finished.returncode == 0


async def test_command_not_found_is_named_and_not_retried(workdir, address):
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)]):
            with pytest.raises(
                sf.TaskFailed, match="command not found: 'no-such-program-xyz'"
            ) as info:
                await sf.Task(cmd="no-such-program-xyz --flag", retry=2)
    assert info.value.attempts == 1
    assert "command not found" in info.value.log_tail


async def test_nonzero_exit_is_retried_and_reported(workdir, address):
    flaky = "test -e tried || { touch tried; echo first try fails; exit 1; }; echo ok > out.txt"
    rec = Recorder()
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)], listeners=[rec]):
            await sf.Task(cmd=flaky, shell=True, outputs="out.txt", retry=1, name="flaky")
            with pytest.raises(sf.TaskFailed, match="exit code 3") as info:
                await sf.Task(cmd="echo bad; exit 3", shell=True, retry=1, name="bad")
    assert Path("out.txt").read_text() == "ok\n"
    assert info.value.returncode == 3 and info.value.attempts == 2
    assert "bad" in info.value.log_tail
    flaky_attempts = [
        (e.attempt, e.returncode) for e in rec.of(ev.AttemptFinished) if e.name == "flaky"
    ]
    assert flaky_attempts == [(1, 1), (2, 0)]


async def test_cpu_time_and_peak_memory_are_measured_on_the_worker(workdir, address):
    burn = "import time\nb = b'x' * (400 << 20)\nwhile time.process_time() < 0.3: pass\n"
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)]) as session:
            await sf.Task(
                cmd=f"{Q_PY} -c {shlex.quote(burn)} && touch burnt",
                shell=True,
                outputs="burnt",
                name="burn",
            )
            await sf.Task(cmd="touch small", outputs="small", name="small")
            run_id = session.run_id
    store = Store.open(workdir / ".scriptflow")
    try:
        record, small = store.attempts(run_id)
    finally:
        store.close()
    assert record.executor == "dask"
    assert record.cpu_seconds is not None and record.cpu_seconds > 0.1, record
    # its own peak, not the worker's (Linux counts the worker's in a child's)
    assert record.max_rss is not None and 400 << 20 <= record.max_rss < 520 << 20, record
    assert small.max_rss is None, small


async def test_a_task_asking_more_cores_than_any_worker_has_fails_clearly(workdir, address):
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address, slots=4)]):
            with pytest.raises(sf.TaskFailed, match="largest Dask worker has 1"):
                await sf.Task(cmd="true", cores=2)


# -- cancellation --------------------------------------------------------------------------


def sleeper(tag: str, **kw) -> sf.Task:
    """A shell whose background ``sleep 300`` would outlive a kill of the shell alone."""
    return sf.Task(
        cmd=f"sleep 300 & echo $! > {tag}.child; echo $$ > {tag}.sh; wait",
        shell=True,
        outputs=f"{tag}.out",
        name=tag,
        **kw,
    )


async def test_cancelling_the_scope_kills_the_processes_on_the_workers(workdir, address):
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)]):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sf.bag, sleeper("a"), sleeper("b"))
                    pids = await wait_for_files("a.child", "a.sh", "b.child", "b.sh")
                    assert all(alive(p) for p in pids)
                    t0 = time.monotonic()
                    scope.cancel()
            await wait_gone(pids, limit=10)
            assert time.monotonic() - t0 < 10
    assert not Path("a.out").exists()


async def test_a_timeout_kills_the_process_on_the_worker(workdir, address):
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address)]):
            with pytest.raises(sf.TaskFailed, match="timed out after 1 s"):
                await sf.bag(sleeper("t", timeout=1))
            await wait_gone([int(Path("t.child").read_text()), int(Path("t.sh").read_text())])


async def test_a_queued_attempt_cancelled_before_it_starts_never_starts(workdir, address):
    # three one-core sleepers on two one-core workers: the third waits in Dask's queue
    with trio.fail_after(30):
        async with sf.open_session(executors=[dask(address, slots=3)]):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sf.bag, sleeper("a"), sleeper("b"), sleeper("c"))
                    while len(running := [t for t in "abc" if Path(f"{t}.sh").exists()]) < 2:
                        await trio.sleep(0.05)
                    await trio.sleep(0.5)  # a third one, started wrongly, would show by now
                    assert len([t for t in "abc" if Path(f"{t}.sh").exists()]) == 2
                    pids = await wait_for_files(
                        *(f"{t}.{k}" for t in running for k in ("sh", "child"))
                    )
                    scope.cancel()
            await wait_gone(pids)
            await trio.sleep(1)  # the freed workers would start the third now, if it were left
    assert len([t for t in "abc" if Path(f"{t}.sh").exists()]) == 2


# -- faults --------------------------------------------------------------------------------


async def test_a_dead_worker_fails_the_attempt_and_the_retry_runs_elsewhere(
    workdir, address, cluster
):
    _, client = cluster
    # attempt 1 notes its worker (the shell's parent) and sleeps; attempt 2 succeeds
    cmd = (
        "if [ -e first.worker ]; then echo $PPID > second.worker; echo done > out.txt; "
        "else echo $PPID > first.worker; sleep 300 & echo $! > orphan; wait; fi"
    )
    rec = Recorder()
    with trio.fail_after(45):
        async with sf.open_session(executors=[dask(address)], listeners=[rec]):
            async with trio.open_nursery() as nursery:
                task = sf.Task(cmd=cmd, shell=True, outputs="out.txt", retry=1, name="victim")
                nursery.start_soon(sf.bag, task)
                worker, orphan = await wait_for_files("first.worker", "orphan")
                pids = await trio.to_thread.run_sync(lambda: client.run(os.getpid))
                assert worker in pids.values()
                os.kill(worker, signal.SIGKILL)
    assert Path("out.txt").read_text() == "done\n"
    assert int(Path("second.worker").read_text()) != worker
    first, second = rec.of(ev.AttemptFinished)
    assert not first.ok and first.will_retry and second.ok
    assert "died while running this attempt" in first.reason
    log = sorted(Path(".scriptflow/logs").rglob("*.1.log"))[0].read_text()
    assert "died while running this attempt" in log
    # the worker's guard killed what the dead worker had started
    await wait_gone([orphan])


async def test_an_unreachable_scheduler_is_a_clear_error_naming_it(workdir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    with trio.fail_after(20), pytest.raises(sf.ExecutorError, match=address):
        async with sf.open_session(executors=[sf.DaskExecutor(address, connect_timeout=2)]):
            pass
    assert time.monotonic() - t0 < 10


async def test_jobqueue_slurm_cluster_makes_one_worker_of_its_cores_per_job(workdir):
    # No SLURM here: this checks the cluster the executor sets up and the job script it
    # would submit; nothing is submitted while no task asks (minimum 0).
    if importlib.util.find_spec("dask_jobqueue") is None:  # not imported here: see below
        pytest.skip("dask-jobqueue is not installed")
    executor = sf.DaskExecutor(
        jobqueue={
            "kind": "slurm",
            "cores": 2,
            "memory": "2GB",
            "maximum": 3,
            "scheduler_options": {
                "host": "127.0.0.1",
                "dashboard": False,
                "dashboard_address": "127.0.0.1:0",
            },
        }
    )
    with trio.fail_after(30):
        async with executor:
            assert executor.capacity == 6
            script = executor.cluster.job_script()
            assert type(executor.cluster).__name__ == "SLURMCluster"
    assert "#SBATCH --cpus-per-task=2" in script
    assert "--nthreads 2" in script and "--nworkers" not in script
    assert "--resources cores=2" in script


def slurm_running() -> bool:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in out for state in ("idle", "mix", "alloc"))


@pytest.mark.slurm
async def test_jobqueue_on_slurm_runs_the_example_flow_on_workers_that_are_jobs(workdir):
    if importlib.util.find_spec("dask_jobqueue") is None:
        pytest.skip("dask-jobqueue is not installed")
    if not slurm_running():
        pytest.skip("no SLURM is running (tests/cluster/setup.sh starts one)")
    Path("combine.py").write_text(COMBINE)
    executor = sf.DaskExecutor(
        jobqueue={
            "kind": "slurm",
            "cores": 1,
            "memory": "1GB",
            "maximum": 2,
            # the test SLURM does not schedule memory: no --mem directive
            "job_directives_skip": ["--mem"],
            "log_directory": str(workdir / "slurm-logs"),
            "scheduler_options": {
                "host": "127.0.0.1",
                "dashboard": False,
                "dashboard_address": "127.0.0.1:0",
            },
        },
    )

    async def flow() -> None:
        await flow_sleepit()
        await sf.Task(cmd="echo $SLURM_JOB_ID > job.txt", shell=True, outputs="job.txt")

    with trio.fail_after(120):
        async with sf.open_session(executors=[executor]) as session:
            assert executor.capacity == 2
            await session.run(flow)
    assert Path("final.txt").read_text() == "10\n"
    assert Path("job.txt").read_text().strip().isdigit()  # the worker ran as a SLURM job


def test_without_dask_the_error_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "distributed" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(sf.ExecutorError, match=r"pip install 'scriptflow-trio\[dask\]'"):
        sf.DaskExecutor()


def test_importing_the_package_does_not_import_dask():
    code = "import sys, scriptflow_trio; print(sorted({'dask', 'distributed'} & set(sys.modules)))"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the bridge: a few threads, whatever the number of attempts ----------------------------


async def test_many_attempts_in_flight_cost_no_thread_each(workdir, address):
    n = 500
    log_dir = workdir / "logs"
    log_dir.mkdir()
    executor = dask(address)
    results: list[sf.Outcome] = []
    async with executor:
        baseline = threading.active_count()
        peak = baseline

        async def one(i: int) -> None:
            spec = sf.AttemptSpec(
                name=f"t{i}",
                key=f"{i:08d}",
                attempt=1,
                cmd=("true",),
                cwd=str(workdir),
                env=None,
                log_path=log_dir / f"{i}.log",
            )
            results.append(await executor.run(spec))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
                while len(results) < n:
                    peak = max(peak, threading.active_count())
                    await trio.sleep(0.01)
    assert [r.returncode for r in results] == [0] * n
    assert peak - baseline <= 3, (baseline, peak)


# -- the command line ----------------------------------------------------------------------

FLOWS = """
import scriptflow_trio as sf

async def flow_sleepit():
    t1 = sf.Task(cmd="python -c \\"open('test_1.txt','w').write('5')\\"",
                 outputs="test_1.txt", name="solve-1")
    t2 = sf.Task(cmd="python -c \\"open('test_2.txt','w').write('5')\\"",
                 outputs="test_2.txt", name="solve-2")
    await sf.bag(t1, t2)                      # in parallel
    final = sf.Task(cmd="python combine.py", name="final",
                    inputs=[*t1.get_outputs(), *t2.get_outputs()],
                    outputs="final.txt")
    await final

async def flow_sleepy():
    await sf.bag(*(
        sf.Task(cmd=f"sleep 300 & echo $! > {t}.child; echo $$ > {t}.sh; wait",
                shell=True, outputs=f"{t}.out", name=t, executor="dask")
        for t in "ab"
    ))
"""


@pytest.fixture
def cli_dir(tmp_path: Path) -> Path:
    """A project with the flows file, and a ``python`` on PATH that is this interpreter."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(PY)
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "combine.py").write_text(COMBINE)
    return tmp_path


def cli(cwd: Path, *args: str, **kw) -> subprocess.Popen[str]:
    env = dict(os.environ, COLUMNS="1000")
    env["PATH"] = f"{cwd / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.Popen(
        [PY, "-m", "scriptflow_trio", "flows.py", *args, "--plain"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_cli_runs_the_example_on_dask_then_skips_it(cli_dir: Path):
    proc = cli(cli_dir, "sleepit", "--executor", "dask", "--dask-workers", "2")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert (cli_dir / "final.txt").read_text() == "10\n"
    assert "ran 3" in out and "Traceback" not in out
    proc = cli(cli_dir, "sleepit", "--executor", "dask")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "skipped 3" in out


def test_cli_ctrl_c_kills_the_attempts_on_the_workers(cli_dir: Path):
    # tasks naming executor="dask" get one without an option; Ctrl-C signals the whole
    # foreground process group, the local cluster's workers included
    proc = cli(cli_dir, "sleepy", start_new_session=True)
    try:
        files = [cli_dir / f"{t}.{k}" for t in "ab" for k in ("child", "sh")]
        deadline = time.monotonic() + 30
        while not all(f.exists() and f.read_text().strip() for f in files):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        pids = [int(f.read_text()) for f in files]
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        while any(alive(p) for p in pids):
            assert time.monotonic() - t0 < 10, [p for p in pids if alive(p)]
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
