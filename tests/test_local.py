"""The local executor with real processes, on the real clock."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
from helpers import Recorder, alive, wait_for_files, wait_gone

import scriptflow_trio as sf
from scriptflow_trio import _events as ev
from scriptflow_trio._store import Store

PY = sys.executable


# A shell task whose grandchild (a background sleep) would outlive a plain kill.
def sleeper(tag: str) -> sf.Task:
    return sf.Task(
        cmd=f"sleep 60 & echo $! > {tag}.child; echo $$ > {tag}.sh; wait",
        shell=True,
        outputs=f"{tag}.out",
        name=tag,
    )


async def test_solve_tasks_overlap_in_time(workdir):
    def solve(i: int) -> sf.Task:
        code = (
            f"import time; a = time.time(); time.sleep(0.5); "
            f"open('t{i}.txt', 'w').write(f'{{a}} {{time.time()}}')"
        )
        return sf.Task(cmd=[PY, "-c", code], outputs=f"t{i}.txt")

    async with sf.open_session(executors=[sf.LocalExecutor(slots=2)]):
        await sf.bag(solve(1), solve(2))
    (a1, b1), (a2, b2) = (map(float, Path(f"t{i}.txt").read_text().split()) for i in (1, 2))
    assert a1 < b2 and a2 < b1


async def test_cancelling_the_callers_scope_kills_the_whole_process_tree(workdir):
    with trio.fail_after(15):
        async with sf.open_session(executors=[sf.LocalExecutor(slots=2, grace=1)]):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sf.bag, sleeper("a"), sleeper("b"))
                    pids = await wait_for_files("a.child", "a.sh", "b.child", "b.sh", limit=10)
                    assert all(alive(p) for p in pids)
                    scope.cancel()
        await wait_gone(pids, limit=5)
    assert not Path("a.out").exists()


async def test_fail_fast_kills_sibling_processes(workdir):
    async with sf.open_session(executors=[sf.LocalExecutor(slots=3, grace=1)]):

        async def fail_later():
            await wait_for_files("a.child", "b.child", limit=10)
            await sf.Task(cmd="exit 3", shell=True, name="bad")

        with trio.fail_after(15), pytest.raises(ExceptionGroup) as info:
            await sf.bag(sleeper("a"), sleeper("b"), fail_later())
        assert info.group_contains(sf.TaskFailed, match="exit code 3")
        pids = [int(Path(f"{t}.{k}").read_text()) for t in "ab" for k in ("child", "sh")]
        await wait_gone(pids, limit=5)


async def test_timeout_kills_a_real_process(workdir):
    rec = []

    class Listener:
        def on_event(self, event):
            rec.append(event)

    async with sf.open_session(executors=[sf.LocalExecutor()], listeners=[Listener()]):
        with trio.fail_after(10), pytest.raises(sf.TaskFailed, match="timed out after 0.5 s"):
            await sf.Task(
                cmd="sleep 30 & echo $! > t.child; wait", shell=True, timeout=0.5, name="slow"
            )
    await wait_gone([int(Path("t.child").read_text())], limit=5)


async def test_output_goes_to_the_log_and_to_the_terminal_when_not_quiet(workdir):
    lines = []

    class Listener:
        def on_event(self, event):
            if isinstance(event, ev.OutputLine):
                lines.append((event.name, event.line))

    code = "import sys; print('to out'); print('to err', file=sys.stderr)"
    async with sf.open_session(executors=[sf.LocalExecutor()], listeners=[Listener()]):
        loud = sf.Task(cmd=[PY, "-c", code], name="loud", quiet=False)
        hush = sf.Task(cmd=[PY, "-c", code + "; 1"], name="hush")
        await sf.bag(loud, hush)
    assert sorted(lines) == [("loud", "to err"), ("loud", "to out")]
    logs = sorted(Path(".scriptflow/logs").rglob("*.log"))
    assert len(logs) == 2
    for log in logs:
        assert "to out" in log.read_text() and "to err" in log.read_text()


async def test_command_not_found_is_named_and_not_retried(workdir):
    async with sf.open_session(executors=[sf.LocalExecutor()]):
        with pytest.raises(sf.TaskFailed, match="command not found: 'no-such-program-xyz'") as info:
            await sf.Task(cmd="no-such-program-xyz --flag", retry=2)
    assert info.value.attempts == 1


async def test_env_and_cwd_are_honoured(workdir):
    os.mkdir("sub")
    code = "import os; open('where.txt', 'w').write(os.getcwd() + ' ' + os.environ['SF_X'])"
    async with sf.open_session(executors=[sf.LocalExecutor()]):
        await sf.Task(cmd=[PY, "-c", code], cwd="sub", env={"SF_X": "42"}, outputs="sub/where.txt")
    where, x = Path("sub/where.txt").read_text().split()
    assert Path(where).resolve() == (workdir / "sub").resolve() and x == "42"


async def test_the_environment_is_read_at_each_start_and_signals_are_reset(workdir, monkeypatch):
    # the flow may change os.environ between tasks; Python ignores SIGPIPE, a task must not
    cmd = "echo $SF_STEP > {0}.txt; grep SigIgn /proc/self/status >> {0}.txt"
    async with sf.open_session(executors=[sf.LocalExecutor()]):
        for step in ("one", "two"):
            monkeypatch.setenv("SF_STEP", step)
            await sf.Task(cmd=cmd.format(step), shell=True, outputs=f"{step}.txt")
    for step in ("one", "two"):
        seen, ignored = Path(f"{step}.txt").read_text().splitlines()
        assert seen == step
        if sys.platform == "linux":
            assert not int(ignored.split()[1], 16) & (1 << (13 - 1)), ignored  # SIGPIPE


async def test_output_larger_than_a_pipe_reaches_the_log_whole(workdir):
    code = "import sys\nfor i in range(100_000): print(f'line {i:06d} ' + 'x' * 20)"
    with trio.fail_after(20):
        async with sf.open_session(executors=[sf.LocalExecutor()]):
            await sf.Task(cmd=[PY, "-c", code], name="chatty")
    (log,) = Path(".scriptflow/logs").rglob("chatty-*.log")
    lines = log.read_text().splitlines()
    assert len(lines) == 100_000 and lines[-1].startswith("line 099999 ")


async def test_output_left_by_a_background_process_does_not_hold_the_attempt(workdir):
    # the leader exits at once; its background child keeps stdout open for 30 s
    cmd = "echo LEADER; (sleep 30; echo LATE) & echo $! > bg.pid; touch out.txt"
    try:
        with trio.fail_after(10):
            async with sf.open_session(executors=[sf.LocalExecutor(grace=0.5)]):
                await sf.Task(cmd=cmd, shell=True, outputs="out.txt", name="bg")
        (log,) = Path(".scriptflow/logs").rglob("bg-*.log")
        assert log.read_text() == "LEADER\n"
    finally:
        os.killpg(os.getpgid(int(Path("bg.pid").read_text())), 9)


async def test_a_failed_attempt_leaves_no_output_to_trust(workdir):
    write_then_fail = "echo half > out.txt; exit 1"
    async with sf.open_session(executors=[sf.LocalExecutor()]):
        with pytest.raises(sf.TaskFailed):
            await sf.Task(cmd=write_then_fail, shell=True, outputs="out.txt")
    assert not Path("out.txt").exists()


async def test_stale_output_is_removed_before_the_attempt(workdir):
    Path("in.txt").write_text("1")
    Path("out.txt").write_text("old")
    future = os.stat("out.txt").st_mtime + 100
    os.utime("in.txt", (future, future))
    # the command "succeeds" without writing: the old output must not pass the check
    async with sf.open_session(executors=[sf.LocalExecutor()]):
        with pytest.raises(sf.TaskFailed, match="missing output out.txt"):
            await sf.Task(cmd="true", inputs="in.txt", outputs="out.txt")


def _stamped(i: int, seconds: float) -> sf.Task:
    """A task that writes when it really ran: 'start end' on the wall clock."""
    code = (
        f"import time; a = time.time(); time.sleep({seconds}); "
        f"open('s{i}.txt', 'w').write(f'{{a}} {{time.time()}}')"
    )
    return sf.Task(cmd=[PY, "-c", code], outputs=f"s{i}.txt", name=f"s{i}", timeout=0.9)


async def test_an_attempt_queued_ahead_starts_its_timeout_and_its_events_when_it_starts(workdir):
    # one slot: the second attempt waits in the executor's own queue for the first one
    # (0.5 s), then runs 0.5 s; its 0.9 s timeout must count from its start
    recorder = Recorder()
    executor = sf.LocalExecutor(slots=1)
    async with sf.open_session(executors=[executor], listeners=[recorder]) as session:
        assert executor.lookahead == 8
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, *(_stamped(i, 0.5) for i in range(3)))
            while len(recorder.of(ev.AttemptStarted)) < 1:
                await trio.sleep(0.01)
            # one started, two handed to the executor's queue
            stats = session.statistics()
            assert (stats.running, stats.queued) == (1, 2)
        run_id = session.run_id
    spans = sorted(tuple(map(float, Path(f"s{i}.txt").read_text().split())) for i in range(3))
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    # each attempt is on record, and in the events, from when its process started
    store = Store.open(workdir / ".scriptflow")
    records = store.attempts(run_id)
    store.close()
    events = {e.name: e.time for e in recorder.of(ev.AttemptStarted)}
    assert len(records) == 3
    for record, (began, ended) in zip(records, spans, strict=True):
        assert record.started <= began < record.started + 0.3
        assert ended <= record.ended < ended + 0.3
        assert events[record.name] == record.started
    assert all(a.ended <= b.started for a, b in zip(records, records[1:], strict=False))


async def test_the_tasks_of_a_bag_start_in_the_order_it_lists_them(workdir):
    # the first slots + lookahead attempts are handed to workers spawned together,
    # which trio starts in any order (reversed, one time in two): 8 runs make a pass
    # by chance 1 in 256
    names = [f"t{i}" for i in range(24)]
    for run in range(8):
        recorder = Recorder()
        async with sf.open_session(executors=[sf.LocalExecutor(slots=2)], listeners=[recorder]):
            await sf.bag(
                *(sf.Task(cmd=["touch", f"{run}-{n}"], outputs=f"{run}-{n}", name=n) for n in names)
            )
        assert [e.name for e in recorder.of(ev.AttemptStarted)] == names


async def test_a_command_that_does_not_exist_fails_fast_in_a_bag(workdir):
    recorder = Recorder()
    tasks = [sf.Task(cmd=f"no-such-program-xyz {i}", name=f"n{i}") for i in range(40)]
    async with sf.open_session(executors=[sf.LocalExecutor(slots=2)], listeners=[recorder]):
        with trio.fail_after(10), pytest.raises(sf.TaskFailed, match="command not found"):
            await sf.bag(*tasks)
    # fail-fast: the first failure stops the rest at once, before any other worker
    # (there are slots + lookahead of them) ends its attempt or takes a next job
    assert len(recorder.of(ev.AttemptFinished)) <= 2


async def test_when_the_spawner_is_killed_its_attempts_are_lost_and_their_processes_die(workdir):
    executor = sf.LocalExecutor(slots=1, grace=0.5)
    async with sf.open_session(executors=[executor]):
        async with trio.open_nursery() as nursery:

            async def doomed() -> None:
                with pytest.raises(sf.TaskFailed, match="process spawner") as info:
                    await sleeper("a")
                assert info.value.returncode is None

            nursery.start_soon(doomed)
            pids = await wait_for_files("a.child", "a.sh", limit=10)
            assert executor._spawner is not None
            os.kill(executor._spawner.pid, 9)
        await wait_gone(pids, limit=5)
        # what follows runs without it, one at a time still
        with trio.fail_after(15):
            await sf.bag(*(_stamped(i, 0.2) for i in range(3)))
    spans = sorted(tuple(map(float, Path(f"s{i}.txt").read_text().split())) for i in range(3))
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))


async def test_a_spawner_that_cannot_run_leaves_the_attempts_to_subprocess(workdir, monkeypatch):
    # the helper process dies at once (as it would without a usable interpreter): the
    # attempts sent to it never started, so they run the portable way, one slot still
    from scriptflow_trio.executors import local

    monkeypatch.setattr(local, "_LAUNCH", "raise SystemExit(3)")
    recorder = Recorder()
    async with sf.open_session(executors=[sf.LocalExecutor(slots=1)], listeners=[recorder]):
        with trio.fail_after(15):
            await sf.bag(*(_stamped(i, 0.2) for i in range(3)))
    spans = sorted(tuple(map(float, Path(f"s{i}.txt").read_text().split())) for i in range(3))
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert len(recorder.of(ev.AttemptStarted)) == 3
    assert all(e.ok for e in recorder.of(ev.AttemptFinished))


async def test_a_retry_waits_at_the_front_of_the_queue(workdir):
    # one slot, two attempts queued ahead: the flaky task runs first and fails; its
    # slot goes at once to the next queued task, and its retry must come right after
    # that one, not behind the other queued one
    flaky = (
        "import os, sys, time; first = not os.path.exists('tried'); open('tried', 'w').close(); "
        "time.sleep(0.3 if first else 0); open('order', 'a').write('flaky\\n'); "
        "sys.exit(1 if first else 0)"
    )

    def stamp(name: str) -> sf.Task:
        code = f"import time; time.sleep(0.2); open('order', 'a').write('{name}\\n')"
        return sf.Task(cmd=[PY, "-c", code], name=name)

    recorder = Recorder()
    async with sf.open_session(executors=[sf.LocalExecutor(slots=1)], listeners=[recorder]):
        with trio.fail_after(15):
            first = sf.Task(cmd=[PY, "-c", flaky], name="flaky", retry=1).start()
            while not recorder.of(ev.AttemptStarted):  # it runs alone, then the others come
                await trio.sleep(0.01)
            await sf.bag(*(stamp(f"after-{i}") for i in range(5)))
            await first
    order = Path("order").read_text().split()
    assert order[0] == "flaky" and order.count("flaky") == 2, order
    assert order.index("flaky", 1) == 2, order


def test_the_spawner_holds_its_news_while_it_has_queued_work_and_sends_it_when_it_has_not():
    """The engine hears of ends in batches while every slot has a successor queued."""
    import signal
    import socket
    import time

    from scriptflow_trio.executors import _spawner

    engine, mine = socket.socketpair()
    handler = signal.getsignal(signal.SIGCHLD)
    spawner = _spawner.Spawner(mine.fileno(), slots=1)  # takes SIGCHLD and the wake-up fd
    try:
        engine.setblocking(False)
        spawner.queue.append(("run", 7, 1, True, "/bin/true", ["true"], None, "/", "/x", False))
        spawner.send(("exit", 6, 100, 0, 0.0, None, False, time.time()))
        left = spawner.flush()
        assert 0 < left <= _spawner.HOLD
        with pytest.raises(BlockingIOError):
            engine.recv(1 << 16)
        spawner.send(("exit", 5, 101, 0, 0.0, None, False, time.time()))
        time.sleep(_spawner.HOLD)
        assert spawner.flush() == -1.0  # held long enough: both go in one write
        inbox = bytearray(engine.recv(1 << 16))
        assert [m[1] for m in _spawner.frames(inbox)] == [6, 5]
        spawner.queue.clear()
        spawner.send(("exit", 7, 102, 0, 0.0, None, False, time.time()))
        assert spawner.flush() == -1.0  # nothing queued: the engine must hear at once
        inbox = bytearray(engine.recv(1 << 16))
        assert [m[1] for m in _spawner.frames(inbox)] == [7]
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, handler)
        spawner.poll.close()
        os.close(spawner.child_ended)
        engine.close()
        mine.close()
