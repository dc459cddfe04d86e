"""What several test files need: watching processes and files, recording events."""

from __future__ import annotations

from pathlib import Path

import trio

from scriptflow_trio import _events as ev


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_for_files(*paths: str, limit: float = 15) -> list[int]:
    """Wait until each file holds a number (a pid a task wrote); return the numbers."""
    with trio.fail_after(limit):
        while not all(Path(p).exists() and Path(p).read_text().strip() for p in paths):
            await trio.sleep(0.05)
    return [int(Path(p).read_text()) for p in paths]


async def wait_gone(pids: list[int], limit: float = 10) -> None:
    with trio.fail_after(limit):
        while any(alive(p) for p in pids):
            await trio.sleep(0.05)


class Recorder:
    """A session listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def on_event(self, event: ev.Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def reasons(self, kind: type) -> dict[str, str]:
        return {e.name: e.reason for e in self.events if isinstance(e, kind)}
