"""The batch executors against a real SLURM, a real Grid Engine, and a fake PBS.

``tests/cluster/setup.sh`` (run by .ci/run) starts the two real schedulers on this
machine; without them, their tests skip. The PBS tests use the fake qsub/qstat/qdel
in tests/cluster/fake_pbs: no PBS server can be installed here. Each scheduler
command goes through a shim that counts its calls and keeps what it printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio

import scriptflow_trio as sf
from scriptflow_trio import _events as ev
from scriptflow_trio._store import Store

PY = sys.executable
HERE = Path(__file__).parent
FAKE_PBS = HERE / "cluster" / "fake_pbs"
SETUP = "run tests/cluster/setup.sh as root to start one"
INTERVAL = 0.5

_SLURM_LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}


def _ok(*argv: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def slurm_running() -> bool:
    out = _ok("sinfo", "-h", "-o", "%t")
    return out is not None and any(s in out for s in ("idle", "mix", "alloc"))


def sge_running() -> bool:
    out = _ok("qstat", "-f")
    return out is not None and "all.q@" in out


@attrs.define
class Cluster:
    kind: str
    shims: Path
    executor: type[sf.Executor]
    submit: str
    query: str
    cancel: str
    settings: dict = attrs.field(factory=dict)
    bad_queue: dict = attrs.field(factory=dict)
    complaint: str = ""

    def make(self, **settings) -> sf.Executor:
        values = dict(
            poll_interval=INTERVAL,
            exit_grace=3.0,
            cancel_window=0.1,
            cancel_timeout=20.0,
            submit_interval=0.0,
            **self.settings,
        )
        values.update(settings)
        return self.executor(**values)

    def calls(self, program: str) -> list[str]:
        path = self.shims / f"{program}.calls"
        return path.read_text().splitlines() if path.exists() else []

    def submitted(self) -> list[str]:
        path = self.shims / f"{self.submit}.out"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split(";")[0].strip() for line in lines if line.strip()]

    def live(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` the scheduler still has queued or running (real binaries)."""
        real = os.environ["PATH"].split(os.pathsep, 1)[1]
        if self.kind == "slurm":
            argv = ["squeue", "-h", "-o", "%i %T", "--states=all"]
        else:
            argv = ["qstat"]
        exe = shutil.which(argv[0], path=real)
        assert exe is not None
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, check=True).stdout
        found = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[0][:1].isdigit():
                continue
            if self.kind == "slurm" and parts[1] not in _SLURM_LIVE:
                continue
            if self.kind == "pbs" and parts[4] == "C":
                continue
            found.add(parts[0])
        return found & set(ids)

    def running(self, ids: list[str]) -> set[str]:
        if self.kind == "slurm":
            out = _ok("squeue", "-h", "-o", "%i %T", "--states=all") or ""
            running = {p[0] for p in map(str.split, out.splitlines()) if p[1:] == ["RUNNING"]}
        else:
            out = _ok("qstat") or ""
            running = {
                p[0] for p in map(str.split, out.splitlines()) if len(p) > 4 and p[4] in "rR"
            }
        return running & set(ids)


def _shim(folder: Path, program: str) -> None:
    real = shutil.which(program)
    assert real is not None, program
    calls = shlex.quote(str(folder / f"{program}.calls"))
    out = shlex.quote(str(folder / f"{program}.out"))
    (folder / program).write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'printed=$({shlex.quote(real)} "$@")\n'
        "rc=$?\n"
        '[ -n "$printed" ] && printf "%s\\n" "$printed"\n'
        f'[ "$rc" -eq 0 ] && [ -n "$printed" ] && printf "%s\\n" "$printed" >> {out}\n'
        'exit "$rc"\n'
    )
    (folder / program).chmod(0o755)


@pytest.fixture(
    params=[
        pytest.param("slurm", marks=pytest.mark.slurm),
        pytest.param("sge", marks=pytest.mark.sge),
        pytest.param("pbs", marks=pytest.mark.pbs),
    ]
)
def cluster(request, workdir: Path, tmp_path_factory, monkeypatch) -> Iterator[Cluster]:
    kind = request.param
    if kind == "slurm":
        if not slurm_running():
            pytest.skip(f"no SLURM is running (sinfo fails or shows no node): {SETUP}")
        c = Cluster(
            kind,
            Path(),
            sf.SlurmExecutor,
            "sbatch",
            "squeue",
            "scancel",
            bad_queue={"partition": "nope"},
            complaint="invalid partition",
        )
    elif kind == "sge":
        monkeypatch.setenv("SGE_ROOT", os.environ.get("SGE_ROOT", "/var/lib/gridengine"))
        monkeypatch.setenv("SGE_CELL", os.environ.get("SGE_CELL", "default"))
        if not sge_running():
            pytest.skip(f"no Grid Engine is running (qstat fails or lists no queue): {SETUP}")
        c = Cluster(
            kind,
            Path(),
            sf.SGEExecutor,
            "qsub",
            "qstat",
            "qdel",
            bad_queue={"queue": "nope.q"},
            complaint="nope.q",
        )
    else:
        monkeypatch.setenv("PATH", f"{FAKE_PBS}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_PBS_DIR", str(tmp_path_factory.mktemp("fake_pbs")))
        c = Cluster(
            kind,
            Path(),
            sf.PBSExecutor,
            "qsub",
            "qstat",
            "qdel",
            bad_queue={"queue": "nope"},
            complaint="Unknown queue",
        )
    c.shims = tmp_path_factory.mktemp("shims")
    for program in (c.submit, c.query, c.cancel):
        _shim(c.shims, program)
    monkeypatch.setenv("PATH", f"{c.shims}{os.pathsep}{os.environ['PATH']}")
    yield c
    # a failed test must not leave jobs behind to block the next ones
    left = c.live(c.submitted())
    if left:
        real = os.environ["PATH"].split(os.pathsep, 1)[1]
        subprocess.run([shutil.which(c.cancel, path=real) or c.cancel, *left], check=False)


class Recorder:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def on_event(self, event: ev.Event) -> None:
        self.events.append(event)

    def finished(self) -> dict[str, str]:
        return {e.name: e.status.value for e in self.events if isinstance(e, ev.TaskFinished)}


def echo_task(i: int, prefix: str = "out") -> sf.Task:
    return sf.Task(
        cmd=f"echo {i} > {prefix}{i}.txt", shell=True, outputs=f"{prefix}{i}.txt", name=f"t{i}"
    )


async def wait_until(check: Callable[[], bool], limit: float, what: str) -> None:
    with trio.move_on_after(limit):
        while not check():
            await trio.sleep(0.2)
        return
    raise AssertionError(f"waited {limit:g} s for {what}")


async def test_twenty_tasks_run_with_one_query_per_interval(cluster: Cluster, workdir: Path):
    t0 = time.monotonic()
    with trio.fail_after(240):
        async with sf.open_session(executors=[cluster.make(maxsize=20)]):
            await sf.bag([echo_task(i) for i in range(20)])
    elapsed = time.monotonic() - t0
    assert [Path(f"out{i}.txt").read_text() for i in range(20)] == [f"{i}\n" for i in range(20)]
    assert len(cluster.submitted()) == 20
    queries = len(cluster.calls(cluster.query))
    # one call per interval for all twenty jobs, never one per job
    assert 1 <= queries <= elapsed / INTERVAL + 2, (queries, elapsed)
    print(f"{cluster.kind}: 20 tasks in {elapsed:.1f} s, {queries} {cluster.query} calls")


# about 0.3 s of CPU and 400 MB touched
BURN = "import time\nb = b'x' * (400 << 20)\nwhile time.process_time() < 0.3: pass\n"


async def test_the_jobs_cpu_time_and_peak_memory_are_recorded(cluster: Cluster, workdir: Path):
    with trio.fail_after(120):
        async with sf.open_session(executors=[cluster.make()]) as session:
            await sf.Task(
                cmd=f"{PY} -c {shlex.quote(BURN)} && touch burnt",
                shell=True,
                outputs="burnt",
                name="burn",
            )
            run_id = session.run_id
    store = Store.open(workdir / ".scriptflow")
    try:
        (record,) = store.attempts(run_id)
    finally:
        store.close()
    assert record.job_id == cluster.submitted()[0]
    assert record.cpu_seconds is not None and record.cpu_seconds > 0.1, record
    assert record.max_rss is not None and 400 << 20 <= record.max_rss < 520 << 20, record


async def test_a_failing_command_reports_its_exit_code_and_log(cluster: Cluster, workdir: Path):
    with trio.fail_after(120):
        async with sf.open_session(executors=[cluster.make()]):
            with pytest.raises(sf.TaskFailed) as info:
                await sf.Task(cmd="echo oops; exit 3", shell=True, name="bad", outputs="x.txt")
    assert info.value.returncode == 3
    assert "oops" in info.value.log_tail


async def test_cancelling_cancels_the_jobs_in_one_call_and_waits_for_them(
    cluster: Cluster, workdir: Path
):
    tasks = [
        sf.Task(cmd=f"sleep 300; touch s{i}", shell=True, outputs=f"s{i}", name=f"s{i}")
        for i in range(4)
    ]
    with trio.fail_after(120):
        async with sf.open_session(executors=[cluster.make()]):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sf.bag, tasks)
                    await wait_until(lambda: len(cluster.submitted()) == 4, 30, "4 submissions")
                    ids = cluster.submitted()
                    await wait_until(lambda: len(cluster.running(ids)) >= 2, 60, "running jobs")
                    t0 = time.monotonic()
                    scope.cancel()
        took = time.monotonic() - t0
    assert not cluster.live(ids)
    assert took < 15
    assert len(cluster.calls(cluster.cancel)) == 1, cluster.calls(cluster.cancel)
    assert sorted(cluster.calls(cluster.cancel)[0].split()) == sorted(ids)
    print(f"{cluster.kind}: 4 jobs cancelled and gone in {took:.1f} s")


async def test_a_refused_submission_names_the_setting_to_fix(cluster: Cluster, workdir: Path):
    with trio.fail_after(60):
        async with sf.open_session(executors=[cluster.make(**cluster.bad_queue)]):
            with pytest.raises(sf.TaskFailed) as info:
                await echo_task(1)
    (setting,) = cluster.bad_queue
    assert cluster.complaint in info.value.reason
    assert f"executor's `{setting}` setting" in info.value.reason
    assert info.value.attempts == 1


async def test_a_finished_job_is_judged_by_its_exit_code_file(cluster: Cluster, workdir: Path):
    state = workdir / ".scriptflow"
    log = state / "logs" / "run-1" / "t-00000000.1.log"
    log.parent.mkdir(parents=True)
    spec = sf.AttemptSpec(
        name="t", key="0" * 64, attempt=1, cmd="exit 4", cwd=str(workdir), env=None, log_path=log
    )
    with trio.fail_after(60):
        async with cluster.make() as executor:
            first = await executor.run(spec)
        assert first.returncode == 4 and first.job_id
        seen: list[str] = []
        again = spec._replace(reattach=first.job_id, on_submitted=seen.append)
        async with cluster.make() as executor:
            second = await executor.run(again)
    assert (second.returncode, second.job_id, seen) == (4, first.job_id, [first.job_id])
    assert len(cluster.submitted()) == 1


async def test_a_job_killed_outside_fails_with_a_message_that_says_so(
    cluster: Cluster, workdir: Path
):
    async def kill_it() -> None:
        await wait_until(lambda: len(cluster.submitted()) == 1, 30, "the submission")
        ids = cluster.submitted()
        await wait_until(lambda: bool(cluster.running(ids)), 60, "a running job")
        await trio.run_process([cluster.cancel, *ids], check=False, capture_stdout=True)

    with trio.fail_after(90):
        async with sf.open_session(executors=[cluster.make(exit_grace=2)]):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_it)
                with pytest.raises(sf.TaskFailed) as info:
                    await sf.Task(cmd="sleep 300", name="victim", outputs="v.txt")
    reason = info.value.reason
    assert cluster.submitted()[0] in reason
    assert "without an exit code" in reason or "exit-code file" in reason, reason


ENGINE = """
import sys, trio, scriptflow_trio as sf

async def main():
    executor = sf.{cls}(poll_interval={interval}, cancel_window=0.1)
    async with sf.open_session(executors=[executor]):
        await sf.bag([
            sf.Task(cmd=f"sleep 6; echo {{i}} > r{{i}}.txt", shell=True,
                    outputs=f"r{{i}}.txt", name=f"r{{i}}")
            for i in range(4)
        ])

trio.run(main)
"""


async def test_a_killed_engines_jobs_are_awaited_not_resubmitted(cluster: Cluster, workdir: Path):
    Path("engine.py").write_text(ENGINE.format(cls=cluster.executor.__name__, interval=INTERVAL))
    engine = subprocess.Popen([PY, "engine.py"])
    try:
        await wait_until(lambda: len(cluster.submitted()) == 4, 60, "4 submissions")
        await trio.sleep(0.3)  # the last job id reaches the journal
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait()
    ids = cluster.submitted()
    assert cluster.live(ids) == set(ids)
    rec = Recorder()
    with trio.fail_after(120):
        async with sf.open_session(executors=[cluster.make()], listeners=[rec]):
            await sf.bag(
                [
                    sf.Task(
                        cmd=f"sleep 6; echo {i} > r{i}.txt",
                        shell=True,
                        outputs=f"r{i}.txt",
                        name=f"r{i}",
                    )
                    for i in range(4)
                ]
            )
    assert cluster.submitted() == ids  # nothing new was submitted
    assert rec.finished() == {f"r{i}": "succeeded" for i in range(4)}
    assert [Path(f"r{i}.txt").read_text() for i in range(4)] == [f"{i}\n" for i in range(4)]
    reasons = {e.name: e.reason for e in rec.events if isinstance(e, ev.AttemptStarted)}
    assert all("waiting for it" in r for r in reasons.values()), reasons


@pytest.mark.pbs
async def test_pbs_falls_back_to_one_qdel_per_job_where_a_site_wants_that(
    workdir: Path, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", f"{FAKE_PBS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_DIR", str(tmp_path / "pbs"))
    monkeypatch.setenv("FAKE_PBS_QDEL_ONE", "1")
    tasks = [sf.Task(cmd="sleep 300", name=f"p{i}", outputs=f"p{i}") for i in range(3)]
    with trio.fail_after(60):
        async with sf.open_session(
            executors=[sf.PBSExecutor(poll_interval=INTERVAL, cancel_window=0.1)]
        ):
            with trio.move_on_after(3):
                await sf.bag(tasks)
    out = (await trio.run_process(["qstat"], capture_stdout=True)).stdout.decode()
    states = [line.split()[4] for line in out.splitlines()[2:]]
    assert states == ["C", "C", "C"]


FLOWS = """
import scriptflow_trio as sf

sf.init({{"executors": {{"{kind}": {settings!r}}}}})

async def flow_go():
    tasks = [sf.Task(cmd=f"echo {{i}} > c{{i}}.txt", shell=True, outputs=f"c{{i}}.txt",
                     name=f"c{{i}}") for i in range(3)]
    here = sf.Task(cmd="echo local > here.txt", shell=True, outputs="here.txt",
                   name="here", executor="local")
    await sf.bag(*tasks, here)

async def flow_sleepers():
    await sf.bag([sf.Task(cmd=f"sleep 300; touch z{{i}}", shell=True, outputs=f"z{{i}}",
                          name=f"z{{i}}") for i in range(4)])
"""

CLI_SETTINGS = {"poll_interval": INTERVAL, "cancel_window": 0.1, "exit_grace": 3}


def write_flows(cluster: Cluster, **settings) -> None:
    Path("flows.py").write_text(
        FLOWS.format(kind=cluster.kind, settings={**CLI_SETTINGS, **settings})
    )


def run_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "scriptflow_trio", "flows.py", *args, "--executor", cluster.kind, "--plain"],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_cli_runs_a_flow_on_the_cluster_and_keeps_local_tasks_local(
    cluster: Cluster, workdir: Path
):
    write_flows(cluster, maxsize=5)
    done = await trio.to_thread.run_sync(run_cli, cluster, "go")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [Path(f"c{i}.txt").read_text() for i in range(3)] == ["0\n", "1\n", "2\n"]
    assert Path("here.txt").read_text() == "local\n"
    assert len(cluster.submitted()) == 3


async def test_the_cli_says_which_setting_to_fix_when_the_scheduler_refuses(
    cluster: Cluster, workdir: Path
):
    write_flows(cluster, **cluster.bad_queue)
    done = await trio.to_thread.run_sync(run_cli, cluster, "go")
    (setting,) = cluster.bad_queue
    assert done.returncode == 1
    assert cluster.complaint in done.stdout
    assert f"fix the {cluster.kind} executor's `{setting}` setting" in done.stdout


async def test_ctrl_c_of_the_cli_leaves_no_job_in_the_queue(cluster: Cluster, workdir: Path):
    write_flows(cluster)
    argv = [PY, "-m", "scriptflow_trio", "flows.py", "sleepers", "--executor", cluster.kind]
    engine = subprocess.Popen([*argv, "--plain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await wait_until(lambda: len(cluster.submitted()) == 4, 60, "4 submissions")
        ids = cluster.submitted()
        await wait_until(lambda: len(cluster.running(ids)) >= 2, 60, "running jobs")
        t0 = time.monotonic()
        engine.send_signal(signal.SIGINT)
        await wait_until(lambda: engine.poll() is not None, 15, "the engine to exit")
        await wait_until(lambda: not cluster.live(ids), 15 - (time.monotonic() - t0), "no job")
    finally:
        if engine.poll() is None:
            engine.kill()
        engine.wait()
    assert engine.returncode == 130
    print(f"{cluster.kind}: Ctrl-C to an empty queue in {time.monotonic() - t0:.1f} s")


async def test_a_failing_scheduler_query_is_retried_not_taken_as_a_lost_job(
    cluster: Cluster, workdir: Path
):
    # the query shim fails its first three calls, as a busy controller does
    shim = cluster.shims / cluster.query
    fails = cluster.shims / "fails"
    fails.write_text("3")
    shim.write_text(
        shim.read_text().replace(
            "#!/bin/sh\n",
            "#!/bin/sh\n"
            f'n=$(cat {fails}); if [ "$n" -gt 0 ]; then echo $((n - 1)) > {fails}; '
            'echo "Socket timed out on send/recv operation" >&2; exit 1; fi\n',
            1,
        )
    )
    with trio.fail_after(120):
        async with sf.open_session(executors=[cluster.make(exit_grace=1)]):
            await sf.Task(cmd="sleep 2; echo ok > ok.txt", shell=True, outputs="ok.txt")
    assert Path("ok.txt").read_text() == "ok\n"
    assert fails.read_text().strip() == "0"


async def test_a_lost_job_is_retried(cluster: Cluster, workdir: Path):
    async def kill_first() -> None:
        await wait_until(lambda: len(cluster.submitted()) == 1, 30, "the submission")
        ids = cluster.submitted()
        await wait_until(lambda: Path("first").exists(), 60, "the first attempt to start")
        await trio.run_process([cluster.cancel, *ids], check=False, capture_stdout=True)

    cmd = "if [ -e first ]; then echo ok > v.txt; else touch first; sleep 300; fi"
    rec = Recorder()
    with trio.fail_after(90):
        async with sf.open_session(executors=[cluster.make(exit_grace=2)], listeners=[rec]):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_first)
                await sf.Task(cmd=cmd, shell=True, name="victim", outputs="v.txt", retry=1)
    assert Path("v.txt").read_text() == "ok\n"
    assert len(cluster.submitted()) == 2
    (failed,) = [e for e in rec.events if isinstance(e, ev.AttemptFinished) and not e.ok]
    assert cluster.submitted()[0] in failed.reason
