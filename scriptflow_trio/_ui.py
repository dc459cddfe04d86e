"""The terminal: a live rich view, or plain timestamped lines. The only module using rich.

``TerminalView`` is an event listener: ``on_event`` only updates counters and buffers
lines, and ``run()`` (a trio task) draws at a bounded rate, so a flow of thousands of
tasks costs the engine a method call per event, not a redraw.

rich is imported only to draw on a terminal: plain output (a file, a pipe, a batch
job's log, ``--plain``) is written directly, and a run spares rich's start-up.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import trio

from . import _events as ev

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.live import Live


def escape(text: str) -> str:
    """``text`` safe inside rich markup (imports rich: for the live view only)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class Printer:
    """Lines for people on one stream: through rich on a terminal, plain text elsewhere.

    ``console`` wraps an existing rich Console (tests render into a string that way).
    """

    def __init__(
        self, stream: IO[str] | None = None, *, plain: bool = False, console: Any = None
    ) -> None:
        self._console = console
        self.file: IO[str] = console.file if console is not None else (stream or sys.stdout)
        if console is not None:
            self.is_terminal = bool(console.is_terminal) and not plain
        else:
            forced = os.environ.get("FORCE_COLOR") not in (None, "") or os.environ.get(
                "TTY_COMPATIBLE"
            ) in ("1", "true")
            self.is_terminal = not plain and (forced or _isatty(self.file))

    @property
    def console(self) -> Console:
        """The rich Console behind a terminal (created, and rich imported, on first use)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.file, highlight=False, soft_wrap=True)
        return self._console

    def print(self, text: str, style: str = "", markup: str | None = None) -> None:
        """Print ``text`` (plain); on a terminal in ``style``, or ``markup`` when given."""
        if not self.is_terminal:
            self.file.write(text + "\n")
            self.file.flush()
            return
        from rich.text import Text

        shown = Text.from_markup(markup) if markup is not None else Text(text, style=style)
        self.console.print(shown, soft_wrap=True, highlight=False)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_MAX_RUNNING_SHOWN = 8
_MAX_SKIPS_SHOWN = 5


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def duration_text(seconds: float) -> str:
    """A duration for people: 4.2s, 3m07s, 2h05m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class TerminalView:
    """Shows a run: a live view on a terminal, plain lines otherwise (``plain=True``).

    ``quiet`` keeps only failures and the summary; ``verbose`` adds commands, skipped
    tasks one by one, and finished tasks.
    """

    def __init__(
        self,
        printer: Printer | Console,
        *,
        plain: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        refresh_interval: float = 0.1,
    ) -> None:
        if not isinstance(printer, Printer):
            printer = Printer(console=printer)
        self.printer = printer
        self.plain = plain or not printer.is_terminal
        self.quiet = quiet
        self.verbose = verbose
        self.refresh_interval = refresh_interval
        self.counts = {s: 0 for s in ev.Status}
        self.retried = 0
        self.submitted = 0
        self.running: dict[tuple[str, int], tuple[str, float]] = {}
        self.finished: list[ev.TaskFinished] = []
        self.flow = ""
        self.run_id = ""
        self.started = time.time()
        self.elapsed: float | None = None
        self.run_status = ""
        self._lines: list[tuple[str, str]] = []  # (markup, plain text)
        self._skips: list[ev.TaskSkipped] = []
        self._dirty = trio.Event()
        self._changed = False  # _dirty is set
        self._out: IO[str] = printer.file

    # -- events -----------------------------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        # the most frequent events first
        if isinstance(event, ev.TaskFinished):
            self.counts[event.status] += 1
            if event.status is not ev.Status.SKIPPED:
                self.finished.append(event)
            if event.status is ev.Status.FAILED:
                self._line(event.time, "FAILED", "bold red", event.error or event.name)
            elif event.status is ev.Status.SUCCEEDED and self.verbose:
                self._line(
                    event.time, "done", "green", f"{event.name} in {duration_text(event.duration)}"
                )
            elif event.status is ev.Status.CANCELLED and not self.quiet:
                self._line(event.time, "stopped", "magenta", event.name)
        elif isinstance(event, ev.TaskSkipped):
            if not self.quiet:
                if self.plain or self.verbose:
                    self._line(event.time, "skip", "dim", f"{event.name} ({event.reason})")
                else:
                    self._skips.append(event)
        elif isinstance(event, ev.AttemptStarted):
            self.running[(event.key, event.attempt)] = (event.name, event.time)
            if not self.quiet:
                what = f" (retry {event.attempt - 1})" if event.attempt > 1 else ""
                why = f" - {event.reason}" if event.attempt == 1 and event.reason else ""
                self._line(event.time, "start", "cyan", f"{event.name}{what}{why}")
                if self.verbose:
                    self._line(event.time, "cmd", "dim", event.command)
        elif isinstance(event, ev.AttemptFinished):
            self.running.pop((event.key, event.attempt), None)
            if not event.ok and event.will_retry:
                self.retried += 1
                if not self.quiet:
                    self._line(
                        event.time,
                        "retry",
                        "yellow",
                        f"{event.name} attempt {event.attempt} failed: {event.reason}",
                    )
        elif isinstance(event, ev.TasksSubmitted):
            self.submitted += event.count
        elif isinstance(event, ev.OutputLine):
            plain = f"[{event.name}] {event.line}"
            if self.plain:
                self._lines.append(("", plain))
            else:
                markup = f"[dim]\\[{escape(event.name)}][/] {escape(event.line)}"
                self._lines.append((markup, plain))
        elif isinstance(event, ev.TaskWouldRun):
            self._line(event.time, "would run", "yellow", f"{event.name} - {event.reason}")
            self._line(event.time, "cmd", "dim", event.command)
        elif isinstance(event, ev.RunStarted):
            self.flow, self.run_id, self.started = event.flow, event.run_id, event.time
            if not self.quiet:
                dry = " (dry run: nothing runs)" if event.dry_run else ""
                self._line(event.time, "run", "bold", f"{event.flow} [{event.run_id}]{dry}")
        elif isinstance(event, ev.RunFinished):
            self.elapsed, self.run_status = event.duration, event.status
        if not self._changed:
            self._changed = True
            self._dirty.set()

    def _line(self, t: float, tag: str, style: str, text: str) -> None:
        plain = f"{_clock(t)} {tag:<7} {text}"
        if self.plain:
            self._lines.append(("", plain))
            return
        self._lines.append((f"[dim]{_clock(t)}[/] [{style}]{tag:<7}[/] {escape(text)}", plain))

    # -- drawing ----------------------------------------------------------------------

    async def run(self) -> None:
        """Draw until cancelled; then draw once more and leave the last lines on screen."""
        if self.plain:
            try:
                while True:
                    await self._wait_for_change()
                    self._flush_plain()
                    await trio.sleep(self.refresh_interval)
            finally:
                self._flush_plain()
        from rich.live import Live
        from rich.text import Text

        with Live(console=self.printer.console, auto_refresh=False, transient=True) as live:
            try:
                while True:
                    await self._wait_for_change()
                    self._flush_live(live)
                    await trio.sleep(self.refresh_interval)
            finally:
                self._flush_live(live)
                live.update(Text(""), refresh=True)

    async def _wait_for_change(self) -> None:
        # running tasks show their elapsed time, which changes without an event
        with trio.move_on_after(1.0 if self.running else math.inf):
            await self._dirty.wait()
        self._dirty, self._changed = trio.Event(), False

    def _flush_plain(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            self._out.write("".join(plain + "\n" for _, plain in lines))
            self._out.flush()

    def _flush_live(self, live: Live) -> None:
        from rich.text import Text

        lines, self._lines = self._lines, []
        skips, self._skips = self._skips, []
        markup = [m for m, _ in lines]
        if skips:
            shown = skips[:_MAX_SKIPS_SHOWN]
            markup += [
                f"[dim]{_clock(s.time)} skip    {escape(s.name)} ({escape(s.reason)})[/]"
                for s in shown
            ]
            if len(skips) > len(shown):
                markup.append(
                    f"[dim]{_clock(skips[-1].time)} skip    ... and "
                    f"{len(skips) - len(shown)} more up to date[/]"
                )
        if markup:
            live.console.print(Text.from_markup("\n".join(markup)), soft_wrap=True)
        live.update(self._status(), refresh=True)

    def _status(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        c = self.counts
        queued = self.submitted - sum(c.values()) - len(self.running)
        head = Text.from_markup(
            f"[bold]{escape(self.flow)}[/] {duration_text(now - self.started)}  "
            f"queued {max(queued, 0)} · "
            f"[cyan]running {len(self.running)}[/] · [green]done {c[ev.Status.SUCCEEDED]}[/] · "
            f"skipped {c[ev.Status.SKIPPED]} · [red]failed {c[ev.Status.FAILED]}[/] · "
            f"[yellow]retried {self.retried}[/]"
        )
        rows = sorted(self.running.values(), key=lambda r: r[1])
        table = Table.grid(padding=(0, 2))
        for name, start in rows[:_MAX_RUNNING_SHOWN]:
            table.add_row(f"  [cyan]{escape(name)}[/]", duration_text(now - start))
        if len(rows) > _MAX_RUNNING_SHOWN:
            table.add_row(f"  ... and {len(rows) - _MAX_RUNNING_SHOWN} more", "")
        return Group(head, table)

    # -- the end ----------------------------------------------------------------------

    def print_summary(self, failures: list[str]) -> None:
        """The closing summary: counts, the busiest tasks, and every failure."""
        c = self.counts
        elapsed = self.elapsed if self.elapsed is not None else time.time() - self.started
        status = self.run_status or "ended"
        style = {"succeeded": "green", "failed": "red", "cancelled": "magenta"}.get(status, "")
        parts = [
            f"ran {c[ev.Status.SUCCEEDED] + c[ev.Status.FAILED]}",
            f"skipped {c[ev.Status.SKIPPED]}",
            f"failed {c[ev.Status.FAILED]}",
        ]
        if self.retried:
            parts.append(f"retried {self.retried}")
        if c[ev.Status.CANCELLED]:
            parts.append(f"interrupted {c[ev.Status.CANCELLED]}")
        if c[ev.Status.WOULD_RUN]:
            parts.append(f"would run {c[ev.Status.WOULD_RUN]}")
        ran = [f for f in self.finished if f.status in (ev.Status.SUCCEEDED, ev.Status.FAILED)]
        busiest = sorted(ran, key=lambda f: f.duration, reverse=True)[:5]
        interrupted = [f.name for f in self.finished if f.status is ev.Status.CANCELLED]
        if self.plain:
            out = [
                f"{_clock(time.time())} {status:<7} {self.flow} in {duration_text(elapsed)}: "
                + ", ".join(parts)
            ]
            if busiest and not self.quiet:
                out.append(
                    "busiest: "
                    + ", ".join(f"{f.name} {duration_text(f.duration)}" for f in busiest)
                )
            if interrupted:
                out.append("interrupted: " + ", ".join(interrupted))
            out += failures
            self._out.write("\n".join(out) + "\n")
            self._out.flush()
            return
        from rich.table import Table
        from rich.text import Text

        console = self.printer.console
        console.print(
            Text.from_markup(
                f"[bold {style}]{status}[/] {escape(self.flow)} in "
                f"{duration_text(elapsed)}: " + escape(", ".join(parts))
            )
        )
        if busiest and not self.quiet:
            table = Table(title="busiest tasks", title_justify="left", box=None, padding=(0, 2))
            table.add_column("task")
            table.add_column("time", justify="right")
            table.add_column("attempts", justify="right")
            table.add_column("status")
            for f in busiest:
                table.add_row(
                    escape(f.name), duration_text(f.duration), str(f.attempts), f.status.value
                )
            console.print(table)
        if interrupted:
            console.print(Text("interrupted: " + ", ".join(interrupted), style="magenta"))
        for failure in failures:
            console.print(Text(failure, style="red"), soft_wrap=True)
