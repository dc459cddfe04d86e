"""The engine's semantics, on the fake executor and trio's virtual clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from helpers import Recorder

import scriptflow_trio as sf
from scriptflow_trio import _events as ev
from scriptflow_trio.testing import FakeExecutor


def open_session(**kwargs):
    """A session without the store: its worker thread would make autojump_clock jump early."""
    return sf.open_session(store=False, **kwargs)


def touch(path: str, content: str = "x\n") -> None:
    Path(path).write_text(content)


async def test_bag_runs_in_parallel_then_final(workdir, autojump_clock):
    fake = FakeExecutor(slots=2, duration=1.0)
    async with open_session(executors=[fake]):
        t1 = sf.Task(cmd="make-1", outputs="test_1.txt", name="solve-1")
        t2 = sf.Task(cmd="make-2", outputs="test_2.txt", name="solve-2")
        await sf.bag(t1, t2)
        assert trio.current_time() == 1.0
        final = sf.Task(
            cmd="combine",
            inputs=[*t1.get_outputs(), *t2.get_outputs()],
            outputs="final.txt",
            name="final",
        )
        assert await final is final
        assert trio.current_time() == 2.0
    names = [s.name for s in fake.runs]
    assert sorted(names[:2]) == ["solve-1", "solve-2"] and names[2] == "final"
    assert fake.max_running == 2


async def test_up_to_date_tasks_are_skipped_without_running(workdir, autojump_clock):
    touch("in.txt")
    fake = FakeExecutor()
    async with open_session(executors=[fake]):
        await sf.Task(cmd="a", inputs="in.txt", outputs="out.txt")
    assert len(fake.runs) == 1
    rec = Recorder()
    async with open_session(executors=[fake], listeners=[rec]):
        await sf.Task(cmd="a", inputs="in.txt", outputs="out.txt")
    assert len(fake.runs) == 1
    assert [e.reason for e in rec.of(ev.TaskSkipped)] == ["up to date"]
    # an input newer than the output makes it run again
    future = os.stat("out.txt").st_mtime + 10
    os.utime("in.txt", (future, future))
    async with open_session(executors=[fake], listeners=[rec]):
        await sf.Task(cmd="a", inputs="in.txt", outputs="out.txt")
    assert len(fake.runs) == 2
    assert rec.of(ev.AttemptStarted)[-1].reason == "input in.txt is newer than output out.txt"


async def test_same_task_awaited_twice_runs_once(workdir, autojump_clock):
    fake = FakeExecutor(duration=1.0)
    async with open_session(executors=[fake]):
        a = sf.Task(cmd="x", outputs="x.txt")
        b = sf.Task(cmd="x", outputs="x.txt")
        assert a.key == b.key
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: a._wait())
            nursery.start_soon(lambda: b._wait())
        await a  # and once more, after it finished
        assert a.done and b.done
    assert len(fake.runs) == 1


async def test_a_task_still_awaited_elsewhere_survives_the_cancel_of_its_first_awaiter(
    workdir, autojump_clock
):
    # `await first` runs the job in the awaiting trio task; cancelling that task must not
    # end the job that `second` (the same key) still awaits: it starts again, for it
    fake = FakeExecutor(slots=2, duration=1.0)
    async with open_session(executors=[fake]):
        first = sf.Task(cmd="x", outputs="x.txt", name="x")
        second = sf.Task(cmd="x", outputs="x.txt", name="x")
        ended: list[float] = []

        async def awaits_later() -> None:
            await trio.sleep(0.1)
            await second
            ended.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(awaits_later)
            with trio.move_on_after(0.5):
                await first
        assert ended == [1.5]
        assert second.done
        assert Path("x.txt").exists()
    assert [s.name for s in fake.cancelled] == ["x"]
    assert [s.name for s in fake.runs] == ["x", "x"]


async def test_an_awaited_task_does_not_start_before_the_tasks_queued_ahead(
    workdir, autojump_clock
):
    # "wide" waits for both slots behind "a"; "c" fits in the free one, but is queued
    # after "wide", and must not start first
    fake = FakeExecutor(slots=2, duration=1.0)
    async with open_session(executors=[fake]):
        queued = [
            sf.Task(cmd="a", outputs="a.txt", name="a"),
            sf.Task(cmd="wide", outputs="wide.txt", name="wide", cores=2),
        ]
        late = sf.Task(cmd="c", outputs="c.txt", name="c")

        async def awaits_later() -> None:
            await trio.sleep(0.1)
            await late
            assert trio.current_time() == 3.0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, *queued)
            nursery.start_soon(awaits_later)
    assert [s.name for s in fake.runs] == ["a", "wide", "c"]


async def test_start_submits_now_and_await_later(workdir, autojump_clock):
    fake = FakeExecutor(duration=5.0)
    async with open_session(executors=[fake]):
        t = sf.Task(cmd="slow", outputs="slow.txt").start()
        await trio.sleep(1)
        assert len(fake.runs) == 1 and not t.done
        await t
        assert trio.current_time() == 5.0
    assert t.done


async def test_started_task_is_finished_when_the_session_closes(workdir, autojump_clock):
    fake = FakeExecutor(duration=3.0)
    async with open_session(executors=[fake]):
        t = sf.Task(cmd="bg", outputs="bg.txt").start()
    assert t.done and trio.current_time() == 3.0


async def test_retry_runs_more_attempts_and_removes_failed_outputs(workdir, autojump_clock):
    calls = []

    def flaky(spec):
        calls.append(spec.attempt)
        # a failed attempt that still wrote its output: that output must not survive
        Path(spec.outputs[0]).write_text("half")
        return 3 if spec.attempt < 3 else 0

    fake = FakeExecutor(behaviour=flaky)
    rec = Recorder()
    async with open_session(executors=[fake], listeners=[rec]):
        await sf.Task(cmd="flaky", outputs="o.txt", retry=2)
    assert calls == [1, 2, 3]
    assert [e.will_retry for e in rec.of(ev.AttemptFinished)] == [True, True, False]


async def test_retry_exhausted_raises_task_failed_with_log_tail(workdir, autojump_clock):
    fake = FakeExecutor(behaviour=lambda spec: 3)
    async with open_session(executors=[fake]):
        with pytest.raises(sf.TaskFailed) as info:
            await sf.Task(cmd="bad", outputs="o.txt", retry=2, name="bad")
    err = info.value
    assert (err.name, err.returncode, err.attempts) == ("bad", 3, 3)
    assert "exit 3" in err.log_tail and err.log_path.name.endswith(".3.log")
    assert len(fake.runs) == 3
    assert not Path("o.txt").exists()


async def test_missing_output_fails_the_attempt(workdir, autojump_clock):
    fake = FakeExecutor(write_outputs=False)
    async with open_session(executors=[fake]):
        with pytest.raises(sf.TaskFailed, match="missing output out.txt"):
            await sf.Task(cmd="lazy", outputs="out.txt")


async def test_output_glob_must_match_a_fresh_file(workdir, autojump_clock):
    def write_two(spec):
        touch("res/a.csv")
        touch("res/b.csv")
        return 0

    os.mkdir("res")
    async with open_session(executors=[FakeExecutor(behaviour=write_two)]):
        await sf.Task(cmd="w", outputs=sf.glob("res/*.csv"))
        with pytest.raises(sf.TaskFailed, match="missing output res/\\*.txt"):
            await sf.Task(cmd="w2", outputs=sf.glob("res/*.txt"))
        # an input glob is expanded when the task is about to run
        t = sf.Task(cmd="use", inputs=sf.glob("res/*.csv"), outputs="summary.txt")
        await t


async def test_input_glob_that_matches_nothing_is_missing(workdir, autojump_clock):
    async with open_session(executors=[FakeExecutor()]):
        with pytest.raises(sf.MissingInput, match="matches no file"):
            await sf.Task(cmd="use", inputs=sf.glob("nothing/*.csv"), outputs="s.txt")


async def test_fail_fast_cancels_siblings(workdir, autojump_clock):
    fake = FakeExecutor(
        slots=4, duration=1.0, behaviour=lambda spec: 1 if spec.name == "bad" else 0
    )
    slow = FakeExecutor(slots=4, name="slow", duration=100.0)
    async with open_session(executors=[fake, slow]):
        with pytest.raises(sf.TaskFailed):
            await sf.bag(
                sf.Task(cmd="bad", outputs="bad.txt", name="bad"),
                sf.Task(cmd="long", outputs="long.txt", name="long", executor="slow"),
            )
        assert trio.current_time() == 1.0
    assert [s.name for s in slow.cancelled] == ["long"]
    assert not Path("long.txt").exists()


async def test_cancelling_a_running_task_leaves_the_queue_behind_it_running(
    workdir, autojump_clock
):
    # one slot: "next" waits behind "doomed" for the same worker, whose cancel scope
    # the cancellation of "doomed" uses; "next" and "last" must still run, to the end
    fake = FakeExecutor(slots=1, duration=1.0)
    async with open_session(executors=[fake]):
        doomed = sf.Task(cmd="doomed", outputs="doomed.txt", name="doomed")
        later = [sf.Task(cmd=n, outputs=f"{n}.txt", name=n) for n in ("next", "last")]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, *later)
            with trio.move_on_after(0.5):
                await doomed
        assert trio.current_time() == 2.5
    assert [s.name for s in fake.cancelled] == ["doomed"]
    assert [s.name for s in fake.runs] == ["doomed", "next", "last"]
    assert not Path("doomed.txt").exists()
    assert Path("next.txt").exists() and Path("last.txt").exists()
    assert later[0].done and later[1].done and not doomed.done


async def test_the_room_of_a_cancelled_task_goes_to_all_the_tasks_it_fits(workdir, autojump_clock):
    # "wide" takes both slots; once it is cancelled, the two one-slot tasks behind it
    # must start together, not one after the other
    fake = FakeExecutor(slots=2, duration=1.0)
    async with open_session(executors=[fake]):
        wide = sf.Task(cmd="wide", outputs="wide.txt", name="wide", cores=2)
        narrow = [sf.Task(cmd=n, outputs=f"{n}.txt", name=n) for n in ("n1", "n2")]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, *narrow)
            with trio.move_on_after(0.5):
                await wide
        assert trio.current_time() == 1.5
    assert fake.max_running == 2
    assert narrow[0].done and narrow[1].done


async def test_keep_going_lets_independent_tasks_finish(workdir, autojump_clock):
    fake = FakeExecutor(
        slots=4, duration=1.0, behaviour=lambda spec: 1 if spec.name.startswith("bad") else 0
    )
    config = sf.SessionConfig(keep_going=True)
    async with open_session(executors=[fake], config=config) as session:
        with pytest.raises(ExceptionGroup) as info:
            await sf.bag(
                sf.Task(cmd="b1", outputs="b1.txt", name="bad-1"),
                sf.Task(cmd="b2", outputs="b2.txt", name="bad-2"),
                sf.Task(cmd="ok", outputs="ok.txt", name="ok"),
            )
    assert sorted(e.name for e in info.value.exceptions) == ["bad-1", "bad-2"]
    assert Path("ok.txt").exists()
    assert len(session.failures) == 2


async def test_input_made_by_a_task_in_the_same_bag_waits_for_it(workdir, autojump_clock):
    fake = FakeExecutor(slots=4, duration=1.0)
    async with open_session(executors=[fake]):
        first = sf.Task(cmd="first", outputs="a.txt")
        second = sf.Task(cmd="second", inputs="a.txt", outputs="b.txt")
        await sf.bag(second, first)
        assert trio.current_time() == 2.0
    assert [s.cmd for s in fake.runs] == [("first",), ("second",)]


async def test_missing_input_nobody_makes_is_a_clear_error(workdir, autojump_clock):
    fake = FakeExecutor()
    async with open_session(executors=[fake]):
        with pytest.raises(sf.MissingInput, match="needs input 'nope.txt'"):
            await sf.Task(cmd="x", inputs="nope.txt", outputs="y.txt", name="x")
    assert fake.runs == []


async def test_tasks_waiting_for_each_other_are_refused_not_waited_for(workdir, autojump_clock):
    fake = FakeExecutor()
    async with open_session(executors=[fake]):
        free = sf.Task(cmd="f", outputs="f.txt", name="free")
        a = sf.Task(cmd="a", inputs=["c.txt", "f.txt"], outputs="a.txt", name="a")
        b = sf.Task(cmd="b", inputs="a.txt", outputs="b.txt", name="b")
        c = sf.Task(cmd="c", inputs="b.txt", outputs="c.txt", name="c")
        after = sf.Task(cmd="d", inputs="c.txt", outputs="d.txt", name="after")
        with trio.fail_after(5), pytest.raises(sf.InvalidTask) as info:
            await sf.bag(free, a, b, c, after)
        message = str(info.value)
        assert "in a circle" in message and "'a' -> 'c' -> 'b' -> 'a'" in message
        assert fake.runs == []
        # the same tasks in a line: nothing was left behind that blocks them
        c2 = sf.Task(cmd="c", outputs="c.txt", name="c")
        await sf.bag(after, a, b, c2, free)
    ran = [s.name for s in fake.runs]
    assert sorted(ran) == ["a", "after", "b", "c", "free"]
    assert ran.index("c") < ran.index("a") < ran.index("b")


async def test_a_chain_submitted_at_once_is_no_circle(workdir, autojump_clock):
    fake = FakeExecutor(duration=1.0)
    async with open_session(executors=[fake]):
        touch("c0.txt")
        hops = [
            sf.Task(cmd=f"c{i}", inputs=f"c{i - 1}.txt", outputs=f"c{i}.txt", name=f"c{i}")
            for i in range(1, 51)
        ]
        await sf.bag(*reversed(hops))
        assert trio.current_time() == 50.0


async def test_an_input_that_is_its_own_output_says_so(workdir, autojump_clock):
    async with open_session(executors=[FakeExecutor()]):
        with pytest.raises(sf.MissingInput, match="also one of the task's own outputs"):
            await sf.Task(cmd="x", inputs="x.txt", outputs="x.txt", name="x")


async def test_input_of_a_failed_producer_names_it(workdir, autojump_clock):
    fake = FakeExecutor(behaviour=lambda spec: 1 if spec.name == "maker" else 0)
    config = sf.SessionConfig(keep_going=True)
    async with open_session(executors=[fake], config=config):
        maker = sf.Task(cmd="m", outputs="m.txt", name="maker")
        user = sf.Task(cmd="u", inputs="m.txt", outputs="u.txt", name="user")
        with pytest.raises(ExceptionGroup) as info:
            await sf.bag(maker, user)
    messages = sorted(str(e) for e in info.value.exceptions)
    assert "task 'maker', which makes it, failed" in messages[1]


async def test_cores_are_respected_and_too_many_is_an_error(workdir, autojump_clock):
    fake = FakeExecutor(slots=2, duration=1.0)
    async with open_session(executors=[fake]):
        await sf.bag(*[sf.Task(cmd=f"t{i}", outputs=f"t{i}.txt", cores=2) for i in range(3)])
        assert trio.current_time() == 3.0
        assert fake.max_running == 1
        with pytest.raises(sf.InvalidTask, match="asks for 3 cores"):
            await sf.Task(cmd="big", outputs="big.txt", cores=3)


async def test_two_tasks_making_the_same_output_at_once_is_an_error(workdir, autojump_clock):
    async with open_session(executors=[FakeExecutor(duration=1.0)]):
        with pytest.raises(sf.InvalidTask, match="is also making"):
            await sf.bag(sf.Task(cmd="a", outputs="same.txt"), sf.Task(cmd="b", outputs="same.txt"))


async def test_unknown_executor_and_bad_cwd_are_errors(workdir, autojump_clock):
    async with open_session(executors=[FakeExecutor()]):
        with pytest.raises(sf.InvalidTask, match="this session has: local"):
            await sf.Task(cmd="a", outputs="a.txt", executor="slurm")
        with pytest.raises(sf.InvalidTask, match="not a directory"):
            await sf.Task(cmd="a", outputs="a.txt", cwd="nowhere")


async def test_timeout_kills_the_attempt(workdir, autojump_clock):
    fake = FakeExecutor(duration=100.0)
    async with open_session(executors=[fake]):
        with pytest.raises(sf.TaskFailed, match="timed out after 2 s"):
            await sf.Task(cmd="slow", outputs="s.txt", timeout=2, retry=1)
        assert trio.current_time() == 4.0
    assert len(fake.cancelled) == 2


async def test_stage_retry_reruns_only_what_failed(workdir, autojump_clock):
    failures = {"b": 1}

    def behaviour(spec):
        if failures.get(spec.name):
            failures[spec.name] -= 1
            return 1
        return 0

    # one slot: a has succeeded when b fails (the first failure cancels what still runs)
    fake = FakeExecutor(slots=1, behaviour=behaviour)
    async with open_session(executors=[fake]):
        a = sf.Task(cmd="a", outputs="a.txt", name="a")
        b = sf.Task(cmd="b", outputs="b.txt", name="b")
        await sf.retry(lambda: sf.bag(a, b), attempts=2)
        assert a.done and b.done
    assert [s.name for s in fake.runs].count("a") == 1
    assert [s.name for s in fake.runs].count("b") == 2


async def test_stage_retry_gives_up_after_attempts(workdir, autojump_clock):
    fake = FakeExecutor(behaviour=lambda spec: 1)
    async with open_session(executors=[fake]):
        with pytest.raises(sf.TaskFailed):
            await sf.retry([sf.Task(cmd="a", outputs="a.txt")], attempts=3)
    assert len(fake.runs) == 3


async def test_dry_run_runs_nothing_and_says_why(workdir, autojump_clock):
    touch("old.txt")
    fake = FakeExecutor()
    rec = Recorder()
    config = sf.SessionConfig(dry_run=True)
    async with open_session(executors=[fake], config=config, listeners=[rec]):
        first = sf.Task(cmd="first", outputs="a.txt", name="first")
        await first
        await sf.Task(cmd="second", inputs=first.get_outputs(), outputs="old.txt", name="second")
    assert fake.runs == []
    assert [(e.name, e.reason) for e in rec.of(ev.TaskWouldRun)] == [
        ("first", "output a.txt is missing"),
        ("second", "input a.txt was remade"),
    ]


async def test_force_pattern_reruns_matching_tasks(workdir, autojump_clock):
    fake = FakeExecutor()
    async with open_session(executors=[fake]):
        await sf.bag(
            sf.Task(cmd="a", outputs="a.txt", name="solve-1"),
            sf.Task(cmd="b", outputs="b.txt", name="final"),
        )
    config = sf.SessionConfig(force=("solve-*",))
    async with open_session(executors=[fake], config=config):
        await sf.bag(
            sf.Task(cmd="a", outputs="a.txt", name="solve-1"),
            sf.Task(cmd="b", outputs="b.txt", name="final"),
        )
    assert sorted(s.name for s in fake.runs) == ["final", "solve-1", "solve-1"]


async def test_result_file_is_loaded_also_when_skipped(workdir, autojump_clock):
    def write_result(spec):
        Path("r.json").write_text('{"x": 1}')
        Path("r.txt").write_text("plain text\n")
        return 0

    fake = FakeExecutor(behaviour=write_result, write_outputs=False)
    async with open_session(executors=[fake]):
        t = sf.Task(cmd="r", result="r.json")
        u = sf.Task(cmd="r2", outputs="r.txt").result("r.txt")
        await sf.bag(t, u)
        assert t.result == {"x": 1}
        assert u.result == "plain text"
    async with open_session(executors=[fake]):
        t = sf.Task(cmd="r", result="r.json")
        await t
        assert t.result == {"x": 1}
    assert len(fake.runs) == 2


async def test_await_without_session_is_a_clear_error(workdir):
    with pytest.raises(sf.NoSession, match="open_session"):
        await sf.Task(cmd="x")


async def test_task_is_frozen_once_submitted(workdir, autojump_clock):
    async with open_session(executors=[FakeExecutor()]):
        t = sf.Task(cmd="x", outputs="x.txt")
        await t
        with pytest.raises(AttributeError, match="already submitted"):
            t.cmd = "y"
        t.set_prop("seen", True)  # props stay the user's own


async def test_a_task_subclass_is_built_and_guarded_as_a_task_is(workdir, autojump_clock):
    # Task.__init__ fills a new task in without its setattr hooks; a subclass (with a
    # __dict__ of its own) takes another way there: both must end with every field,
    # their own class, and the hooks back
    class Tagged(sf.Task):
        pass

    plain = sf.Task(cmd="cp 'a b.txt' c.txt", inputs="a b.txt", outputs="c.txt", retry="2")
    tagged = Tagged(cmd="cp 'a b.txt' c.txt", inputs="a b.txt", outputs="c.txt", retry="2")
    tagged.tag = "mine"  # its __dict__
    for t in (plain, tagged):
        assert t.cmd == ("cp", "a b.txt", "c.txt")
        assert t.command_line() == "cp 'a b.txt' c.txt"  # as typed: the text was kept
        assert (t.inputs, t.outputs, t.name, t.retry) == (
            ["a b.txt"],
            {None: ["c.txt"]},
            "c.txt",
            2,
        )
    assert type(plain) is sf.Task and type(tagged) is Tagged
    assert tagged.key == plain.key
    with pytest.raises(ValueError, match="cmd is empty"):
        sf.Task(cmd="")
    tagged.inputs = "x.txt"  # the converting hook is back
    assert tagged.inputs == ["x.txt"]
    (workdir / "x.txt").write_text("x")
    async with open_session(executors=[FakeExecutor()]):
        await tagged
        with pytest.raises(AttributeError, match="already submitted"):
            tagged.cmd = "y"


async def test_events_tell_the_whole_story(workdir, autojump_clock):
    rec = Recorder()
    fake = FakeExecutor(duration=1.0)

    async def flow_one():
        await sf.Task(cmd="x", outputs="x.txt", name="x")

    async with open_session(executors=[fake], listeners=[rec]) as session:
        await session.run(flow_one)
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds == [
        "RunStarted",
        "TasksSubmitted",
        "AttemptStarted",
        "AttemptFinished",
        "TaskFinished",
        "RunFinished",
    ]
    assert rec.events[0].flow == "one"
    assert rec.events[-1].status == "succeeded"
    assert rec.of(ev.TaskFinished)[0].duration == 1.0


async def test_unawaited_started_failure_stops_the_flow(workdir, autojump_clock):
    fake = FakeExecutor(duration=1.0, behaviour=lambda spec: 1 if spec.name == "bg" else 0)

    async def flow_bg():
        sf.Task(cmd="bg", outputs="bg.txt", name="bg").start()
        await sf.Task(cmd="long", outputs="long.txt", timeout=None, name="long", retry=0)
        await trio.sleep(100)

    slow = FakeExecutor(duration=50.0)
    fake_long = FakeExecutor(name="other", duration=50.0)
    async with open_session(executors=[fake, fake_long]) as session:
        with pytest.raises(sf.TaskFailed, match="'bg'"):
            await session.run(flow_bg)
        assert trio.current_time() == 1.0
    del slow


async def test_a_session_collects_garbage_less_often_and_gives_the_setting_back(workdir):
    import gc

    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])
    try:
        async with open_session(executors=[FakeExecutor()]):
            assert gc.get_threshold()[0] == 50_000
            await sf.Task(cmd="a", outputs="a.txt")
        assert gc.get_threshold()[0] == 700
        # a program that collects less often already, or not at all, keeps its choice
        gc.set_threshold(100_000, before[1], before[2])
        async with open_session(executors=[FakeExecutor()]):
            assert gc.get_threshold()[0] == 100_000
        gc.set_threshold(700, before[1], before[2])
        gc.disable()
        async with open_session(executors=[FakeExecutor()]):
            assert gc.get_threshold()[0] == 700
    finally:
        gc.enable()
        gc.set_threshold(*before)


async def test_the_fake_executor_leaves_its_outputs_empty_even_where_they_exist(workdir):
    def write_first(spec):
        Path(spec.outputs[0]).write_text("left by someone else\n")
        return 0

    async with open_session(executors=[FakeExecutor(behaviour=write_first)]):
        await sf.Task(cmd="a", outputs="a.txt")
    async with open_session(executors=[FakeExecutor()]):
        await sf.Task(cmd="b", outputs="sub/b.txt")
    assert Path("a.txt").read_text() == "" and Path("sub/b.txt").read_text() == ""


async def test_the_attempt_spec_carries_each_field_of_the_task(workdir, autojump_clock):
    # the session builds AttemptSpec by position: each value must land in its field
    fake = FakeExecutor(duration=1.0)
    os.mkdir("sub")
    async with open_session(executors=[fake], state_dir="state") as session:
        task = sf.Task(
            cmd=["solve", "--n", "3"],
            outputs="sub/out.txt",
            name="solve-3",
            cores=2,
            mem="3G",
            timeout=50,
            env={"A": "1"},
            cwd="sub",
            quiet=False,
        )
        await task
    (spec,) = fake.runs
    assert (spec.name, spec.key, spec.attempt) == ("solve-3", task.key, 1)
    assert spec.cmd == ("solve", "--n", "3") and not spec.shell
    assert spec.cwd == os.path.join(os.getcwd(), "sub")
    assert spec.env == {"A": "1"}
    assert spec.log_path.parent.name == session.run_id == spec.run_id
    assert spec.log_path.name.startswith("solve-3-") and spec.log_path.suffix == ".log"
    assert spec.state_dir == Path(os.getcwd(), "state")
    assert spec.outputs == (os.path.join(os.getcwd(), "sub", "out.txt"),)
    assert (spec.cores, spec.mem, spec.timeout) == (2, "3G", 50)
    assert callable(spec.on_output) and spec.on_submitted is None and spec.on_started is None
    assert spec.reattach == ""


async def test_log_files_are_named_after_their_task_in_safe_characters(workdir, autojump_clock):
    fake = FakeExecutor()
    names = ["c12", "solve 1/2: é", "..", "x" * 70]
    async with open_session(executors=[fake]):
        await sf.bag(
            *(sf.Task(cmd=f"t{i}", outputs=f"{i}.txt", name=n) for i, n in enumerate(names))
        )
    stems = [spec.log_path.name.rsplit("-", 1)[0] for spec in fake.runs]
    assert stems == ["c12", "solve_1_2", "task", "x" * 60]
    assert all(spec.log_path.name.endswith(f"-{spec.key[:8]}.1.log") for spec in fake.runs)
