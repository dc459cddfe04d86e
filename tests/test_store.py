"""The store with real processes: kill -9, command changes, content hashes, the lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import Recorder, alive

import scriptflow_trio as sf
from scriptflow_trio import _events as ev
from scriptflow_trio._records import AttemptStatus, RunRecord, RunStatus
from scriptflow_trio._store import Store, hash_file
from scriptflow_trio.testing import FakeExecutor

PY = sys.executable


def cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "scriptflow_trio", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


TEN_TASKS = """
import scriptflow_trio as sf

async def flow_ten():
    await sf.bag(*[
        sf.Task(cmd=f"echo $$ > pid_{i}; echo x >> count_{i}; sleep 1; echo done > out_{i}",
                shell=True, outputs=f"out_{i}", name=f"t{i}")
        for i in range(10)
    ])
"""


def counts(root: Path) -> dict[int, int]:
    return {
        i: len((root / f"count_{i}").read_text().splitlines())
        for i in range(10)
        if (root / f"count_{i}").exists()
    }


def recorded_successes(root: Path) -> set[int]:
    """The tasks of TEN_TASKS the store has committed as succeeded, read beside the engine."""
    path = root / ".scriptflow" / "store.sqlite"
    if not path.exists():
        return set()
    db = sqlite3.connect(path, timeout=5)
    try:
        rows = db.execute("SELECT name FROM tasks WHERE status = 'succeeded'").fetchall()
    except sqlite3.Error:  # the schema is not there yet
        return set()
    finally:
        db.close()
    return {int(name.removeprefix("t")) for (name,) in rows}


def wait_until_unlocked(lock: Path, timeout: float = 10.0) -> None:
    """Wait until no process holds the state directory's lock."""
    import fcntl

    fd = os.open(lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                assert time.monotonic() < deadline, f"{lock} is still held"
                time.sleep(0.02)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def test_kill_9_resumes_without_trusting_interrupted_outputs(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(TEN_TASKS)
    engine = cli(tmp_path, "flows.py", "ten", "-j", "2", "--plain")
    deadline = time.monotonic() + 20
    # wait for 4 successes on record and 2 more started
    while not (len(recorded_successes(tmp_path)) >= 4 and len(counts(tmp_path)) >= 6):
        assert time.monotonic() < deadline, engine.stdout.read() if engine.stdout else ""
        time.sleep(0.02)
    started_before = set(counts(tmp_path))
    engine.send_signal(signal.SIGKILL)
    engine.communicate(timeout=10)
    # the store's writer outlives the engine to write what it had been handed, holding
    # the lock until it ends; what the store then has is what counts as done: a task
    # that ended in the engine's last moments, before its batch went over, is interrupted
    wait_until_unlocked(tmp_path / ".scriptflow" / "lock")
    done_before = recorded_successes(tmp_path)
    interrupted = started_before - done_before
    assert len(done_before) >= 4 and interrupted
    # the engine's death kills what it started: no orphan goes on
    orphans = [int((tmp_path / f"pid_{i}").read_text()) for i in interrupted]
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in orphans):
        assert time.monotonic() < deadline, "an attempt outlived the engine"
        time.sleep(0.05)
    # outputs that look fresh (as a process the engine did not start could leave) must
    # not be trusted: an interrupted attempt is run again
    for i in interrupted:
        (tmp_path / f"out_{i}").write_text("done\n")

    again = cli(tmp_path, "flows.py", "ten", "-j", "4", "--plain")
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0, out
    final = counts(tmp_path)
    assert {i: final[i] for i in done_before} == dict.fromkeys(done_before, 1), out
    assert {i: final[i] for i in interrupted} == dict.fromkeys(interrupted, 2), out
    assert all(final[i] == 1 for i in set(range(10)) - started_before)
    assert "its last attempt was interrupted" in out

    db = sqlite3.connect(tmp_path / ".scriptflow" / "store.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store.open(tmp_path / ".scriptflow")
    runs = store.runs()
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED, RunStatus.DIED]
    assert runs[0].counts == {"succeeded": 10 - len(done_before), "skipped": len(done_before)}
    listing, _ = cli(tmp_path, "runs").communicate(timeout=20)
    assert runs[0].run_id in listing and runs[1].run_id in listing
    assert "died" in listing and "succeeded" in listing


def test_a_second_session_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "import scriptflow_trio as sf\n"
        "async def flow_slow():\n"
        "    await sf.Task(cmd='sleep 3', name='slow')\n"
    )
    first = cli(tmp_path, "flows.py", "slow", "--plain")
    deadline = time.monotonic() + 10
    while (
        not (tmp_path / ".scriptflow" / "lock").exists()
        or not (tmp_path / ".scriptflow" / "lock").read_text()
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = cli(tmp_path, "flows.py", "slow", "--plain")
    out2, _ = second.communicate(timeout=10)
    out1, _ = first.communicate(timeout=20)
    assert first.returncode == 0, out1
    assert second.returncode == 2, out2
    assert f"pid {first.pid} on " in out2 and "another scriptflow_trio session" in out2
    assert "Traceback" not in out2


async def test_lock_is_refused_in_process_and_freed_after(workdir: Path) -> None:
    async with sf.open_session():
        with pytest.raises(sf.StoreLocked, match=f"pid {os.getpid()}"):
            async with sf.open_session():
                pass
    async with sf.open_session():  # released on exit
        pass


HOLD_LOCK = """\
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock_for_a_dead_engine(state: Path, seconds: float) -> subprocess.Popen[str]:
    """The lock as a killed engine leaves it: naming that engine, held by its writer.

    A process that has ended gives the dead pid; another one holds the lock, as the
    dead engine's store writer would while it writes what it was handed.
    """
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state.mkdir(parents=True, exist_ok=True)
    lock = state / "lock"
    lock.write_text(f"pid {dead.pid} on {socket.gethostname()}, since 2026-01-01 00:00:00")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


async def test_a_dead_engines_writer_is_waited_for_without_blocking_the_loop(
    workdir: Path,
) -> None:
    holder = hold_lock_for_a_dead_engine(workdir / ".scriptflow", 0.5)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.02)
            ticks += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            started = time.monotonic()
            async with sf.open_session():
                waited = time.monotonic() - started
            nursery.cancel_scope.cancel()
    finally:
        holder.kill()
        holder.wait()
    assert waited >= 0.3  # it waited for the holder to end...
    assert ticks >= 10  # ...while the rest of the program went on


async def test_a_dead_engines_writer_that_stays_is_named_for_what_it_is(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scriptflow_trio import _lock

    monkeypatch.setattr(_lock, "_FINISHING", 0.2)
    holder = hold_lock_for_a_dead_engine(workdir / ".scriptflow", 30)
    try:
        with pytest.raises(sf.StoreLocked) as info:
            async with sf.open_session():
                pass
    finally:
        holder.kill()
        holder.wait()
    message = str(info.value)
    assert "has ended, but a process it started still holds the lock" in message
    assert "another scriptflow_trio session is running" not in message


async def test_changed_command_reruns_and_dry_run_says_why(workdir: Path) -> None:
    async def run(cmd: str, *, dry: bool = False) -> Recorder:
        rec = Recorder()
        config = sf.SessionConfig(dry_run=dry)
        async with sf.open_session(config=config, listeners=[rec]):
            await sf.Task(cmd=cmd, shell=True, outputs="o.txt", name="make-o")
        return rec

    await run("echo one > o.txt")
    assert (await run("echo one > o.txt")).reasons(ev.TaskSkipped) == {"make-o": "up to date"}
    dry = await run("echo two > o.txt", dry=True)
    assert dry.reasons(ev.TaskWouldRun) == {
        "make-o": "its command changed since o.txt was made (was: echo one > o.txt)"
    }
    assert Path("o.txt").read_text() == "one\n"
    await run("echo two > o.txt")
    assert Path("o.txt").read_text() == "two\n"
    assert (await run("echo two > o.txt")).reasons(ev.TaskSkipped) == {"make-o": "up to date"}


async def test_hash_freshness_ignores_a_touch_but_not_an_edit(workdir: Path) -> None:
    Path("in.txt").write_text("data\n")

    async def run() -> Recorder:
        rec = Recorder()
        async with sf.open_session(config=sf.SessionConfig(freshness="hash"), listeners=[rec]):
            await sf.Task(cmd="cp in.txt out.txt", inputs="in.txt", outputs="out.txt")
        return rec

    await run()
    future = time.time() + 100
    os.utime("in.txt", (future, future))
    assert (await run()).reasons(ev.TaskSkipped) == {
        "out.txt": "up to date (inputs touched, contents unchanged)"
    }
    Path("in.txt").write_text("other\n")
    os.utime("in.txt", (future + 10, future + 10))
    started = (await run()).reasons(ev.AttemptStarted)
    assert started == {"out.txt": "input in.txt is newer than output out.txt"}
    assert Path("out.txt").read_text() == "other\n"


async def test_per_task_hash_freshness(workdir: Path) -> None:
    Path("in.txt").write_text("data\n")
    for _ in range(2):
        rec = Recorder()
        async with sf.open_session(listeners=[rec]):
            await sf.Task(
                cmd="cp in.txt out.txt", inputs="in.txt", outputs="out.txt", freshness="hash"
            )
        future = time.time() + 100
        os.utime("in.txt", (future, future))
    assert rec.reasons(ev.TaskSkipped) == {
        "out.txt": "up to date (inputs touched, contents unchanged)"
    }


async def test_results_and_fingerprints_are_recorded(workdir: Path) -> None:
    code = "import json; json.dump({'score': 0.5}, open('r.json', 'w'))"
    async with sf.open_session(config=sf.SessionConfig(freshness="hash")) as session:
        t = await sf.Task(cmd=[PY, "-c", code], result="r.json", name="score")
        run_id = session.run_id
    assert t.result == {"score": 0.5}
    store = Store.open(Path(".scriptflow"))
    (attempt,) = store.attempts(run_id)
    assert attempt.status is AttemptStatus.SUCCEEDED and attempt.returncode == 0
    assert attempt.result == {"score": 0.5}
    assert [fp.path for fp in attempt.outputs] == ["r.json"] and attempt.outputs[0].digest
    assert Path(attempt.log_path).exists()
    store.close()
    async with sf.open_session():
        again = await sf.Task(cmd=[PY, "-c", code], result="r.json", name="score")
    assert again.result == {"score": 0.5}


async def test_an_input_made_in_the_session_is_recorded_as_its_attempt_found_it(
    workdir: Path,
) -> None:
    """A consumer's inputs made earlier in the session carry the fingerprints their
    producers' attempts took; with hashing, a file changed since is hashed again."""
    makers = [sf.Task(cmd=f"echo {i} > in{i}", shell=True, outputs=f"in{i}") for i in range(3)]
    async with sf.open_session() as session:
        await sf.bag(*makers)
        await sf.Task(
            cmd="cat in0 in1 in2 > all",
            shell=True,
            inputs=["in0", "in1", "in2"],
            outputs="all",
            name="all",
        )
        run_id = session.run_id
    store = Store.open(Path(".scriptflow"))
    by = {a.name: a for a in store.attempts(run_id)}
    assert list(by["all"].inputs) == [fp for t in makers for fp in by[t.name].outputs]
    store.close()

    for changed in ("size", "time", "nothing"):
        async with sf.open_session(config=sf.SessionConfig(freshness="hash")) as session:
            await sf.Task(cmd="echo one > a", shell=True, outputs="a", name="make")
            if changed == "size":
                Path("a").write_text("three\n")
            elif changed == "time":  # the same size, another content and time
                Path("a").write_text("two\n")
                os.utime("a", ns=(time.time_ns() + 10**9,) * 2)
            await sf.Task(cmd="cp a b", shell=True, inputs="a", outputs="b", name="use")
            run_id = session.run_id
        store = Store.open(Path(".scriptflow"))
        by = {a.name: a for a in store.attempts(run_id)}
        (used,) = by["use"].inputs
        assert used.digest == hash_file("a"), changed
        assert (used == by["make"].outputs[0]) is (changed == "nothing")
        store.close()
        Path("a").unlink()


async def test_failed_and_cancelled_attempts_are_recorded(workdir: Path) -> None:
    async with sf.open_session() as session:
        with pytest.raises(sf.TaskFailed):
            await sf.Task(cmd="exit 4", shell=True, name="bad", retry=1)
        with trio.move_on_after(0.5):
            await sf.Task(cmd="sleep 30", name="cut")
        run_id = session.run_id
    store = Store.open(Path(".scriptflow"))
    by = {(a.name, a.attempt): a for a in store.attempts(run_id)}
    assert by["bad", 1].status is AttemptStatus.FAILED and by["bad", 2].returncode == 4
    assert by["cut", 1].status is AttemptStatus.CANCELLED
    assert {o.name: o.status for o in store.outcomes(run_id)} == {
        "bad": "failed",
        "cut": "cancelled",
    }


async def test_the_task_graph_and_resource_use_are_recorded(workdir: Path) -> None:
    burn = "b = b'x' * (400 << 20); sum(range(3_000_000)); open('a', 'w')"
    async with sf.open_session() as session:
        a = await sf.Task(cmd=[PY, "-c", burn], outputs="a", name="a")
        b = sf.Task(cmd="cp a b", shell=True, inputs="a", outputs="b", name="b")
        c = sf.Task(cmd="cat a b > c", shell=True, inputs=["a", "b"], outputs="c", name="c")
        await sf.bag(c, b)  # c listed first: it waits for b all the same
        lone = await sf.Task(cmd="touch d", outputs="d", name="d")  # smaller than the engine
        run_id = session.run_id
    store = Store.open(Path(".scriptflow"))
    after = {o.name: set(o.after) for o in store.outcomes(run_id)}
    assert after == {"a": set(), "b": {a.key}, "c": {a.key, b.key}, "d": set()}
    assert lone.key not in after["c"]
    by_name = {r.name: r for r in store.attempts(run_id)}
    used = by_name["a"]
    assert used.cpu_seconds is not None and used.cpu_seconds > 0.05
    # its own peak: neither the engine's (Linux counts it in a child's) nor less
    assert used.max_rss is not None and 400 << 20 <= used.max_rss < 520 << 20, used.max_rss
    assert by_name["d"].max_rss is None and by_name["d"].cpu_seconds is not None
    store.close()


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT, flow TEXT NOT NULL,
    started REAL NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE attempts (run_id TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, key, attempt));
CREATE TABLE tasks (key TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
    record TEXT NOT NULL);
CREATE TABLE files (path TEXT PRIMARY KEY, key TEXT NOT NULL, command TEXT NOT NULL);
CREATE TABLE run_tasks (run_id TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, duration REAL NOT NULL,
    ended REAL NOT NULL, PRIMARY KEY (run_id, key));
INSERT INTO meta VALUES ('schema', '1');
"""


def test_a_store_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    state = tmp_path / ".scriptflow"
    state.mkdir()
    record = (
        '{"run_id":"r1","key":"k","name":"old","attempt":2,"command":"make it",'
        '"executor":"local","started":1.0,"status":"succeeded"}'
    )
    db = sqlite3.connect(state / "store.sqlite")
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO attempts VALUES ('r1', 'k', 2, 'old', 'succeeded', 1.0, ?)", (record,))
    db.execute("INSERT INTO tasks VALUES ('k', 'old', 'succeeded', ?)", (record,))
    db.execute("INSERT INTO run_tasks VALUES ('r1', 'k', 'old', 'succeeded', 2, 0.5, 1.0)")
    db.commit()
    db.close()
    store = Store.open(state)
    (old,) = store.outcomes("r1")
    assert old.name == "old" and old.after == ()
    state_k = store.load_history().tasks["k"]
    assert state_k.run_id == "r1" and state_k.record().command == "make it"
    store.close()
    db = sqlite3.connect(state / "store.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    assert db.execute("SELECT run_id, attempt FROM tasks").fetchall() == [("r1", 2)]
    db.close()


def test_damaged_or_newer_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "import scriptflow_trio as sf\nasync def flow_x():\n    await sf.Task(cmd='true')\n"
    )
    state = tmp_path / ".scriptflow"
    state.mkdir()
    (state / "store.sqlite").write_bytes(b"this is not a database" * 100)
    out, _ = cli(tmp_path, "flows.py", "x").communicate(timeout=20)
    assert "is damaged or not a store" in out and "Traceback" not in out
    (state / "store.sqlite").unlink()
    Store.open(state).close()
    db = sqlite3.connect(state / "store.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    proc = cli(tmp_path, "flows.py", "x")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "written by a newer scriptflow_trio" in out


REATTACH_ENGINE = """
import sys, trio
import scriptflow_trio as sf

class Cluster(sf.Executor):
    name = "cluster"
    supports_reattach = True
    capacity = 4

    async def run(self, spec):
        spec.on_submitted("J42")
        print("submitted", flush=True)
        await trio.sleep_forever()

async def main():
    async with sf.open_session(executors=[Cluster()]):
        await sf.Task(cmd="simulate", outputs="sim.txt", name="sim")

trio.run(main)
"""


@pytest.mark.parametrize("finished_before_restart", [False, True])
async def test_a_dead_engines_cluster_job_is_waited_for_not_resubmitted(
    workdir: Path, finished_before_restart: bool
) -> None:
    Path("engine.py").write_text(REATTACH_ENGINE)
    engine = subprocess.Popen([PY, "engine.py"], stdout=subprocess.PIPE, text=True)
    assert engine.stdout is not None and engine.stdout.readline() == "submitted\n"
    engine.kill()
    engine.wait()
    if finished_before_restart:  # the job made its output while no engine watched
        Path("sim.txt").write_text("done")
    seen: list[str] = []

    class Cluster(sf.Executor):
        name = "cluster"
        supports_reattach = True
        capacity = 4

        async def run(self, spec: sf.AttemptSpec) -> sf.Outcome:
            seen.append(spec.reattach)
            assert spec.on_submitted is not None
            spec.on_submitted(spec.reattach or "J43")
            if not finished_before_restart:
                Path("sim.txt").write_text("done")
            return sf.Outcome(0, time.time(), time.time(), job_id=spec.reattach or "J43")

    rec = Recorder()
    async with sf.open_session(executors=[Cluster()], listeners=[rec]):
        await sf.Task(cmd="simulate", outputs="sim.txt", name="sim")
    assert seen == ["J42"]
    (reason,) = rec.reasons(ev.AttemptStarted).values()
    assert reason.startswith("its job J42 from run ") and reason.endswith("waiting for it")


def test_a_journal_line_is_the_json_of_its_start() -> None:
    # the line is put together by hand: it must be what the encoder writes, for any
    # text a task's name, command or paths can hold
    from scriptflow_trio import _store
    from scriptflow_trio._jsontext import dumps

    odd = 'a "quoted" \\ back\\slash\n\ttab \x00\x1f \u00e9\u4e2d \U0001f600 \ud800 </script>'
    starts = [
        _store.AttemptStart("r1", "k" * 40, "solve-1", 1, "touch out/1.txt", "local", 1.5, ""),
        _store.AttemptStart(
            odd, odd, odd, 12345678901234567890, odd, odd, 1764700000.123456, odd, odd
        ),
        _store.AttemptStart("", "", "", 0, "", "", 0.1 + 0.2, "", ""),
        _store.AttemptStart("r", "k", "n", 2, "c", "e", time.time(), "l", "4242"),
    ]
    for start in starts:
        line = _store._journal_text(start)
        assert line == (dumps(start) + "\n").encode()
        assert tuple(json.loads(line)) == start


def test_a_journal_left_by_an_older_engine_is_recovered(tmp_path: Path) -> None:
    # engines before the compact journal wrote each start as a whole record (a JSON
    # object); a line cut short by the engine's death is skipped
    state = tmp_path / ".scriptflow"
    Store.open(state).close()
    old = (
        '{"run_id":"r0","key":"k1","name":"old","attempt":1,"command":"touch o",'
        '"executor":"local","started":1.5,"status":"running","log_path":"","job_id":"",'
        '"host":"","ended":null,"returncode":null,"reason":"","inputs":[],"outputs":[],'
        '"result":null,"cpu_seconds":null,"max_rss":null}'
    )
    new = '["r0","k2","new",2,"touch n","slurm",2.5,"logs/n.2.log","77"]'
    (state / "journal").write_text(f'{old}\n{new}\n["r0","k3","cut')
    store = Store.open(state)
    try:
        store.recover()
        history = store.load_history()
        assert sorted(history.tasks) == ["k1", "k2"]
        assert {s.status for s in history.tasks.values()} == {AttemptStatus.RUNNING}
        second = history.tasks["k2"].record()
        assert (second.name, second.attempt, second.executor, second.job_id) == (
            "new",
            2,
            "slurm",
            "77",
        )
        assert second.log_path == "logs/n.2.log" and second.started == 2.5
    finally:
        store.close()
    assert (state / "journal").read_text() == ""


def test_ended_attempts_and_runs_are_stored_as_their_records_would_be() -> None:
    # the writer makes an attempt's JSON from plain tuples, without its AttemptRecord:
    # the JSON must be the record's, as the store's converter makes and reads it
    import marshal

    from scriptflow_trio import _store, _storewrite
    from scriptflow_trio._records import Fingerprint

    start = _store.AttemptStart("r1", "k" * 40, "solve-1", 2, "python solve.py", "local", 1.5, "l")
    failed = start._replace(job_id="9")
    # each record as the engine hands it over, and the AttemptRecord it stands for
    cases = [
        (start, start.record()),
        (
            _store.attempt_end(start, AttemptStatus.RUNNING, None, "l"),
            start.record(),
        ),
        (
            _store.attempt_end(start, AttemptStatus.SUCCEEDED, 2.5, "", "123", "node1", 0),
            start.record(
                status=AttemptStatus.SUCCEEDED,
                ended=2.5,
                log_path="",
                job_id="123",
                host="node1",
                returncode=0,
            ),
        ),
        (  # fingerprints and nothing after them; a path JSON must escape
            _store.attempt_end(
                start,
                AttemptStatus.SUCCEEDED,
                2.5,
                "l",
                "",
                "",
                0,
                "",
                (),
                (('r\u00e9sum\u00e9 "1".csv', 3, 8, None),),
            ),
            start.record(
                status=AttemptStatus.SUCCEEDED,
                ended=2.5,
                returncode=0,
                outputs=(Fingerprint('r\u00e9sum\u00e9 "1".csv', 3, 8),),
            ),
        ),
        (
            _store.attempt_end(
                failed,
                AttemptStatus.FAILED,
                3.0,
                "l",
                "9",
                "node2",
                3,
                "exit code 3",
                (("in.csv", 10, 5, "abc"),),
                (("out.csv", 0, 7, None),),
                {"rmse": [1, 2.5, "x"]},
                0.25,
                1 << 30,
            ),
            failed.record(
                status=AttemptStatus.FAILED,
                ended=3.0,
                host="node2",
                returncode=3,
                reason="exit code 3",
                inputs=(Fingerprint("in.csv", 10, 5, "abc"),),
                outputs=(Fingerprint("out.csv", 0, 7),),
                result={"rmse": [1, 2.5, "x"]},
                cpu_seconds=0.25,
                max_rss=1 << 30,
            ),
        ),
    ]
    converter = _store._converter()
    for end, record in cases:
        # as the writer process gets it: plain tuples, through marshal
        plain = marshal.loads(marshal.dumps([_store._plain(end)]))
        tables = _storewrite.rows(plain)
        (row,) = tables["attempts"]
        assert row[:6] == ("r1", "k" * 40, 2, "solve-1", record.status.value, 1.5)
        assert json.loads(row[6]) == converter.unstructure(record)
        assert _store._load(row[6], type(record)) == record
        assert tables["run_tasks"] == []
    # the last attempt of a task carries the task's outcome: one record, two rows
    outcome = _store.OutcomeRow("r1", "k" * 40, "solve-1", "failed", 2, 1.5, 3.0, "k1 k2")
    last = _store.with_outcome(cases[-1][0], outcome)
    tables = _storewrite.rows(marshal.loads(marshal.dumps([_store._plain(last)])))
    assert tables["run_tasks"] == [tuple(outcome)]
    assert json.loads(tables["attempts"][0][6]) == converter.unstructure(cases[-1][1])
    runs = [
        RunRecord("r1", "flow", 1.5),
        RunRecord(
            "r2",
            "flow",
            1.5,
            RunStatus.SUCCEEDED,
            "nightly",
            {"n": "3"},
            "/x/flows.py",
            2.5,
            42,
            "node1",
            {"succeeded": 3, "skipped": 1},
        ),
    ]
    for run in runs:
        assert json.loads(_store._run_json(run)) == converter.unstructure(run)
        assert _store._load(_store._run_json(run), RunRecord) == run


def test_batches_are_written_whole_and_in_order(tmp_path: Path) -> None:
    # every row of a large batch comes out, and a later batch's end wins over an
    # earlier batch's start
    from scriptflow_trio import _store

    store = Store.open(tmp_path)
    n = 2_345
    starts = [
        _store.AttemptStart("r1", f"k{i}", f"t{i}", 1, f"touch {i}", "local", 1.0 + i, "")
        for i in range(n)
    ]
    store.apply(starts)
    ends = [
        _store.attempt_end(s, AttemptStatus.SUCCEEDED, 2.0, "", outputs=((s.key, 1, 2, None),))
        for s in starts[: n - 7]
    ]
    outcomes = [
        _store.OutcomeRow("r1", s.key, s.name, "succeeded", 1, 1.0, 2.0, "") for s in starts
    ]
    store.apply([*ends, *outcomes])
    db = store._db
    counts = dict(db.execute("SELECT status, count(*) FROM attempts GROUP BY status").fetchall())
    assert counts == {"succeeded": n - 7, "running": 7}
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (n,)
    assert db.execute("SELECT count(*) FROM files").fetchone() == (n - 7,)
    assert db.execute("SELECT count(*) FROM run_tasks").fetchone() == (n,)
    history = store.load_history()
    assert history.tasks["k0"].status is AttemptStatus.SUCCEEDED
    assert history.tasks[f"k{n - 1}"].status is AttemptStatus.RUNNING
    assert history.files["k5"] == ("k5", "touch 5")
    store.close()


FULL_DISK = (
    "CREATE TRIGGER full BEFORE INSERT ON run_tasks BEGIN SELECT RAISE(ABORT, 'disk full'); END"
)


async def test_a_failed_write_is_a_clear_error_and_the_journal_stays(workdir: Path) -> None:
    # a real SQLite failure on a real store: a trigger that aborts every run_tasks row,
    # as a full disk would abort the commit; the writer thread's error reaches the flow
    async with sf.open_session(executors=[FakeExecutor(slots=2)]) as session:
        await session.run(_one_bag, 3)
    db = sqlite3.connect(workdir / ".scriptflow" / "store.sqlite")
    db.execute(FULL_DISK)
    db.close()
    with pytest.raises(BaseException) as caught:
        async with sf.open_session(executors=[FakeExecutor(slots=2)]) as session:
            await session.run(_one_bag, 2_500)  # more than one batch: mid-run hand-overs
    errors = (
        caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else [caught.value]
    )
    assert any(isinstance(e, sf.StoreError) and "disk full" in str(e) for e in errors), errors
    journal = (workdir / ".scriptflow" / "journal").read_text().splitlines()
    assert journal  # kept: the attempts it started are on record
    with sqlite3.connect(workdir / ".scriptflow" / "store.sqlite") as db:
        db.execute("DROP TRIGGER full")
    ran = Recorder()
    async with sf.open_session(executors=[FakeExecutor(slots=2)], listeners=[ran]) as session:
        await session.run(_one_bag, 2_500)
    # three were up to date before; none of those the failed run made is taken as done
    assert len(ran.of(ev.AttemptStarted)) == 2_497


async def _one_bag(n: int) -> None:
    await sf.bag(*[sf.Task(cmd=f"touch o{i}", outputs=f"o{i}", name=f"t{i}") for i in range(n)])


async def test_an_executor_that_cannot_start_leaves_no_store_writer(workdir: Path) -> None:
    # the store's writer is a process, started before the executors: a session that
    # fails before its run (here a SLURM executor whose env_file is missing, or whose
    # sbatch is not installed) must end it, and free the lock
    before = children()
    slurm = sf.SlurmExecutor(env_file=workdir / "missing.env")
    with pytest.raises(sf.ExecutorError):
        async with sf.open_session(executors=[slurm]):
            pass
    assert not children() - before  # ended and reaped
    async with sf.open_session(executors=[FakeExecutor()]):  # the lock is free at once
        pass


def children() -> set[int]:
    """This process's child processes, zombies included (Linux)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


async def _slow_bag(n: int) -> None:
    await sf.bag(*[sf.Task(cmd=f"touch s{i}", outputs=f"s{i}", name=f"s{i}") for i in range(n)])


async def test_a_store_writer_that_dies_is_a_clear_error_and_nothing_is_trusted(
    workdir: Path,
) -> None:
    # a real death: the writer process is killed while the flow runs (as the OOM killer
    # might); the flow stops with a StoreError, and what it did is done again next time
    before = children()

    async def kill_the_writer() -> None:
        await sf.bag(*[sf.Task(cmd=f"touch a{i}", outputs=f"a{i}", name=f"a{i}") for i in range(5)])
        with trio.fail_after(5):  # it starts with the first hand-over, 0.2 s in
            while not children() - before:
                await trio.sleep(0.01)
        (writer,) = children() - before
        os.kill(writer, signal.SIGKILL)
        await _slow_bag(200)

    fake = FakeExecutor(slots=2, duration=0.005)
    with pytest.raises(BaseException) as caught:
        async with sf.open_session(executors=[fake]) as session:
            await session.run(kill_the_writer)
    errors = (
        caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else [caught.value]
    )
    stores = [e for e in errors if isinstance(e, sf.StoreError)]
    assert stores and "store writer ended" in str(stores[0]), errors
    assert "run again" in str(stores[0])
    assert (workdir / ".scriptflow" / "journal").read_text()  # kept for the next session
    assert not children() - before  # reaped
    ran = Recorder()
    async with sf.open_session(executors=[FakeExecutor(slots=2)], listeners=[ran]) as session:
        await session.run(_slow_bag, 200)
    assert len(ran.of(ev.AttemptStarted)) == 200  # none of them was taken as done


async def test_where_no_process_can_start_the_writer_runs_in_a_thread(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an embedding interpreter without sys.executable cannot start the writer process:
    # the same writer runs in a thread, and the store is written all the same
    import threading

    monkeypatch.setattr(sys, "executable", "")
    before = children()
    threads: list[str] = []

    async def flow() -> None:
        await _slow_bag(50)
        with trio.fail_after(5):  # it starts with the first hand-over, 0.2 s in
            while "scriptflow store writer" not in threads:
                await trio.sleep(0.01)
                threads[:] = [t.name for t in threading.enumerate()]

    async with sf.open_session(executors=[FakeExecutor(slots=2)]) as session:
        await session.run(flow)
    assert not children() - before
    assert not [t for t in threading.enumerate() if t.name == "scriptflow store writer"]
    history = Store.open(workdir / ".scriptflow").load_history()
    assert [history.tasks[k].status for k in history.tasks] == [AttemptStatus.SUCCEEDED] * 50
    assert (workdir / ".scriptflow" / "journal").read_text() == ""


async def test_a_short_session_writes_its_records_itself(workdir: Path) -> None:
    # a session shorter than the first hand-over starts no writer process: its close
    # writes what it has, and a failure there is the same clear error
    before = children()

    async def flow() -> None:
        await _one_bag(3)
        assert not children() - before

    async with sf.open_session(executors=[FakeExecutor(slots=2)]) as session:
        await session.run(flow)
    store = Store.open(workdir / ".scriptflow")
    assert len(store.load_history().tasks) == 3 and len(store.outcomes(session.run_id)) == 3
    store.close()
    with sqlite3.connect(workdir / ".scriptflow" / "store.sqlite") as db:
        db.execute(FULL_DISK)
    with pytest.raises(BaseException) as caught:
        async with sf.open_session(executors=[FakeExecutor(slots=2)]) as session:
            await session.run(_one_bag, 5)
    errors = (
        caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else [caught.value]
    )
    assert any(isinstance(e, sf.StoreError) and "disk full" in str(e) for e in errors), errors
    assert (workdir / ".scriptflow" / "journal").read_text()


async def test_a_running_attempt_is_in_the_store_while_it_runs(workdir: Path) -> None:
    # an attempt that ends before the next hand-over reaches SQLite once, ended; one
    # that still runs is handed over as running, after the end of the attempt before it
    def fails_first(spec) -> int:
        return 1 if spec.attempt == 1 else 0

    def latest() -> list[tuple[str, int]]:
        uri = f"file:{workdir / '.scriptflow' / 'store.sqlite'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            return db.execute(
                "SELECT status, attempt FROM tasks WHERE key IN (SELECT key FROM attempts)"
            ).fetchall()

    seen: list[list[tuple[str, int]]] = []
    fake = FakeExecutor(slots=1, duration=0.8, behaviour=fails_first)
    async with sf.open_session(executors=[fake]):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, sf.Task(cmd="flaky", outputs="f.txt", retry=1))
            await trio.sleep(0.5)  # attempt 1 runs: handed over at 0.2 s
            seen.append(latest())
            await trio.sleep(0.8)  # attempt 2 runs, after attempt 1's end
            seen.append(latest())
    assert seen == [[("running", 1)], [("running", 2)]]
    assert latest() == [("succeeded", 2)]


async def test_what_the_socket_cannot_take_at_once_is_sent_without_waiting_for_a_hand_over(
    tmp_path: Path,
) -> None:
    # far more records than the socket holds, handed over in batches as they come: the
    # writer gets them all while the engine goes on, not one socketful per interval
    from scriptflow_trio import _store

    Store.open(tmp_path).close()
    path = tmp_path / "store.sqlite"
    writer = _store.StoreWriter(path, batch=100)
    n = 4_000

    def stored() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM run_tasks").fetchone()[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, 3600.0)  # no hand-over of its own in this test
        await trio.testing.wait_all_tasks_blocked()
        for i in range(n):
            start = _store.AttemptStart("r1", f"{i:040d}", f"t{i}", 1, f"touch {i}", "x", 1.0, "")
            outcome = _store.OutcomeRow("r1", start.key, start.name, "succeeded", 1, 0.5, 2.0, "")
            end = _store.attempt_end(start, AttemptStatus.SUCCEEDED, 2.0, "", reason="x" * 1000)
            writer.ended(_store.with_outcome(end, outcome))
        assert len(writer._outbox) > 0  # more than one socketful waited
        with trio.fail_after(20):
            while stored() < n:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await writer.close()
    assert stored() == n
