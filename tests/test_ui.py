"""The terminal view, rendered into a string, live and plain."""

from __future__ import annotations

import io

import trio
from rich.console import Console

import scriptflow_trio as sf
from scriptflow_trio._ui import TerminalView
from scriptflow_trio.testing import FakeExecutor


def open_session(**kwargs):
    """A session without the store: its worker thread would make autojump_clock jump early."""
    return sf.open_session(store=False, **kwargs)


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100, color_system=None), out


async def run_flow(view: TerminalView) -> None:
    def behaviour(spec):
        return 2 if spec.name == "bad" else 0

    fake = FakeExecutor(slots=2, duration=1.0, behaviour=behaviour)

    async def flow_demo():
        await sf.bag(*[sf.Task(cmd=f"t{i}", outputs=f"t{i}.txt", name=f"t{i}") for i in range(3)])
        await sf.Task(cmd="bad", outputs="bad.txt", name="bad", retry=1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(view.run)
        async with open_session(executors=[fake], listeners=[view]) as session:
            try:
                await session.run(flow_demo)
            except sf.TaskFailed:
                pass
        nursery.cancel_scope.cancel()


async def test_plain_lines_tell_starts_retries_and_failures(workdir, autojump_clock):
    con, out = console(terminal=False)
    view = TerminalView(con, plain=True)
    await run_flow(view)
    view.print_summary(["task 'bad' failed: exit code 2"])
    text = out.getvalue()
    for expected in (
        "run     demo",
        "start   t0 - output t0.txt is missing",
        "retry   bad attempt 1 failed: exit code 2",
        "start   bad (retry 1)",
        "FAILED  task 'bad' failed: exit code 2",
        "failed  demo in 4.0s: ran 4, skipped 0, failed 1, retried 1",
    ):
        assert expected in text, text
    assert "\x1b[" not in text


async def test_live_view_shows_counts_and_running_tasks(workdir, autojump_clock):
    con, out = console(terminal=True)
    view = TerminalView(con, refresh_interval=0.1)
    await run_flow(view)
    text = out.getvalue()
    assert "running 2" in text and "queued 1" in text
    assert "start   t2" in text and "FAILED" in text
    # a redraw at a bounded rate, not one per event: 4 s of flow, 0.1 s apart at most
    assert text.count("running ") <= 45


async def test_skips_are_collapsed_in_the_live_view(workdir, autojump_clock):
    fake = FakeExecutor()
    async with open_session(executors=[fake]):
        await sf.bag(*[sf.Task(cmd=f"t{i}", outputs=f"t{i}.txt") for i in range(50)])
    con, out = console(terminal=True)
    view = TerminalView(con)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(view.run)
        async with open_session(executors=[fake], listeners=[view]):
            await sf.bag(*[sf.Task(cmd=f"t{i}", outputs=f"t{i}.txt") for i in range(50)])
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert "and 45 more up to date" in out.getvalue()
