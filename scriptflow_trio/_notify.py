"""Notifications: a run's events sent by HTTP POST to the endpoints the user named.

``Notifier`` is an event listener. ``on_event`` only counts and queues (one bounded
queue per endpoint; a message that does not fit is dropped and counted), and ``run()``,
a trio task, sends: each endpoint gets its messages in order, one POST at a time, each
bounded by ``timeout``. A slow, failing or dead endpoint never slows or fails the run:
its failures are counted, never raised. When ``run()`` is cancelled it goes on sending
what is queued, the final ``run-finished`` included, for at most ``flush_timeout``.

Messages (``json`` format; ``time`` is ISO 8601 UTC), one JSON object per POST::

    every message   {"event", "run_id", "flow", "time"}
    run-started     + "host", "name" (the run's name or null), "arguments", "dry_run"
    task-failed     + "task", "attempts", "reason", "returncode" (or null), "log" (or null:
                      a local attempt that printed nothing leaves no log file)
    progress        + "elapsed" (s), "counts", "unlisted_failures"
    run-finished    + "status" (succeeded|failed|cancelled), "duration" (s), "counts",
                      "unlisted_failures", "dropped"

``counts`` is ``{"done", "failed", "skipped", "cancelled", "running", "queued",
"retried"}``. ``progress`` is sent at most once per ``every`` seconds, and only when
something changed. At most ``max_failures`` ``task-failed`` messages are sent per
progress interval; further failures are counted in ``unlisted_failures`` of the next
``progress`` (or of ``run-finished``). ``dropped`` counts this endpoint's messages that
were not delivered before ``run-finished``. A ``slack`` endpoint (an incoming
webhook) gets ``{"text": ...}``, a readable line per message.
"""

from __future__ import annotations

import collections
import datetime
import functools
import json
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import trio

from . import _events as ev
from ._ui import duration_text

Message = dict[str, Any]
Send = Callable[["Endpoint", Message], Awaitable[None]]

_SLACK_PREFIX = "slack:"
_FINAL = "run-finished"


@attrs.frozen
class Endpoint:
    """Where messages go: ``url``, in ``format`` json or slack, with an optional bearer token."""

    url: str
    format: Literal["json", "slack"] = "json"
    token: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str, token: str | None = None) -> Endpoint:
        """``https://...`` (JSON, with ``token`` if given) or ``slack:https://...``.

        Raises ``ValueError`` saying what is wrong when the text is not an http(s) URL.
        """
        slack = text.startswith(_SLACK_PREFIX)
        url = text.removeprefix(_SLACK_PREFIX) if slack else text
        try:
            parts = urllib.parse.urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{text!r} is not an http:// or https:// URL (a Slack incoming webhook "
                "is written slack:https://hooks.slack.com/services/...)"
            )
        if slack:
            return cls(url, "slack")
        return cls(url, "json", token)

    @property
    def shown(self) -> str:
        """The URL without what may be secret: query, user info, a Slack webhook's path."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        if self.format == "slack":
            return f"{_SLACK_PREFIX}{parts.scheme}://{netloc}/..."
        return f"{parts.scheme}://{netloc}{parts.path}"


@attrs.frozen
class EndpointStatistics:
    """What happened to one endpoint's messages; ``last_error`` says why the last one failed."""

    endpoint: str  # Endpoint.shown
    sent: int
    failed: int  # refused, unanswered within the timeout, or cut by the flush deadline
    dropped: int  # never tried: the queue was full, or the flush deadline passed
    last_error: str


@attrs.define
class _Queue:
    endpoint: Endpoint
    messages: collections.deque[Message] = attrs.Factory(collections.deque)
    wake: trio.Event = attrs.Factory(trio.Event)
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str = ""


class Notifier:
    """Sends a run's events to ``endpoints`` (``"https://..."`` or ``"slack:https://..."``).

    Give it to ``open_session(listeners=[...])`` and run ``notifier.run()`` in a nursery
    around the session; cancel that nursery after the session to send the last messages
    (for at most ``flush_timeout`` seconds). ``token`` goes to JSON endpoints as
    ``Authorization: Bearer``. ``run_name`` and ``arguments`` are reported in
    ``run-started``. ``send`` replaces the HTTP POST (the fault boundary: tests inject a
    fake); it raises on failure.
    """

    def __init__(
        self,
        endpoints: Iterable[str | Endpoint],
        *,
        token: str | None = None,
        every: float = 60.0,
        run_name: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        flush_timeout: float = 5.0,
        queue_size: int = 100,
        max_failures: int = 20,
        send: Send | None = None,
    ) -> None:
        parsed = [e if isinstance(e, Endpoint) else Endpoint.parse(e, token) for e in endpoints]
        if every <= 0 or timeout <= 0 or flush_timeout < 0 or queue_size < 1:
            raise ValueError("every, timeout and queue_size must be positive")
        self.every = every
        self.timeout = timeout
        self.flush_timeout = flush_timeout
        self.queue_size = queue_size
        self.max_failures = max_failures
        self.run_name = run_name
        self.arguments = dict(arguments or {})
        self._queues = [_Queue(e) for e in parsed]
        # threads a timeout abandoned keep their token until they end: one pool per
        # endpoint, so that a hanging endpoint cannot starve the others
        self._limiters = {e: trio.CapacityLimiter(2) for e in parsed}
        self._send = send or self._post
        self._closing = False
        self._flush: trio.CancelScope | None = None  # the senders' scope, once run() runs
        self._abandoned = False
        # the run being reported, derived from its events
        self._run_id = ""
        self._flow = ""
        self._t0 = 0.0
        self._in_run = trio.Event()
        self._changed = False
        self._submitted = 0
        self._done = self._failed = self._skipped = self._cancelled = self._retried = 0
        self._running: set[str] = set()  # keys of tasks with an attempt running
        self._attempts: dict[str, tuple[ev.AttemptStarted, ev.AttemptFinished | None]] = {}
        self._listed_failures = 0  # task-failed messages queued this progress interval
        self._unlisted = 0  # failures beyond max_failures, reported by the next progress

    # -- events -----------------------------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        """Count the event and queue what it tells; never blocks, never sends."""
        if isinstance(event, ev.TasksSubmitted):
            self._submitted += event.count
        elif isinstance(event, ev.AttemptStarted):
            self._running.add(event.key)
            self._attempts[event.key] = (event, None)
        elif isinstance(event, ev.AttemptFinished):
            self._running.discard(event.key)
            self._retried += event.will_retry
            if event.key in self._attempts:
                self._attempts[event.key] = (self._attempts[event.key][0], event)
        elif isinstance(event, ev.TaskFinished):
            self._task_finished(event)
        elif isinstance(event, ev.RunStarted):
            self._run_started(event)
        elif isinstance(event, ev.RunFinished):
            self._run_finished(event)
        else:
            return
        self._changed = True

    def _task_finished(self, event: ev.TaskFinished) -> None:
        self._running.discard(event.key)  # a cancelled attempt ends with its task
        started, finished = self._attempts.pop(event.key, (None, None))
        if event.status is ev.Status.SUCCEEDED:
            self._done += 1
        elif event.status is ev.Status.SKIPPED:
            self._skipped += 1
        elif event.status is ev.Status.CANCELLED:
            self._cancelled += 1
        elif event.status is ev.Status.FAILED:
            self._failed += 1
            if self._listed_failures >= self.max_failures:
                self._unlisted += 1
                return
            self._listed_failures += 1
            printed = finished is not None and finished.printed  # else no log file was made
            self._queue(
                self._message(
                    "task-failed",
                    event.time,
                    task=event.name,
                    attempts=event.attempts,
                    reason=(finished.reason if finished else "") or event.error,
                    returncode=finished.returncode if finished else None,
                    log=str(started.log_path) if started and printed else None,
                )
            )

    def _run_started(self, event: ev.RunStarted) -> None:
        self._run_id, self._flow, self._t0 = event.run_id, event.flow, trio.current_time()
        self._submitted = self._done = self._failed = self._skipped = 0
        self._cancelled = self._retried = self._listed_failures = self._unlisted = 0
        self._running.clear()
        self._attempts.clear()
        self._in_run.set()
        self._queue(
            self._message(
                "run-started",
                event.time,
                host=socket.gethostname(),
                name=self.run_name,
                arguments={k: _jsonable(v) for k, v in self.arguments.items()},
                dry_run=event.dry_run,
            )
        )

    def _run_finished(self, event: ev.RunFinished) -> None:
        self._in_run = trio.Event()
        unlisted, self._unlisted = self._unlisted, 0
        self._queue(
            self._message(
                _FINAL,
                event.time,
                status=event.status,
                duration=round(event.duration, 3),
                counts=self._counts(),
                unlisted_failures=unlisted,
            )
        )

    def _progress(self) -> None:
        """A progress message if the run changed since the last one; a new interval."""
        self._listed_failures = 0
        if not self._in_run.is_set() or not self._changed:
            return
        self._changed = False
        unlisted, self._unlisted = self._unlisted, 0
        message = self._message(
            "progress",
            None,
            elapsed=round(trio.current_time() - self._t0, 3),
            counts=self._counts(),
            unlisted_failures=unlisted,
        )
        for q in self._queues:  # a newer snapshot replaces one still waiting
            if any(m["event"] == "progress" for m in q.messages):
                q.messages = collections.deque(m for m in q.messages if m["event"] != "progress")
        self._queue(message)

    def _counts(self) -> dict[str, int]:
        finished = self._done + self._failed + self._skipped + self._cancelled
        return {
            "done": self._done,
            "failed": self._failed,
            "skipped": self._skipped,
            "cancelled": self._cancelled,
            "running": len(self._running),
            "queued": max(self._submitted - finished - len(self._running), 0),
            "retried": self._retried,
        }

    def _message(self, kind: str, t: float | None, **fields: Any) -> Message:
        when = datetime.datetime.now(datetime.UTC)
        if t is not None:
            when = datetime.datetime.fromtimestamp(t, datetime.UTC)
        return {
            "event": kind,
            "run_id": self._run_id,
            "flow": self._flow,
            "time": when.isoformat(timespec="milliseconds"),
            **fields,
        }

    def _queue(self, message: Message) -> None:
        for q in self._queues:
            if len(q.messages) >= self.queue_size and message["event"] != _FINAL:
                q.dropped += 1
                continue
            q.messages.append(message)
            q.wake.set()

    # -- sending ----------------------------------------------------------------------

    async def run(self) -> None:
        """Send until cancelled; then send what is still queued, for at most ``flush_timeout``."""
        # the senders outlive our cancellation...
        self._flush = flush = trio.CancelScope(shield=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_all, flush)
            nursery.start_soon(self._tick)
            try:
                await trio.sleep_forever()
            finally:
                self._closing = True
                for q in self._queues:
                    q.wake.set()
                flush.deadline = trio.current_time() + self.flush_timeout  # ...this long

    def abandon(self) -> None:
        """Stop sending now, queued messages and all (a second Ctrl-C during the flush)."""
        self._abandoned = True
        if self._flush is not None:
            self._flush.cancel()

    async def _tick(self) -> None:
        while True:
            await self._in_run.wait()
            await trio.sleep(self.every)
            self._progress()

    async def _send_all(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    for q in self._queues:
                        nursery.start_soon(self._sender, q)
        finally:
            for q in self._queues:
                q.dropped += len(q.messages)
                q.messages.clear()

    async def _sender(self, q: _Queue) -> None:
        while True:
            while not q.messages:
                if self._closing:
                    return
                q.wake = trio.Event()
                await q.wake.wait()
            message = q.messages.popleft()
            if message["event"] == _FINAL:
                message = {**message, "dropped": q.dropped + q.failed}
            body = _slack_body(message) if q.endpoint.format == "slack" else message
            try:
                with trio.fail_after(self.timeout):
                    await self._send(q.endpoint, body)
            except trio.TooSlowError:
                q.failed += 1
                q.last_error = f"no answer within {self.timeout:g}s"
            except trio.Cancelled:
                q.failed += 1
                q.last_error = (
                    "stopped by a second interrupt"
                    if self._abandoned
                    else "the flush deadline passed"
                )
                raise
            except Exception as exc:  # the endpoint's trouble is never the run's
                q.failed += 1
                q.last_error = _describe(exc)
            else:
                q.sent += 1

    async def _post(self, endpoint: Endpoint, message: Message) -> None:
        await post(endpoint, message, socket_timeout=self.timeout, limiter=self._limiters[endpoint])

    # -- the end ----------------------------------------------------------------------

    def statistics(self) -> tuple[EndpointStatistics, ...]:
        """Per endpoint: messages sent, failed, dropped, and the last error."""
        return tuple(
            EndpointStatistics(q.endpoint.shown, q.sent, q.failed, q.dropped, q.last_error)
            for q in self._queues
        )


async def post(
    endpoint: Endpoint,
    message: Message,
    *,
    socket_timeout: float = 5.0,
    limiter: trio.CapacityLimiter | None = None,
) -> None:
    """POST ``message`` as JSON to ``endpoint``; raise on a refusal, a non-2xx, a timeout.

    The blocking request runs in a thread that a cancellation abandons (it ends by
    itself within ``socket_timeout`` per socket operation); the caller bounds the whole.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "scriptflow-trio"}
    if endpoint.token:
        headers["Authorization"] = f"Bearer {endpoint.token}"
    data = json.dumps(message).encode()
    await trio.to_thread.run_sync(
        functools.partial(_post_blocking, endpoint.url, data, headers, socket_timeout),
        abandon_on_cancel=True,
        limiter=limiter,
    )


def _post_blocking(url: str, data: bytes, headers: dict[str, str], timeout: float) -> None:
    import urllib.request  # with http.client and ssl: 40 ms of start-up nobody else needs

    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(65536)


def _describe(exc: Exception) -> str:
    """A short reason for a failed POST (never the request's headers)."""
    import ssl
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {reason.verify_message}"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror[:1].lower() + reason.strerror[1:]
        return str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# -- Slack ----------------------------------------------------------------------------


def _slack_body(message: Message) -> Message:
    """Slack's incoming-webhook body: one readable line."""
    return {"text": _slack_text(message)}


def _slack_text(m: Message) -> str:
    flow = f"flow `{_esc(m['flow'])}` (run {_esc(m['run_id'])})"
    kind = m["event"]
    if kind == "run-started":
        name = f' "{_esc(m["name"])}"' if m.get("name") else ""
        return f":arrow_forward: {flow}{name} started on {_esc(m['host'])}"
    if kind == "task-failed":
        tries = f" after {m['attempts']} attempts" if m["attempts"] > 1 else ""
        log = f" (log: {_esc(m['log'])})" if m.get("log") else ""
        return f":x: task `{_esc(m['task'])}` failed{tries}: {_esc(m['reason'])}{log}"
    if kind == "progress":
        return f":hourglass_flowing_sand: {flow}, {duration_text(m['elapsed'])}: {_tally(m)}"
    icon = {"succeeded": ":white_check_mark:", "failed": ":x:"}.get(m["status"], ":octagonal_sign:")
    text = f"{icon} {flow} {m['status']} in {duration_text(m['duration'])}: {_tally(m)}"
    if m.get("dropped"):
        text += f" ({m['dropped']} earlier notifications lost)"
    return text


def _tally(m: Message) -> str:
    c = m["counts"]
    parts = [f"{c[k]} {k}" for k in ("done", "failed", "skipped", "cancelled", "running", "queued")]
    parts = [p for p in parts if not p.startswith("0 ")] or ["nothing to do"]
    if m.get("unlisted_failures"):
        parts.append(f"{m['unlisted_failures']} failures not listed")
    return ", ".join(parts)


def _esc(text: object) -> str:
    """Slack's three control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
