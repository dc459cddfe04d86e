"""The engine alone: one flow on scriptflow_trio's FakeExecutor, no processes started.

Run by ``run.py`` as a process of its own, in a fresh directory (its current one)::

    python _engine.py SHAPE N [--no-store] [--short] [--floor]

SHAPE is ``pending`` (N tasks in one ``sf.bag`` on a fake executor that never
finishes: it reports once they are all waiting, and exits), ``independent`` (N tasks
in one ``sf.bag``), ``chain`` (N hops awaited in
turn; ``c/0.txt`` must exist) or ``fanin`` (N independent tasks in one ``sf.bag``,
then one task whose inputs are their N outputs). The session has a
``FakeExecutor(slots=2)`` (each attempt is one trio checkpoint and writes its
outputs) and no listener (no UI); with the store (the default) it keeps its records
in ``.scriptflow`` here, as the CLI would. It prints one JSON line: the seconds
from opening the session to its end (the interpreter's start and the imports are not
counted), the number of tasks of the flow and the number the fake executor ran.

``--floor`` runs no session: only the FakeExecutor's own work for the same shape, a
trio checkpoint and an empty output file per task, two at a time where the flow has
two slots of work. It is W5's reference, as make is W1's: the engine's rate divided
by it is meant to hold across the VM's faster and slower phases better than the rate
itself (both are measured in the same minutes).

``--short`` keeps the store's writer process from starting on time alone, as in a
session that ends within the writer's first interval (0.2 s): for counting
instructions under valgrind, where a 10 ms chain of 200 takes longer than that and
would hand its records to a writer process instead of writing them at its close.
"""

from __future__ import annotations

import collections.abc
import functools
import json
import math
import os
import sys
import time

import trio

import scriptflow_trio as sf
from scriptflow_trio.testing import FakeExecutor


def independent(n: int) -> list[sf.Task]:
    return [
        sf.Task(cmd=f"touch out/{i}.txt", outputs=f"out/{i}.txt", name=f"t{i}") for i in range(n)
    ]


async def flow_independent(n: int) -> None:
    await sf.bag(*independent(n))


async def flow_chain(n: int) -> None:
    for i in range(1, n + 1):
        await sf.Task(
            cmd=f"cp c/{i - 1}.txt c/{i}.txt",
            inputs=f"c/{i - 1}.txt",
            outputs=f"c/{i}.txt",
            name=f"c{i}",
        )


async def flow_fanin(n: int) -> None:
    tasks = independent(n)
    await sf.bag(*tasks)
    inputs = [out for task in tasks for out in task.get_outputs()]
    await sf.Task(cmd="cat out/*.txt > all.txt", inputs=inputs, outputs="all.txt", name="all")


FLOWS = {"independent": (flow_independent, 0), "chain": (flow_chain, 0), "fanin": (flow_fanin, 1)}


async def measure_pending(n: int, store: bool) -> None:
    """All ``n`` tasks submitted, 2 running forever, ``n - 2`` waiting: then exit at once.

    The process's peak RSS is then what the engine holds for pending tasks (the Task
    objects of the flow included); exiting with ``os._exit`` keeps the cancellation of
    ``n`` jobs and the store's last commit out of that peak.
    """
    # trio.testing imports pytest where it is installed (90 ms, 9 MiB here): the peak
    # must not depend on whether the venv has the test extras; trio has a fallback
    sys.modules.setdefault("pytest", None)  # type: ignore[arg-type]
    import trio.testing

    fake = FakeExecutor(slots=2, duration=3600.0)
    start = time.perf_counter()
    async with sf.open_session(executors=[fake], store=store, state_dir=".scriptflow") as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sf.bag, *independent(n))
            await trio.testing.wait_all_tasks_blocked()
            stats = session.statistics()
            report = {
                "session_seconds": time.perf_counter() - start,
                "tasks": n,
                "ran": len(fake.runs),
                "queued": stats.queued,
            }
            print(json.dumps(report), flush=True)
            os._exit(0)


async def measure(shape: str, n: int, store: bool) -> dict[str, object]:
    flow, extra = FLOWS[shape]
    fake = FakeExecutor(slots=2)
    start = time.perf_counter()
    async with sf.open_session(executors=[fake], store=store, state_dir=".scriptflow") as session:
        await session.run(flow, n)
    seconds = time.perf_counter() - start
    return {"session_seconds": seconds, "tasks": n + extra, "ran": len(fake.runs)}


async def measure_floor(shape: str, n: int) -> dict[str, object]:
    """What the FakeExecutor does for ``shape``'s tasks, without the engine: a checkpoint
    and ``os.mknod`` of the output per task, in two trio tasks (one for the chain)."""
    if shape == "chain":
        paths = [f"c/{i}.txt" for i in range(1, n + 1)]
    else:
        paths = [f"out/{i}.txt" for i in range(n)] + (["all.txt"] if shape == "fanin" else [])
    ran = 0

    async def slot(todo: collections.abc.Iterator[str]) -> None:
        nonlocal ran
        for path in todo:
            await trio.lowlevel.checkpoint()
            os.mknod(path)
            ran += 1

    start = time.perf_counter()
    os.makedirs("out" if shape != "chain" else "c", exist_ok=True)
    if shape == "chain":
        await slot(iter(paths))
    else:
        last = paths.pop() if shape == "fanin" else None
        todo = iter(paths)  # shared: each slot takes the next task when it is free
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slot, todo)
            nursery.start_soon(slot, todo)
        if last is not None:  # after all the others, as the fan-in's last task
            await slot(iter([last]))
    seconds = time.perf_counter() - start
    return {"session_seconds": seconds, "tasks": n + FLOWS[shape][1], "ran": ran}


def main(argv: list[str]) -> int:
    shape, n = argv[0], int(argv[1])
    store = "--no-store" not in argv[2:]
    if "--short" in argv[2:]:
        from scriptflow_trio._store import StoreWriter

        # a private knob, for this measurement only: the first hand-over's wait
        StoreWriter.run = functools.partialmethod(StoreWriter.run, interval=math.inf)  # type: ignore[method-assign, assignment]
    if shape == "pending":
        trio.run(measure_pending, n, store)
    if "--floor" in argv[2:]:
        print(json.dumps(trio.run(measure_floor, shape, n)))
        return 0
    print(json.dumps(trio.run(measure, shape, n, store)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
