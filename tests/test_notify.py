"""Notifications: a real HTTP server on localhost receives a real CLI run's events.

The command-line tests run ``python -m scriptflow_trio`` in a subprocess against an
``http.server`` in a thread that records every request. The unit tests drive a
``Notifier`` with synthetic events on trio's virtual clock, with a fake ``send`` (the
fault boundary), to check throttling, capping, dropping and the bounded final flush.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from scriptflow_trio import _cli, _notify
from scriptflow_trio import _events as ev
from scriptflow_trio._notify import Endpoint, Notifier

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``python`` is this interpreter, so task commands find it."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "python").symlink_to(sys.executable)
    return folder


def cli_env(python_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PATH"] = f"{python_bin}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "1000"
    return env


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# -- a recording HTTP server ----------------------------------------------------------


@attrs.frozen
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Server:
    """Records every POST; answers 204 (or sleeps first, when ``delay`` is set)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, delay: float = 0.0) -> None:
        self.requests: list[Request] = []
        self.delay = delay
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.requests.append(Request(self.path, dict(self.headers), json.loads(data)))
                time.sleep(server.delay)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.requests]

    def events(self) -> list[str]:
        return [b.get("event", "") for b in self.bodies()]

    def wait_for(self, event: str, limit: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = [b for b in self.bodies() if b.get("event") == event]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {event} within {limit}s; got {self.events()}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


def closed_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


@attrs.frozen
class Result:
    returncode: int
    out: str
    seconds: float


def run_cli(
    cwd: Path, python_bin: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Result:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scriptflow_trio", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**cli_env(python_bin), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0)


MIXED = r"""
import scriptflow_trio as sf

async def flow_mixed(delay: float = 0.0):
    code = f"import time; time.sleep({delay}); open('ok.txt', 'w').write('1')"
    ok = sf.Task(cmd=["python", "-c", code], outputs="ok.txt", name="good")
    bad = sf.Task(cmd=["python", "-c", "import sys; print('BAD'); sys.exit(3)"], outputs="bad.txt",
                  name="bad")
    await sf.bag(ok, bad)
"""


# -- the command line -----------------------------------------------------------------


def test_run_sends_started_failed_finished_in_order_with_token(
    tmp_path: Path, python_bin: Path, server: Server
) -> None:
    write(tmp_path / "flows.py", MIXED)
    r = run_cli(
        tmp_path,
        python_bin,
        "flows.py",
        "mixed",
        "delay=0.3",
        "--plain",
        "-k",
        "--run-name",
        "nightly",
        "--notify",
        server.url,
        "--notify-token-env",
        "HOOK_TOKEN",
        "-v",
        env={"HOOK_TOKEN": "s3cret-token"},
    )
    assert r.returncode == 1, r.out
    assert server.events() == ["run-started", "task-failed", "run-finished"], server.bodies()
    started, failed, finished = server.bodies()
    run_id = started["run_id"]
    assert all(b["run_id"] == run_id and b["flow"] == "mixed" for b in server.bodies())
    assert started["name"] == "nightly"
    assert started["arguments"] == {"delay": 0.3}
    assert started["host"] == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", started["time"])
    assert failed["task"] == "bad" and failed["attempts"] == 1
    assert failed["reason"] == "exit code 3" and failed["returncode"] == 3
    assert failed["log"].endswith(".log") and Path(failed["log"]).exists()
    assert finished["status"] == "failed"
    assert finished["counts"] == {
        "done": 1,
        "failed": 1,
        "skipped": 0,
        "cancelled": 0,
        "running": 0,
        "queued": 0,
        "retried": 0,
    }
    assert finished["duration"] >= 0.3 and finished["dropped"] == 0
    assert {r.headers["Authorization"] for r in server.requests} == {"Bearer s3cret-token"}
    assert {r.headers["Content-Type"] for r in server.requests} == {"application/json"}
    # -v says what was sent; the token is never printed
    assert f"notifications: 3 sent to {server.url}" in r.out, r.out
    assert "s3cret-token" not in r.out
    assert TRACEBACK not in r.out


LONG = r"""
import scriptflow_trio as sf

async def flow_long():
    def sleeper(i):
        code = (f"import os, time; open('pid{i}.txt', 'w').write(str(os.getpid())); "
                "time.sleep(60)")
        return sf.Task(cmd=["python", "-c", code], outputs=f"never{i}.txt", name=f"sleep-{i}")
    await sf.bag(sleeper(1), sleeper(2))
"""


def start_long(cwd: Path, python_bin: Path, url: str) -> subprocess.Popen[str]:
    """The CLI on ``LONG``, notifying ``url``; returns once both tasks run."""
    write(cwd / "flows.py", LONG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_trio", "flows.py", "long", "-j", "2", "--plain"]
        + ["--notify", url],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(python_bin),
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not all((cwd / f"pid{i}.txt").exists() for i in (1, 2)):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"the tasks never started: {proc.communicate()[0]}")
        time.sleep(0.02)
    return proc


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """SIGINT to ``proc``: what it printed from then on, and the seconds it took to end."""
    t0 = time.monotonic()
    try:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, time.monotonic() - t0


def test_ctrl_c_still_sends_run_finished(tmp_path: Path, python_bin: Path, server: Server) -> None:
    proc = start_long(tmp_path, python_bin, server.url)
    server.wait_for("run-started")
    out, took = interrupt(proc)
    assert proc.returncode == 130, out
    assert took < 5, f"exit took {took:.1f}s after SIGINT"
    events = server.events()
    assert events[0] == "run-started" and events[-1] == "run-finished", events
    assert events.count("run-finished") == 1
    finished = server.bodies()[-1]
    assert finished["status"] == "cancelled"
    assert finished["counts"]["cancelled"] == 2 and finished["counts"]["running"] == 0
    assert TRACEBACK not in out


def test_a_second_ctrl_c_cuts_the_final_flush_short(
    tmp_path: Path, python_bin: Path, hanging_url: str
) -> None:
    proc = start_long(tmp_path, python_bin, hanging_url)
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    # the summary is printed before the last messages are sent (for up to 5 s here: the
    # endpoint never answers); a second Ctrl-C then leaves at once
    lines: list[str] = []
    while not (lines and lines[-1].startswith("interrupted:")):
        lines.append(proc.stdout.readline())
        if not lines[-1]:
            proc.kill()
            raise AssertionError("".join(lines))
    out, took = interrupt(proc)
    out = "".join(lines) + out
    assert proc.returncode == 130, out
    assert took < 2, f"exit took {took:.1f}s after the second SIGINT"
    assert "stopped by a second interrupt" in out, out
    assert TRACEBACK not in out


def test_dead_endpoints_do_not_slow_the_run(
    tmp_path: Path, python_bin: Path, hanging_url: str
) -> None:
    write(tmp_path / "flows.py", MIXED)

    def summary_seconds(r: Result) -> float:
        found = re.search(r"failed\s+mixed in ([\d.]+)s", r.out)
        assert found, r.out
        return float(found.group(1))

    args = ("flows.py", "mixed", "delay=1", "--plain", "-k", "-f", "*")
    base = run_cli(tmp_path, python_bin, *args)
    closed = run_cli(tmp_path, python_bin, *args, "--notify", closed_url())
    hanging = run_cli(tmp_path, python_bin, *args, "--notify", hanging_url)
    for r in (base, closed, hanging):
        assert r.returncode == 1, r.out
        assert TRACEBACK not in r.out
    # the run itself takes as long with dead endpoints as without
    assert summary_seconds(closed) < summary_seconds(base) + 0.5, (base.out, closed.out)
    assert summary_seconds(hanging) < summary_seconds(base) + 0.5, (base.out, hanging.out)
    # a refused connection costs nothing; a silent endpoint at most the 5 s final flush
    assert closed.seconds < base.seconds + 1.5, (base.seconds, closed.seconds)
    assert hanging.seconds < base.seconds + 5 + 2, (base.seconds, hanging.seconds)
    # and the loss is reported at the end
    assert "notifications: 0 sent, 3 dropped/failed to http://127.0.0.1:" in closed.out
    assert "connection refused" in closed.out
    assert "notifications: 0 sent, 3 dropped/failed" in hanging.out, hanging.out


def test_slack_format_posts_readable_text(tmp_path: Path, python_bin: Path, server: Server) -> None:
    write(tmp_path / "flows.py", MIXED)
    r = run_cli(
        tmp_path,
        python_bin,
        "flows.py",
        "mixed",
        "--plain",
        "-k",
        "--notify",
        f"slack:{server.url}",
        "--notify-token-env",
        "HOOK_TOKEN",
        env={"HOOK_TOKEN": "s3cret-token"},
    )
    assert r.returncode == 1, r.out
    bodies = server.bodies()
    assert [list(b) for b in bodies] == [["text"]] * 3, bodies
    started, failed, finished = (b["text"] for b in bodies)
    assert started.startswith(":arrow_forward: flow `mixed` (run ")
    assert failed == ":x: task `bad` failed: exit code 3 (log: " + failed.split("(log: ")[1]
    assert finished.startswith(":x: flow `mixed`") and "failed in" in finished
    assert finished.endswith(": 1 done, 1 failed"), finished
    # a Slack webhook's secret is its URL: no bearer token goes there
    assert all("Authorization" not in r.headers for r in server.requests)
    assert "notifications:" not in r.out  # nothing lost, not verbose: nothing to say


def test_https_endpoint(tmp_path: Path, python_bin: Path) -> None:
    """https with the default SSL context: the test's certificate is made trusted."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Server(tls=tls)
    try:
        write(tmp_path / "flows.py", MIXED)
        r = run_cli(
            tmp_path,
            python_bin,
            "flows.py",
            "mixed",
            "--plain",
            "-k",
            "--notify",
            server.url,
            env={"SSL_CERT_FILE": str(cert)},
        )
        assert r.returncode == 1, r.out
        assert server.events() == ["run-started", "task-failed", "run-finished"], r.out
        # without trusting it, the certificate is refused: counted, not fatal
        r = run_cli(
            tmp_path, python_bin, "flows.py", "mixed", "--plain", "-k", "--notify", server.url
        )
        assert r.returncode == 1, r.out
        assert "notifications: 0 sent, 3 dropped/failed" in r.out, r.out
        assert "(last error: certificate verify failed: self-signed certificate)" in r.out, r.out
    finally:
        server.close()


CONFIGURED = r"""
import scriptflow_trio as sf

sf.init({{"notify": {notify!r}, "notify_every": 30, "notify_token_env": "CONF_TOKEN"}})


async def flow_one():
    await sf.Task(cmd=["python", "-c", "open('one.txt', 'w').write('1')"], outputs="one.txt",
                  name="one")
"""


def test_endpoints_from_the_flows_file_and_the_command_line(
    tmp_path: Path, python_bin: Path, server: Server
) -> None:
    other = Server()
    try:
        write(tmp_path / "flows.py", CONFIGURED.format(notify=server.url))  # a single string
        r = run_cli(
            tmp_path,
            python_bin,
            "flows.py",
            "one",
            "--plain",
            "--notify",
            f"slack:{other.url}",
            env={"CONF_TOKEN": "tok"},
        )
        assert r.returncode == 0, r.out
        assert server.events() == ["run-started", "run-finished"]
        assert server.bodies()[-1]["status"] == "succeeded"
        assert server.requests[0].headers["Authorization"] == "Bearer tok"
        assert len(other.bodies()) == 2 and ":white_check_mark:" in other.bodies()[1]["text"]
        assert other.bodies()[1]["text"].endswith(
            "succeeded in " + other.bodies()[1]["text"].split(" in ")[1]
        )
    finally:
        other.close()
    # --no-notify and --dry-run send nothing, even to the flows file's endpoints
    r = run_cli(tmp_path, python_bin, "flows.py", "one", "--plain", "-f", "*", "--no-notify")
    assert r.returncode == 0, r.out
    r = run_cli(tmp_path, python_bin, "flows.py", "one", "--plain", "-f", "*", "-n")
    assert r.returncode == 0, r.out
    assert len(server.requests) == 2


def test_no_notify_option_sends_nothing_and_makes_no_notifier(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_notifier(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Notifier was made though nobody asked for notifications")

    monkeypatch.setattr(_notify, "Notifier", no_notifier)
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "flows.py",
        MIXED.replace("sys.exit(3)", "sys.exit(0); ").replace('outputs="bad.txt"', "outputs=[]"),
    )
    assert _cli.main(["flows.py", "mixed", "--plain"]) == 0
    assert (tmp_path / "ok.txt").exists()
    assert server.requests == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--notify", "ftp://example.org/x"], "--notify: 'ftp://example.org/x' is not an http"),
        (["--notify", "hooks.example.org/x"], "--notify: 'hooks.example.org/x' is not an http"),
        (["--notify", "slack:hooks.slack.com/x"], "slack:https://hooks.slack.com/services/"),
        (
            ["--notify", "http://127.0.0.1:1/", "--notify-token-env", "UNSET_VAR_FOR_TEST"],
            "environment variable UNSET_VAR_FOR_TEST (--notify-token-env",
        ),
        (["--notify", "http://127.0.0.1:1/", "--notify-every", "0"], "--notify-every"),
    ],
)
def test_bad_notify_options(tmp_path: Path, python_bin: Path, args: list[str], says: str) -> None:
    write(tmp_path / "flows.py", MIXED)
    r = run_cli(tmp_path, python_bin, "flows.py", "mixed", *args)
    assert r.returncode == 2, r.out
    assert says in r.out, r.out
    assert not (tmp_path / "ok.txt").exists()
    assert TRACEBACK not in r.out


def test_bad_url_in_the_flows_file(tmp_path: Path, python_bin: Path) -> None:
    write(tmp_path / "flows.py", CONFIGURED.format(notify=["mailto:me@example.org"]))
    r = run_cli(tmp_path, python_bin, "flows.py", "one", env={"CONF_TOKEN": "x"})
    assert r.returncode == 2, r.out
    assert "sf.init 'notify': 'mailto:me@example.org' is not an http" in r.out, r.out
    assert TRACEBACK not in r.out


# -- the Notifier on trio's virtual clock -----------------------------------------------


class FakeSend:
    """Records what would be POSTed, when; ``delay`` makes it slow, ``fail`` makes it raise."""

    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.sent: list[tuple[float, str, dict[str, Any]]] = []

    async def __call__(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        await trio.sleep(self.delay)
        if self.fail:
            raise ConnectionRefusedError("refused")
        self.sent.append((trio.current_time(), endpoint.url, body))

    def kinds(self) -> list[str]:
        return [b["event"] for _, _, b in self.sent]

    def at(self, kind: str) -> list[float]:
        return [t for t, _, b in self.sent if b["event"] == kind]


URL = "http://hooks.example.org/h"


def started(t: float = 0.0) -> ev.RunStarted:
    return ev.RunStarted("r1", "big", t)


def attempt(i: int) -> ev.AttemptStarted:
    return ev.AttemptStarted(f"t{i}", f"k{i}", 1, "", "cmd", Path(f"log{i}"), "local", 0.0)


def finished(i: int, status: ev.Status = ev.Status.SUCCEEDED) -> ev.TaskFinished:
    return ev.TaskFinished(f"t{i}", f"k{i}", status, 1, 1.0, 0.0, "exit code 1")


async def test_progress_at_most_once_per_interval_and_only_on_change(autojump_clock) -> None:
    send = FakeSend()
    n = Notifier([URL], every=10, send=send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())
        n.on_event(ev.TasksSubmitted(6, 0.0))
        for i in range(6):
            n.on_event(attempt(i))
        for i in range(3):  # three finish within the first interval
            await trio.sleep(1)
            n.on_event(finished(i))
        await trio.sleep(31 - trio.current_time())  # nothing happens from 3 s to 31 s
        n.on_event(finished(3, ev.Status.SKIPPED))  # at 31 s: reported at 40 s
        await trio.sleep(15)
        n.on_event(ev.RunFinished("r1", "succeeded", 0.0, 45.0))
        await trio.sleep(100)  # no progress after the end
        nursery.cancel_scope.cancel()
    assert send.kinds() == ["run-started", "progress", "progress", "run-finished"]
    assert send.at("progress") == [10, 40]
    first, second = (b for _, _, b in send.sent if b["event"] == "progress")
    assert first["elapsed"] == 10 and second["elapsed"] == 40
    assert first["counts"] == {
        "done": 3,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
        "running": 3,
        "queued": 0,
        "retried": 0,
    }
    assert second["counts"]["skipped"] == 1 and second["counts"]["running"] == 2
    assert send.sent[-1][2]["duration"] == 45.0


async def test_many_failures_are_folded_into_progress(autojump_clock) -> None:
    send = FakeSend()
    n = Notifier([URL], every=10, max_failures=3, send=send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())
        n.on_event(ev.TasksSubmitted(9, 0.0))
        for i in range(5):  # five failures in the first interval: three listed
            n.on_event(finished(i, ev.Status.FAILED))
        await trio.sleep(11)
        for i in range(5, 9):  # four in the second: three listed, one left for the end
            n.on_event(finished(i, ev.Status.FAILED))
        n.on_event(ev.RunFinished("r1", "failed", 0.0, 11.0))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert send.kinds() == [
        "run-started",
        *["task-failed"] * 3,
        "progress",
        *["task-failed"] * 3,
        "run-finished",
    ]
    bodies = [b for _, _, b in send.sent]
    assert [b["task"] for b in bodies if b["event"] == "task-failed"] == [
        "t0",
        "t1",
        "t2",
        "t5",
        "t6",
        "t7",
    ]
    assert bodies[4]["unlisted_failures"] == 2 and bodies[4]["counts"]["failed"] == 5
    assert bodies[-1]["unlisted_failures"] == 1 and bodies[-1]["counts"]["failed"] == 9


async def test_a_slow_endpoint_drops_and_counts_and_the_flush_is_bounded(
    autojump_clock,
) -> None:
    slow, fast = FakeSend(delay=100), FakeSend()

    async def send(endpoint: Endpoint, body: dict[str, Any]) -> None:
        await (slow if "slow" in endpoint.url else fast)(endpoint, body)

    n = Notifier(
        ["http://slow.example.org/", URL],
        every=1,
        timeout=5,
        flush_timeout=3,
        queue_size=2,
        send=send,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())
        for i in range(8):  # a failure every 10 ms: the fast endpoint keeps up
            n.on_event(finished(i, ev.Status.FAILED))
            await trio.sleep(0.01)
        n.on_event(ev.RunFinished("r1", "failed", 0.0, 0.5))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
        t_cancel = trio.current_time()
    assert trio.current_time() - t_cancel == 3  # the flush deadline, not the endpoint
    # the fast endpoint got everything, in order
    assert fast.kinds() == ["run-started", *["task-failed"] * 8, "run-finished"]
    # the slow one: each POST given up after 5 s; the queue of 2 overflowed
    slow_stats, fast_stats = n.statistics()
    assert fast_stats.sent == 10 and fast_stats.failed == fast_stats.dropped == 0
    assert slow_stats.sent == 0
    assert slow_stats.failed == 1  # run-started, cut by the flush deadline
    assert slow_stats.dropped == 9  # 6 that did not fit, then the rest at the deadline
    assert slow_stats.endpoint == "http://slow.example.org/"


async def test_failures_of_send_are_counted_not_raised(autojump_clock) -> None:
    send = FakeSend(fail=True)
    n = Notifier([URL], send=send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())
        n.on_event(finished(1, ev.Status.FAILED))
        n.on_event(ev.RunFinished("r1", "failed", 0.0, 1.0))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    (stats,) = n.statistics()
    assert (stats.sent, stats.failed, stats.dropped) == (0, 3, 0)
    assert stats.last_error == "ConnectionRefusedError: refused"


async def test_queued_messages_are_sent_after_cancellation(autojump_clock) -> None:
    send = FakeSend(delay=1)
    n = Notifier([URL], every=1000, flush_timeout=5, send=send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())
        n.on_event(finished(1, ev.Status.FAILED))
        n.on_event(finished(2, ev.Status.FAILED))
        n.on_event(ev.RunFinished("r1", "cancelled", 0.0, 0.1))
        nursery.cancel_scope.cancel()  # at once, as the CLI does after Ctrl-C
    assert send.kinds() == ["run-started", "task-failed", "task-failed", "run-finished"]
    assert send.sent[-1][2]["status"] == "cancelled" and send.sent[-1][2]["dropped"] == 0
    assert trio.current_time() == 4


async def test_a_newer_progress_replaces_a_waiting_one(autojump_clock) -> None:
    send = FakeSend(delay=25)
    n = Notifier([URL], every=10, timeout=30, send=send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.on_event(started())  # sending takes 0-25 s
        for i in range(3):  # a change in each interval: progress queued at 10 and 20
            await trio.sleep(9)
            n.on_event(finished(i))
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    # at 10 s a progress waits; at 20 s a newer one takes its place; sent 25-50
    assert send.kinds() == ["run-started", "progress", "progress"]
    assert [b["counts"]["done"] for _, _, b in send.sent[1:]] == [2, 3]


async def test_final_flush_against_a_silent_http_endpoint_is_bounded(hanging_url: str) -> None:
    """The real HTTP path, real clock: a POST nobody answers is given up at the deadline."""
    n = Notifier([hanging_url, closed_url()], timeout=2, flush_timeout=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(n.run)
            n.on_event(started())
            n.on_event(ev.RunFinished("r1", "succeeded", 0.0, 0.1))
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
            t0 = trio.current_time()
        took = trio.current_time() - t0
    assert took < 1.5, took
    hanging, closed = n.statistics()
    assert hanging.sent == 0 and hanging.failed + hanging.dropped == 2
    assert (closed.sent, closed.failed, closed.last_error) == (0, 2, "connection refused")


def test_endpoint_parsing_and_what_is_shown() -> None:
    e = Endpoint.parse("https://user:pw@example.org:8443/hook?key=abc", token="t")
    assert (e.format, e.token) == ("json", "t")
    assert e.shown == "https://example.org:8443/hook"  # no user info, no query
    assert "token" not in repr(e)
    s = Endpoint.parse("slack:https://hooks.slack.com/services/T0/B0/XYZ", token="t")
    assert (s.format, s.token, s.url) == (
        "slack",
        None,
        "https://hooks.slack.com/services/T0/B0/XYZ",
    )
    assert s.shown == "slack:https://hooks.slack.com/..."
    for bad in ("ftp://x/y", "https://", "example.org", "http://x:port/", ""):
        with pytest.raises(ValueError, match="is not an http"):
            Endpoint.parse(bad)
