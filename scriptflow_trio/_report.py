"""A run's report: one self-contained HTML file built from the store's records.

:func:`build_report` is a pure function, records in and HTML out: the run's summary, a
timeline of its attempts (inline SVG: one bar per attempt, packed in lanes per executor
and host, coloured by how it ended), a table of its tasks (a compact JSON blob that a
small inline script renders, sorts and filters, with the last lines of the log of each
failed attempt), and its task graph (inline SVG, laid out here in layers). Everything
is inline: the file opens from a disk with no network, and asks for nothing.

:func:`write_report` queries the store, reads the log tails, and writes the file; the
``report`` command and ``--report`` on a run call it.
"""

from __future__ import annotations

import heapq
import html
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._graph import Graph, collapse, graph_of, layer_rows, layers
from ._records import AttemptRecord, AttemptStatus, RunRecord, TaskOutcome
from ._store import Store

MAX_BARS = 2000  # attempts drawn in the timeline; beyond, failures and the longest
MAX_TAILS = 200  # failed attempts whose log tail the report keeps
TAIL_LINES = 20
TAIL_LINE_CHARS = 400
DRAW_NODES = 200  # a graph with more nodes is drawn grouped by name pattern
PAGE_ROWS = 1000  # table rows rendered before "show all"

_STATUS_ORDER = (
    "failed",
    "cancelled",
    "interrupted",
    "died",
    "running",
    "succeeded",
    "skipped",
)


# -- reading what the report needs ----------------------------------------------------


def failed_attempts(attempts: Sequence[AttemptRecord]) -> list[AttemptRecord]:
    """The failed attempts whose log tail the report shows: last attempts first, capped."""
    last: dict[str, int] = {}
    for a in attempts:
        last[a.key] = max(last.get(a.key, 0), a.attempt)
    failed = [a for a in attempts if a.status is AttemptStatus.FAILED]
    failed.sort(key=lambda a: (a.attempt != last[a.key], a.started))
    return failed[:MAX_TAILS]


def read_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (reading at most its last 64 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read()
    except FileNotFoundError:
        return "(the log file is no longer on disk)"
    except OSError as exc:
        return f"(the log file cannot be read: {exc})"
    text = data.decode(errors="replace")
    kept = text.splitlines()[-lines:]
    return "\n".join(
        line if len(line) <= TAIL_LINE_CHARS else line[:TAIL_LINE_CHARS] + "…" for line in kept
    )


def read_tails(attempts: Sequence[AttemptRecord], root: str) -> dict[tuple[str, int], str]:
    """Log tails of :func:`failed_attempts`, by (key, attempt); log paths are relative
    to ``root``, the project directory."""
    return {
        (a.key, a.attempt): read_tail(Path(root, a.log_path))
        for a in failed_attempts(attempts)
        if a.log_path
    }


def write_report(
    store: Store, run: RunRecord, path: str, *, root: str, status: str | None = None
) -> None:
    """Write the report of ``run`` to ``path`` (replaced whole, never half written).

    ``root`` is the project directory, which log paths are relative to; links to the
    logs are made relative to the report's own directory.
    """
    outcomes = store.outcomes(run.run_id)
    attempts = store.attempts(run.run_id)
    target = os.path.abspath(path)
    text = build_report(
        run,
        outcomes,
        attempts,
        status=status,
        tails=read_tails(attempts, root),
        log_prefix=os.path.relpath(root, os.path.dirname(target)),
        generated=time.time(),
    )
    partial = f"{target}.partial"
    try:
        with open(partial, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


# -- formatting -------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def duration_text(seconds: float | None) -> str:
    """``0.4 s``, ``3m 05s``, ``2h 07m``: a duration for people, as ``show`` writes it."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds >= 0.05 or seconds == 0 else f"{seconds:.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def bytes_text(n: int | None) -> str:
    """``35.2 MB``: a size in bytes for people (binary multiples)."""
    if n is None:
        return "-"
    size, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def _clock(t: float, *, date: bool = False, ms: bool = False) -> str:
    text = time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(t))
    if ms:
        text += f".{int(t % 1 * 100):02d}"
    return text


def _attempt_status(a: AttemptRecord, live: bool) -> str:
    if a.status is AttemptStatus.RUNNING:
        return "running" if live else "interrupted"
    return a.status.value


def _json_for_script(value: Any) -> str:
    """JSON that cannot end the ``<script>`` element it sits in, nor open a comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


# -- the report -------------------------------------------------------------------------


def build_report(
    run: RunRecord,
    outcomes: Sequence[TaskOutcome],
    attempts: Sequence[AttemptRecord],
    *,
    status: str | None = None,
    tails: Mapping[tuple[str, int], str] | None = None,
    log_prefix: str = "",
    generated: float | None = None,
) -> str:
    """The HTML report of one run, from its records.

    ``status`` overrides the run's recorded status (a dead engine's run), ``tails``
    holds the log tails of failed attempts by (key, attempt), ``log_prefix`` is the
    project directory relative to where the report will be (for links to the logs).
    """
    status = status or run.status.value
    live = status == "running"
    tails = tails or {}
    end = run.ended
    if end is None:
        ends = [a.ended or a.started for a in attempts]
        end = max([generated or run.started, *ends]) if live else max(ends, default=run.started)
    parts = [
        _summary(run, status, outcomes, attempts, end),
        _timeline(run, outcomes, attempts, end, live),
        _table(outcomes, attempts, tails, live, log_prefix),
        _graph_section(outcomes, attempts),
    ]
    stamp = _clock(generated, date=True) if generated is not None else ""
    title = f"{run.flow} · {run.name or run.run_id} · scriptflow_trio"
    return _PAGE.format(
        title=_e(title),
        css=_CSS,
        body="\n".join(parts),
        footer=_e(
            f"scriptflow_trio report of run {run.run_id}" + (f", made {stamp}" if stamp else "")
        ),
        script=_SCRIPT,
    )


def _counts(
    outcomes: Sequence[TaskOutcome], attempts: Sequence[AttemptRecord], live: bool
) -> dict[str, int]:
    counts: dict[str, int] = {}
    ended = set()
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
        ended.add(o.key)
    last: dict[str, AttemptRecord] = {}
    for a in attempts:
        if a.key not in ended and (a.key not in last or a.attempt > last[a.key].attempt):
            last[a.key] = a
    for a in last.values():
        s = _attempt_status(a, live)
        counts[s] = counts.get(s, 0) + 1
    return counts


def _summary(
    run: RunRecord,
    status: str,
    outcomes: Sequence[TaskOutcome],
    attempts: Sequence[AttemptRecord],
    end: float,
) -> str:
    live = status == "running"
    counts = _counts(outcomes, attempts, live)
    tries: dict[str, int] = {}
    for a in attempts:
        tries[a.key] = tries.get(a.key, 0) + 1
    retried = sum(1 for n in tries.values() if n > 1)
    cpu = [a.cpu_seconds for a in attempts if a.cpu_seconds is not None]
    rss = [a.max_rss for a in attempts if a.max_rss is not None]
    facts: list[tuple[str, str]] = [("run", run.run_id)]
    if run.name:
        facts.append(("name", run.name))
    if run.arguments:
        facts.append(("arguments", " ".join(f"{k}={v}" for k, v in run.arguments.items())))
    zone = time.strftime(" %Z", time.localtime(run.started)).rstrip()
    facts.append(("started", _clock(run.started, date=True) + zone))
    ended = (
        "still running" if live else ("-" if run.ended is None else _clock(run.ended, date=True))
    )
    facts.append(("ended", ended))
    facts.append(("duration", duration_text(end - run.started)))
    if run.host:
        facts.append(("host", run.host + (f" (pid {run.pid})" if run.pid else "")))
    if run.flowfile:
        facts.append(("flows file", run.flowfile))
    logdirs = {os.path.dirname(a.log_path) for a in attempts if a.log_path}
    if len(logdirs) == 1:
        facts.append(("logs", logdirs.pop()))
    facts.append(
        (
            "attempts",
            f"{len(attempts)}"
            + (f" ({retried} task{'s' if retried > 1 else ''} retried)" if retried else ""),
        )
    )
    if cpu:
        facts.append(("CPU time", duration_text(sum(cpu))))
    if rss:
        facts.append(("peak memory", bytes_text(max(rss)) + " (largest attempt)"))
    chips = []
    for s in sorted(counts, key=_rank):
        chips.append(f'<span class="chip st-{_e(s)}"><b>{counts[s]}</b> {_e(s)}</span>')
    total = sum(counts.values())
    chips.insert(0, f'<span class="chip"><b>{total}</b> tasks</span>')
    dl = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    return (
        '<header class="card summary">'
        f'<div class="headline"><h1><span class="muted">flow</span> {_e(run.flow)}</h1>'
        f'<span class="badge st-{_e(status)}">{_e(status)}</span>'
        f'<div class="chips">{"".join(chips)}</div></div>'
        f'<dl class="facts">{dl}</dl></header>'
    )


def _rank(status: str) -> int:
    return _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)


# -- timeline ---------------------------------------------------------------------------

_W = 1320  # the timeline's width in pixels
_LABEL_W = 150
_RIGHT = 16
_AXIS_H = 24
_LANE_H = 18
_LANE_GAP = 3
_GROUP_GAP = 12
_MAX_GROUP_H = 360
_STEPS = (
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)


def _tick_label(seconds: float, step: float) -> str:
    if step < 1:
        return f"{seconds:.1f} s"
    if step < 60 and seconds < 60:
        return f"{seconds:.0f} s"
    s = int(round(seconds))
    if step < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}h{s % 3600 // 60:02d}"


def _bar_class(a: AttemptRecord, last: int, live: bool) -> str:
    s = _attempt_status(a, live)
    if s == "failed" and a.attempt < last:
        return "retried"
    return s


def _pick_bars(attempts: Sequence[AttemptRecord]) -> list[AttemptRecord]:
    """At most :data:`MAX_BARS` attempts: every one that did not succeed, then the longest."""
    if len(attempts) <= MAX_BARS:
        return list(attempts)
    bad = [a for a in attempts if a.status is not AttemptStatus.SUCCEEDED]
    good = [a for a in attempts if a.status is AttemptStatus.SUCCEEDED]
    good.sort(key=lambda a: (a.ended or a.started) - a.started, reverse=True)
    chosen = (bad + good)[:MAX_BARS]
    chosen.sort(key=lambda a: a.started)
    return chosen


def _group_name(a: AttemptRecord, per_host: bool) -> str:
    return f"{a.executor} · {a.host}" if per_host and a.host else a.executor


def _lanes(attempts: Sequence[AttemptRecord], end: float) -> list[int]:
    """Pack attempts (sorted by start) into lanes where none overlaps; lane per attempt."""
    free: list[tuple[float, int]] = []  # (when the lane is free, lane)
    count = 0
    out = []
    for a in attempts:
        stop = a.ended if a.ended is not None else end
        if free and free[0][0] <= a.started:
            _, lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        heapq.heappush(free, (stop, lane))
        out.append(lane)
    return out


def _timeline(
    run: RunRecord,
    outcomes: Sequence[TaskOutcome],
    attempts: Sequence[AttemptRecord],
    end: float,
    live: bool,
) -> str:
    skipped = sorted(o.name for o in outcomes if o.status == "skipped")
    notes = []
    body = ""
    if attempts:
        body, note = _timeline_svg(run, attempts, end, live)
        if note:
            notes.append(note)
    else:
        notes.append(
            "no attempt ran in this run" + (": every task was up to date" if skipped else "")
        )
    legend = "".join(
        f'<span class="key"><i class="sw bar-{c}"></i>{_e(label)}</span>'
        for c, label in (
            ("succeeded", "succeeded"),
            ("retried", "failed, then retried"),
            ("failed", "failed"),
            ("cancelled", "cancelled"),
            ("interrupted", "interrupted"),
            ("running", "running"),
        )
    )
    skipped_html = ""
    if skipped:
        shown = skipped[:2000]
        more = f" … and {len(skipped) - len(shown)} more" if len(skipped) > len(shown) else ""
        names = ", ".join(_e(n) for n in shown)
        skipped_html = (
            f'<details class="skipped"><summary><b>{len(skipped)}</b> skipped '
            f"{'task' if len(skipped) == 1 else 'tasks'} (up to date, not run)</summary>"
            f'<p class="names">{names}{_e(more)}</p></details>'
        )
    note_html = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return (
        '<section class="card" id="timeline"><div class="sechead"><h2>Timeline</h2>'
        f'<div class="legend">{legend}</div></div>'
        f'<div class="scroll">{body}</div>{note_html}{skipped_html}</section>'
    )


def _timeline_svg(
    run: RunRecord, attempts: Sequence[AttemptRecord], end: float, live: bool
) -> tuple[str, str]:
    last: dict[str, int] = {}
    for a in attempts:
        last[a.key] = max(last.get(a.key, 0), a.attempt)
    bars = _pick_bars(sorted(attempts, key=lambda a: a.started))
    note = ""
    if len(bars) < len(attempts):
        note = (
            f"the timeline shows {len(bars)} of the {len(attempts)} attempts: every one that "
            "did not succeed, and the longest; the table lists every task"
        )
    start = min(run.started, *(a.started for a in bars))
    span = max(end - start, 1e-3)
    plot = _W - _LABEL_W - _RIGHT

    def x(t: float) -> float:
        return _LABEL_W + (t - start) / span * plot

    executors: dict[str, set[str]] = {}
    for a in bars:
        executors.setdefault(a.executor, set()).add(a.host)
    per_host = {e: 1 < len(hosts) <= 12 for e, hosts in executors.items()}
    groups: dict[str, list[AttemptRecord]] = {}
    for a in bars:
        groups.setdefault(_group_name(a, per_host[a.executor]), []).append(a)

    out: list[str] = []
    y: float = _AXIS_H
    rows: list[str] = []
    for gname, members in groups.items():
        lanes = _lanes(members, end)
        n = max(lanes) + 1
        lane_h = max(2.0, min(float(_LANE_H), (_MAX_GROUP_H + _LANE_GAP) / n - _LANE_GAP))
        gap = _LANE_GAP if lane_h >= 6 else (1 if lane_h >= 3 else 0)
        height = n * (lane_h + gap) - gap
        rows.append(
            f'<rect class="band" x="0" y="{y - 4:.1f}" width="{_W}" height="{height + 8:.1f}"/>'
            f'<text class="group" x="8" y="{y + min(height, _LANE_H) / 2 + 4:.1f}">'
            f"{_e(_shorten(gname, 22))}</text>"
            f'<text class="lanes" x="8" y="{y + min(height, _LANE_H) / 2 + 17:.1f}">'
            f"{len(members)} attempt{'s' if len(members) != 1 else ''}</text>"
        )
        for a, lane in zip(members, lanes, strict=True):
            stop = a.ended if a.ended is not None else end
            x0 = x(a.started)
            width = max(x(stop) - x0, 1.5)
            top = y + lane * (lane_h + gap)
            cls = _bar_class(a, last[a.key], live)
            tip = _tooltip(a, _attempt_status(a, live), last[a.key], stop)
            label = ""
            if width > 40 and lane_h >= 12:
                text = _shorten(a.name, int((width - 8) / 6.4))
                if text:
                    label = (
                        f'<text class="bl" x="{x0 + 4:.1f}" y="{top + lane_h / 2 + 4:.1f}">'
                        f"{_e(text)}</text>"
                    )
            out.append(
                f'<g class="bar bar-{cls}"><title>{_e(tip)}</title>'
                f'<rect x="{x0:.1f}" y="{top:.1f}" width="{width:.1f}" height="{lane_h:.1f}" '
                f'rx="{min(3.0, lane_h / 3):.1f}"/>{label}</g>'
            )
        y += height + _GROUP_GAP + 8
    total_h = y - _GROUP_GAP + 2
    axis = _axis(span, plot, total_h)
    svg = (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{_W}" '
        f'height="{total_h:.0f}" viewBox="0 0 {_W} {total_h:.0f}" role="img" '
        f'aria-label="timeline of {len(bars)} attempts">'
        f"{''.join(rows)}{axis}{''.join(out)}</svg>"
    )
    return svg, note


def _axis(span: float, plot: float, height: float) -> str:
    step = next((s for s in _STEPS if span / s <= 10), _STEPS[-1])
    ticks = []
    t = 0.0
    while t <= span + 1e-9:
        px = _LABEL_W + t / span * plot
        anchor = "start" if t == 0 else "middle"
        ticks.append(
            f'<line class="grid" x1="{px:.1f}" y1="{_AXIS_H - 6}" x2="{px:.1f}" y2="{height:.0f}"/>'
            f'<text class="tick" x="{px:.1f}" y="12" text-anchor="{anchor}">'
            f"{_e(_tick_label(t, step))}</text>"
        )
        t += step
    return "".join(ticks)


def _tooltip(a: AttemptRecord, status: str, last: int, stop: float) -> str:
    lines = [f"{a.name} — attempt {a.attempt} of {last}: {status}"]
    lines.append(
        f"{_clock(a.started, ms=True)} → {_clock(stop, ms=True)} "
        f"({duration_text(stop - a.started)})"
    )
    where = [a.executor]
    if a.host:
        where.append(a.host)
    if a.job_id:
        where.append(f"job {a.job_id}")
    lines.append(" · ".join(where))
    if a.returncode is not None:
        lines.append(f"exit code {a.returncode}")
    if a.reason and a.reason != f"exit code {a.returncode}":
        lines.append(a.reason)
    used = []
    if a.cpu_seconds is not None:
        used.append(f"CPU {duration_text(a.cpu_seconds)}")
    if a.max_rss is not None:
        used.append(f"peak memory {bytes_text(a.max_rss)}")
    if used:
        lines.append(" · ".join(used))
    return "\n".join(lines)


def _shorten(text: str, chars: int) -> str:
    if chars < 3:
        return ""
    return text if len(text) <= chars else text[: chars - 1] + "…"


# -- table ------------------------------------------------------------------------------


def _table(
    outcomes: Sequence[TaskOutcome],
    attempts: Sequence[AttemptRecord],
    tails: Mapping[tuple[str, int], str],
    live: bool,
    log_prefix: str,
) -> str:
    by_key: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        by_key.setdefault(a.key, []).append(a)
    for tries in by_key.values():
        tries.sort(key=lambda a: a.attempt)
    tasks: list[tuple[str, str, str, int, float | None]] = [
        (o.key, o.name, o.status, o.attempts, None if o.status == "skipped" else o.duration)
        for o in outcomes
    ]
    ended = {o.key for o in outcomes}
    for key, tries in by_key.items():
        if key not in ended:  # no outcome: the engine died, or is still running
            final = tries[-1]
            stop = final.ended
            duration = None if stop is None else stop - tries[0].started
            tasks.append((key, final.name, _attempt_status(final, live), final.attempt, duration))

    statuses: list[str] = []
    executors: list[str] = []
    hosts: list[str] = []
    logdirs: list[str] = []
    index: dict[tuple[int, str], int] = {}

    def ref(table: list[str], which: int, value: str) -> int:
        got = index.get((which, value))
        if got is None:
            got = index[(which, value)] = len(table)
            table.append(value)
        return got

    rows: list[list[Any]] = []
    tail_rows: list[list[list[Any]]] = []
    open_rows: list[int] = []
    any_cpu = any(a.cpu_seconds is not None for a in attempts)
    any_rss = any(a.max_rss is not None for a in attempts)
    any_host = any(a.host for a in attempts)
    any_job = any(a.job_id for a in attempts)
    for key, name, status, count, duration in tasks:
        tries = by_key.get(key, [])
        latest = tries[-1] if tries else None
        cpus = [a.cpu_seconds for a in tries if a.cpu_seconds is not None]
        rsss = [a.max_rss for a in tries if a.max_rss is not None]
        logdir, logbase = os.path.split(latest.log_path) if latest and latest.log_path else ("", "")
        tail_list = [
            [
                a.attempt,
                a.returncode,
                a.reason,
                a.log_path,
                tails.get((a.key, a.attempt), "(no log tail kept)"),
            ]
            for a in tries
            if a.status is AttemptStatus.FAILED and (a.key, a.attempt) in tails
        ]
        tail_at = -1
        if tail_list:
            tail_at = len(tail_rows)
            tail_rows.append(tail_list)
        row = [
            name,
            ref(statuses, 0, status),
            count,
            None if duration is None else round(duration, 3),
            None if latest is None else latest.returncode,
            ref(executors, 2, latest.executor) if latest and latest.executor else -1,
            ref(hosts, 3, latest.host) if latest and latest.host else -1,
            "" if latest is None else latest.job_id,
            round(sum(cpus), 3) if cpus else None,
            max(rsss) if rsss else None,
            ref(logdirs, 1, logdir) if logbase else -1,
            logbase,
            tail_at,
            key[:10],
        ]
        rows.append(row)
    failed_rows = [i for i, r in enumerate(rows) if statuses[r[1]] == "failed" and r[12] >= 0]
    if len(failed_rows) <= 3:
        open_rows = failed_rows
    columns = [
        ["name", "task", "text"],
        ["status", "status", "status"],
        ["attempts", "attempts", "num"],
        ["duration", "duration", "dur"],
        ["exit", "exit", "num"],
        ["executor", "executor", "ref"],
    ]
    if any_host:
        columns.append(["host", "host", "ref"])
    if any_job:
        columns.append(["job", "job id", "text"])
    if any_cpu:
        columns.append(["cpu", "CPU", "dur"])
    if any_rss:
        columns.append(["rss", "peak memory", "bytes"])
    columns.append(["log", "log", "log"])
    data = {
        "columns": columns,
        "rows": rows,
        "statuses": statuses,
        "executors": executors,
        "hosts": hosts,
        "logdirs": logdirs,
        "tails": tail_rows,
        "open": open_rows,
        "rank": list(_STATUS_ORDER),
        "logPrefix": "" if log_prefix in ("", ".") else log_prefix.replace(os.sep, "/") + "/",
        "page": PAGE_ROWS,
    }
    options = "".join(
        f'<option value="{_e(s)}">{_e(s)}</option>' for s in sorted(statuses, key=_rank)
    )
    note = ""
    if len(tails) >= MAX_TAILS:
        note = (
            f'<p class="note">the last lines of the logs are kept for {MAX_TAILS} failed '
            "attempts; `scriptflow-trio log TASK` prints any log</p>"
        )
    return (
        '<section class="card" id="tasks"><div class="sechead"><h2>Tasks</h2>'
        '<div class="tools"><input id="sf-filter" type="search" placeholder="filter by name" '
        'aria-label="filter tasks by name">'
        f'<select id="sf-status" aria-label="status"><option value="">every status</option>'
        f"{options}</select>"
        '<span id="sf-count" class="muted"></span></div></div>'
        '<div class="scroll rows"><table id="sf-table"><thead><tr></tr></thead><tbody></tbody>'
        "</table></div>"
        '<button id="sf-more" type="button" hidden>show all</button>'
        '<noscript><p class="note">the table needs JavaScript</p></noscript>'
        f"{note}"
        f'<script type="application/json" id="sf-data">{_json_for_script(data)}</script>'
        "</section>"
    )


# -- graph ------------------------------------------------------------------------------

_NODE_W = 168
_NODE_H = 26
_COL_GAP = 64
_ROW_GAP = 10
_PAD = 12


def _graph_section(outcomes: Sequence[TaskOutcome], attempts: Sequence[AttemptRecord]) -> str:
    graph = graph_of(outcomes, attempts)
    notes: list[str] = []
    drawn = graph
    if len(graph.nodes) > DRAW_NODES:
        drawn = collapse(graph)
        notes.append(
            f"{len(graph.nodes)} tasks, drawn as {len(drawn.nodes)} groups of tasks whose "
            "names differ only in their numbers; `scriptflow-trio dag` prints every task"
        )
    if not graph.nodes:
        body = ""
        notes.append("no task was recorded in this run")
    elif len(drawn.nodes) > DRAW_NODES:
        body = ""
        notes = [
            f"{len(graph.nodes)} tasks in {len(drawn.nodes)} name groups: too many to draw "
            "here; `scriptflow-trio dag RUN` prints the graph as dot or Mermaid"
        ]
    else:
        body = _graph_svg(drawn)
        if not graph.edges:
            notes.append("no task used another task's output in this run")
    n_edges = len(graph.edges)
    sub = f"{len(graph.nodes)} tasks, {n_edges} edge{'s' if n_edges != 1 else ''}"
    note_html = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    return (
        '<section class="card" id="graph"><div class="sechead"><h2>Task graph</h2>'
        f'<span class="muted">{_e(sub)} (producer → consumer)</span></div>'
        f'<div class="scroll tall">{body}</div>{note_html}</section>'
    )


def _graph_svg(graph: Graph) -> str:
    """The graph laid out left to right in layers; a group's box has a second line."""
    columns = layers(graph)
    nodes = {n.id: n for n in graph.nodes}
    node_h = _NODE_H + 14 if graph.grouped else _NODE_H
    at = layer_rows(graph, columns)
    pitch = node_h + _ROW_GAP
    pos: dict[str, tuple[float, float]] = {}
    for i, column in enumerate(columns):
        for nid in column:
            pos[nid] = (_PAD + i * (_NODE_W + _COL_GAP), _PAD + at[nid] * pitch)
    width = _PAD * 2 + len(columns) * (_NODE_W + _COL_GAP) - _COL_GAP
    height = _PAD * 2 + (max(at.values()) + 1) * pitch - _ROW_GAP
    edges = []
    for a, b in graph.edges:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        x1, y1 = xa + _NODE_W, ya + node_h / 2
        x2, y2 = xb - 2, yb + node_h / 2
        bend = max((x2 - x1) / 2, 24)
        edges.append(
            f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
            f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>'
        )
    boxes = []
    for nid, (nx, ny) in pos.items():
        node = nodes[nid]
        tip = f"{node.name}: {node.status}"
        text = f'<text x="{nx + 9:.1f}" y="{ny + 17:.1f}">{_e(_shorten(node.name, 24))}</text>'
        if node.count > 1:
            counts = ", ".join(
                f"{n} {s}" for s, n in sorted(node.statuses, key=lambda c: _rank(c[0]))
            )
            tip = f"{node.count} tasks {node.name}: {counts}"
            text += (
                f'<text class="sub" x="{nx + 9:.1f}" y="{ny + 32:.1f}">'
                f"{_e(_shorten(f'×{node.count}: {counts}', 30))}</text>"
            )
        boxes.append(
            f'<g class="node st-{_e(node.status)}"><title>{_e(tip)}</title>'
            f'<rect x="{nx:.1f}" y="{ny:.1f}" width="{_NODE_W}" height="{node_h}" rx="6"/>'
            f"{text}</g>"
        )
    return (
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="task graph">'
        '<defs><marker id="sf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrow"/></marker></defs>'
        f"{''.join(edges)}{''.join(boxes)}</svg>"
    )


# -- the page ---------------------------------------------------------------------------

_CSS = """
:root {
  --ok: #2f9e5f; --ok-bg: #dcf3e5; --fail: #d93a2f; --fail-bg: #fde1de;
  --cancel: #dc8c0c; --cancel-bg: #fdf0d5; --intr: #8a55cc; --intr-bg: #ede2fa;
  --run: #2f74c0; --run-bg: #dceafb; --skip: #8d96a0; --skip-bg: #eef0f3;
  --ink: #1d2530; --muted: #66707c; --line: #e3e7ec; --bg: #f5f7fa;
}
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px 40px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 18px; margin: 0 0 16px; box-shadow: 0 1px 2px rgba(20,30,40,.04); }
h1 { font-size: 20px; margin: 0; font-weight: 650; }
h2 { font-size: 15px; margin: 0; font-weight: 650; }
.muted { color: var(--muted); font-weight: 400; }
.headline { display: flex; align-items: center; gap: 14px; flex-wrap: wrap; }
.badge { padding: 2px 10px; border-radius: 99px; font-weight: 600; font-size: 13px;
  background: var(--skip-bg); color: var(--skip); }
.chips { display: flex; gap: 6px; flex-wrap: wrap; margin-left: auto; }
.chip { padding: 2px 9px; border-radius: 6px; background: var(--bg); font-size: 13px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 28px; margin: 10px 0 0; }
.facts div { display: flex; gap: 6px; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.sechead { display: flex; align-items: center; gap: 16px; margin-bottom: 8px; flex-wrap: wrap; }
.legend { display: flex; gap: 14px; font-size: 12.5px; color: var(--muted); }
.key { display: inline-flex; align-items: center; gap: 5px; }
.sw { display: inline-block; width: 14px; height: 10px; border-radius: 2px; }
.scroll { overflow: auto; }
.scroll.tall { max-height: 80vh; }
.scroll.rows { max-height: 75vh; }
.note { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
details.skipped { margin-top: 8px; font-size: 13px; }
details.skipped summary { cursor: pointer; color: var(--muted); }
details.skipped .names { margin: 6px 0 0; color: var(--muted); }
svg text { font-family: system-ui, "DejaVu Sans", sans-serif; }
svg.timeline { display: block; width: 100%; height: auto; min-width: 900px; }
svg.timeline .band { fill: #fafbfc; }
svg.timeline .group { font-size: 12px; font-weight: 600; fill: var(--ink); }
svg.timeline .lanes { font-size: 11px; fill: var(--muted); }
svg.timeline .grid { stroke: var(--line); }
svg.timeline .tick { font-size: 11px; fill: var(--muted); }
svg.timeline .bl { font-size: 11px; fill: #fff; pointer-events: none; }
.bar rect { stroke-width: 1; }
.bar:hover rect { stroke: var(--ink); stroke-width: 1.5; }
.bar-succeeded rect, .sw.bar-succeeded { fill: var(--ok); background: var(--ok); }
.bar-failed rect, .sw.bar-failed { fill: var(--fail); background: var(--fail); }
.bar-retried rect { fill: var(--fail-bg); stroke: var(--fail); stroke-dasharray: 3 2; }
.sw.bar-retried { background: var(--fail-bg); border: 1px dashed var(--fail); }
.bar-retried .bl { fill: var(--fail); }
.bar-cancelled rect, .sw.bar-cancelled { fill: var(--cancel); background: var(--cancel); }
.bar-interrupted rect, .sw.bar-interrupted { fill: var(--intr); background: var(--intr); }
.bar-running rect, .sw.bar-running { fill: var(--run); background: var(--run); }
.tools { display: flex; gap: 8px; align-items: center; margin-left: auto; }
.tools input, .tools select { font: inherit; font-size: 13px; padding: 4px 8px;
  border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.tools input { width: 220px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); padding: 6px 10px;
  border-bottom: 2px solid var(--line); cursor: pointer; user-select: none; white-space: nowrap;
  position: sticky; top: 0; background: #fff; }
th[data-dir="asc"]::after { content: " ▲"; font-size: 10px; }
th[data-dir="desc"]::after { content: " ▼"; font-size: 10px; }
td { padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top;
  white-space: nowrap; font-variant-numeric: tabular-nums; }
td.num { text-align: right; }
th.num { text-align: right; }
td.name { font-weight: 550; white-space: normal; word-break: break-all; min-width: 160px; }
td.log { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; color: var(--muted);
  white-space: normal; word-break: break-all; }
td.log a { color: inherit; }
tr:hover td { background: #fafbfc; }
.st { display: inline-block; padding: 0 8px; border-radius: 99px; font-size: 12px;
  font-weight: 600; }
.st-succeeded { background: var(--ok-bg); color: var(--ok); }
.st-failed { background: var(--fail-bg); color: var(--fail); }
.st-cancelled { background: var(--cancel-bg); color: var(--cancel); }
.st-interrupted, .st-died { background: var(--intr-bg); color: var(--intr); }
.st-running { background: var(--run-bg); color: var(--run); }
.st-skipped { background: var(--skip-bg); color: var(--skip); }
button { font: inherit; font-size: 12px; border: 1px solid var(--line); background: #fff;
  border-radius: 6px; padding: 1px 8px; cursor: pointer; color: var(--ink); }
button:hover { border-color: var(--muted); }
#sf-more { margin-top: 10px; font-size: 13px; padding: 4px 12px; }
td.tailbox { background: #fbfbfc; padding: 6px 10px 10px 28px; white-space: normal; }
.tail { margin: 4px 0 8px; }
.tail .what { font-size: 12px; color: var(--muted); margin-bottom: 3px; }
.tail pre { margin: 0; padding: 8px 10px; background: #1f2630; color: #e6e9ee; border-radius: 6px;
  font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap;
  word-break: break-all; max-height: 360px; overflow: auto; }
svg.dag .edge { fill: none; stroke: #a3adb8; stroke-width: 1.3; marker-end: url(#sf-arrow); }
svg.dag .arrow { fill: #a3adb8; }
svg.dag text { font-size: 12px; fill: var(--ink); }
svg.dag text.sub { font-size: 10.5px; fill: var(--muted); }
svg.dag .node rect { stroke-width: 1.4; fill: var(--skip-bg); stroke: var(--skip); }
svg.dag .st-succeeded rect { fill: var(--ok-bg); stroke: var(--ok); }
svg.dag .st-failed rect { fill: var(--fail-bg); stroke: var(--fail); }
svg.dag .st-cancelled rect { fill: var(--cancel-bg); stroke: var(--cancel); }
svg.dag .st-interrupted rect, svg.dag .st-died rect { fill: var(--intr-bg); stroke: var(--intr); }
svg.dag .st-running rect { fill: var(--run-bg); stroke: var(--run); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 8px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("sf-data").textContent);
  var cols = D.columns, rows = D.rows, tbody = document.querySelector("#sf-table tbody");
  var head = document.querySelector("#sf-table thead tr");
  var filter = document.getElementById("sf-filter"), pick = document.getElementById("sf-status");
  var count = document.getElementById("sf-count"), more = document.getElementById("sf-more");
  var IDX = {name: 0, status: 1, attempts: 2, duration: 3, exit: 4, executor: 5, host: 6,
             job: 7, cpu: 8, rss: 9, log: 10};
  var REFS = {executor: D.executors, host: D.hosts};
  var open = {}, limit = D.page, sortBy = "status", dir = 1, sortCol = cols[1];
  rows.forEach(function (r, i) { r.i = i; });
  D.open.forEach(function (i) { open[i] = true; });
  var names = new Intl.Collator(undefined, {numeric: true});
  function rank(s) { var i = D.rank.indexOf(s); return i < 0 ? D.rank.length : i; }
  function dur(s) {
    if (s === null) return "-";
    if (s < 60) return (s < 0.05 && s > 0 ? s.toFixed(2) : s.toFixed(1)) + " s";
    var t = Math.round(s), m = Math.floor(t / 60), h = Math.floor(m / 60);
    return m < 60 ? m + "m " + String(t % 60).padStart(2, "0") + "s"
                  : h + "h " + String(m % 60).padStart(2, "0") + "m";
  }
  function size(n) {
    if (n === null) return "-";
    var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return i ? n.toFixed(1) + " " + u[i] : n + " B";
  }
  function logPath(r) {
    return r[10] < 0 ? "" : (D.logdirs[r[10]] ? D.logdirs[r[10]] + "/" : "") + r[11];
  }
  function value(r, c) {
    var k = c[0], v = r[IDX[k]];
    if (k === "status") return rank(D.statuses[v]);
    if (k === "log") return logPath(r);
    if (REFS[k]) return v < 0 ? "" : REFS[k][v];
    return v;
  }
  function compare(a, b) {
    var x = value(a, sortCol), y = value(b, sortCol);
    if (x === y) return names.compare(a[0], b[0]);
    if (x === null || x === "") return 1;
    if (y === null || y === "") return -1;
    if (typeof x === "string") return names.compare(x, y) * dir;
    return (x < y ? -1 : 1) * dir;
  }
  function cell(r, c) {
    var td = document.createElement("td"), k = c[0], v = r[IDX[k]];
    if (c[2] === "num" || c[2] === "dur" || c[2] === "bytes") td.className = "num";
    if (k === "name") {
      td.className = "name";
      td.appendChild(document.createTextNode(v));
      if (r[12] >= 0) {
        var b = document.createElement("button"), i = r.i;
        b.type = "button";
        b.textContent = open[i] ? "hide log" : "log tail";
        b.style.marginLeft = "8px";
        b.onclick = function () { open[i] = !open[i]; render(); };
        td.appendChild(b);
      }
    } else if (k === "status") {
      var s = document.createElement("span");
      s.className = "st st-" + D.statuses[v];
      s.textContent = D.statuses[v];
      td.appendChild(s);
    } else if (k === "log") {
      td.className = "log";
      var p = logPath(r);
      if (p) {
        var a = document.createElement("a");
        a.href = encodeURI(D.logPrefix + p);
        a.title = p;
        a.textContent = r[11];
        td.appendChild(a);
      } else td.textContent = "-";
    } else if (c[2] === "dur") td.textContent = dur(v);
    else if (c[2] === "bytes") td.textContent = size(v);
    else if (REFS[k]) td.textContent = v < 0 ? "-" : REFS[k][v];
    else td.textContent = v === null || v === "" ? "-" : String(v);
    return td;
  }
  function tails(r) {
    var tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = cols.length;
    td.className = "tailbox";
    D.tails[r[12]].forEach(function (t) {
      var box = document.createElement("div"), what = document.createElement("div");
      var pre = document.createElement("pre");
      box.className = "tail";
      what.className = "what";
      what.textContent = "attempt " + t[0] + (t[2] ? ": " + t[2] : "") +
                         (t[3] ? "  ·  " + t[3] : "");
      pre.textContent = t[4] || "(the log is empty)";
      box.appendChild(what);
      box.appendChild(pre);
      td.appendChild(box);
    });
    tr.appendChild(td);
    return tr;
  }
  function render() {
    var q = filter.value.toLowerCase(), st = pick.value;
    var list = rows.filter(function (r) {
      return (!q || r[0].toLowerCase().indexOf(q) >= 0) && (!st || D.statuses[r[1]] === st);
    });
    list.sort(compare);
    var frag = document.createDocumentFragment();
    list.slice(0, limit).forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-key", r[13]);
      cols.forEach(function (c) { tr.appendChild(cell(r, c)); });
      frag.appendChild(tr);
      if (r[12] >= 0 && open[r.i]) frag.appendChild(tails(r));
    });
    tbody.replaceChildren(frag);
    tbody.querySelectorAll(".tail pre").forEach(function (pre) {
      pre.scrollTop = pre.scrollHeight;  // the last lines matter most
    });
    count.textContent = list.length === rows.length ? rows.length + " tasks"
                                                    : list.length + " of " + rows.length + " tasks";
    more.hidden = list.length <= limit;
    more.textContent = "show all " + list.length;
    Array.prototype.forEach.call(head.children, function (th) {
      th.removeAttribute("data-dir");
      if (th.getAttribute("data-col") === sortBy) {
        th.setAttribute("data-dir", dir > 0 ? "asc" : "desc");
      }
    });
  }
  cols.forEach(function (c) {
    var th = document.createElement("th");
    th.textContent = c[1];
    th.setAttribute("data-col", c[0]);
    if (c[2] === "num" || c[2] === "dur" || c[2] === "bytes") th.className = "num";
    th.onclick = function () {
      if (sortBy === c[0]) dir = -dir;
      else { sortBy = c[0]; sortCol = c; dir = (c[2] === "dur" || c[2] === "bytes") ? -1 : 1; }
      render();
    };
    head.appendChild(th);
  });
  filter.oninput = render;
  pick.onchange = render;
  more.onclick = function () { limit = Infinity; render(); };
  render();
})();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
<footer>{footer}</footer>
<script>{script}</script>
</body>
</html>
"""
