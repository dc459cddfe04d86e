"""report and dag: the HTML report of a real run, its task graph, and the page in Chromium.

A module fixture runs a flow twice with the real command line: the second run (named
``second``) has tasks that succeed, one that fails once and then succeeds on its retry,
one that fails (``-k`` lets the others finish), and tasks skipped as up to date. Then
``report`` writes its HTML. Chromium (headless; CI installs Debian's ``chromium``) takes
a screenshot of it and renders its DOM through a proxy that records any connection.
The layout and grouping of graphs, and escaping, are tested on synthetic records.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from scriptflow_trio._graph import (
    Graph,
    Node,
    collapse,
    graph_of,
    layer_rows,
    layers,
    mermaid_ids,
    to_dot,
    to_mermaid,
)
from scriptflow_trio._records import (
    AttemptRecord,
    AttemptStatus,
    RunRecord,
    RunStatus,
    TaskOutcome,
)
from scriptflow_trio._report import MAX_BARS, build_report, read_tail
from scriptflow_trio._store import Store

FLOWS = r"""
import sys
import scriptflow_trio as sf

PY = sys.executable

# fails the first time it runs for a marker file (which it then creates), then succeeds
FLAKY = (
    "import os, sys; m = sys.argv[1]; first = not os.path.exists(m); open(m, 'w').close(); "
    "print('FLAKY-TRY', 'first' if first else 'again'); "
    "sys.exit(1) if first else open(sys.argv[2], 'w').write('ok')"
)
BROKEN = "for i in range(40): print(f'BROKEN-LINE-{i}')\nraise SystemExit(3)"


def py(code, **kw):
    return sf.Task(cmd=[PY, "-c", code], **kw)


async def flow_demo(round: int = 1):
    solves = [
        py(f"import time; time.sleep(0.2); open('test_{i}.txt', 'w').write('5')",
           outputs=f"test_{i}.txt", name=f"solve-{i}")
        for i in (1, 2, 3)
    ]
    await sf.bag(*solves)
    final = py("open('final.txt', 'w').write('15')", name="final", outputs="final.txt",
               inputs=[o for t in solves for o in t.get_outputs()])

    async def summing():
        await final  # done before `after` is even created: still an edge
        await sf.Task(cmd=["cp", "final.txt", "after.txt"], inputs="final.txt",
                      outputs="after.txt", name="after")

    async def flaky():
        await sf.Task(cmd=[PY, "-c", FLAKY, f"marker-{round}", "flaky.txt"], name="flaky",
                      outputs="flaky.txt", retry=1)
        await sf.Task(cmd=["cp", "flaky.txt", "flaky-copy.txt"], inputs="flaky.txt",
                      outputs="flaky-copy.txt", name="use-flaky")

    work = [
        py(f"import time; time.sleep({0.15 + 0.1 * i}); open('w{round}-{i}.txt', 'w')",
           outputs=f"w{round}-{i}.txt", name=f"work-{i}")
        for i in (1, 2, 3, 4)
    ]
    broken = py(BROKEN, name="broken", outputs="never.txt")
    await sf.bag(summing(), flaky(), broken, *work)


async def flow_slow():
    await sf.bag(
        py("open('quick.txt', 'w')", name="quick", outputs="quick.txt"),
        py("import time; time.sleep(60)", name="slow", outputs="slow.txt"),
    )
"""

SECOND_TASKS = {
    "solve-1": "skipped",
    "solve-2": "skipped",
    "solve-3": "skipped",
    "final": "skipped",
    "after": "skipped",
    "flaky": "succeeded",
    "use-flaky": "succeeded",
    "broken": "failed",
    "work-1": "succeeded",
    "work-2": "succeeded",
    "work-3": "succeeded",
    "work-4": "succeeded",
}
EDGES = {
    ("solve-1", "final"),
    ("solve-2", "final"),
    ("solve-3", "final"),
    ("final", "after"),
    ("flaky", "use-flaky"),
}


@attrs.frozen
class Result:
    returncode: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err


def sf(cwd: Path, *args: str, timeout: float = 60) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "scriptflow_trio", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="1000"),
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS).lstrip())
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo flow run twice; the second run (``second``) is the one reported."""
    folder = project(tmp_path_factory.mktemp("report") / "base")
    r = sf(folder, "flows.py", "demo", "round=1", "-k", "--plain")
    assert r.returncode == 1, r.all
    r = sf(folder, "flows.py", "demo", "round=2", "-k", "--plain", "--run-name", "second")
    assert r.returncode == 1, r.all
    r = sf(folder, "report", "second", "-o", "report.html")
    assert r.returncode == 0, r.all
    assert r.out.strip() == "report: report.html"
    return folder


@pytest.fixture(scope="module")
def page(base: Path) -> str:
    return (base / "report.html").read_text()


def table_data(page: str) -> dict:
    """The JSON blob the table is rendered from."""
    found = re.search(r'<script type="application/json" id="sf-data">(.*?)</script>', page, re.S)
    assert found, "no table data in the page"
    data: dict = json.loads(found.group(1))
    return data


def rows_by_name(data: dict) -> dict[str, dict]:
    names = [c[0] for c in data["columns"]]
    out = {}
    for row in data["rows"]:
        cells = dict(zip(["name", "status", "attempts", "duration", "exit"], row, strict=False))
        cells["status"] = data["statuses"][row[1]]
        cells["tails"] = data["tails"][row[12]] if row[12] >= 0 else []
        cells["columns"] = names
        out[row[0]] = cells
    return out


# -- the report of a real run ----------------------------------------------------------


def test_report_summary(page: str) -> None:
    head = page[: page.index('id="timeline"')]
    assert "demo" in head and "second" in head and "round=2" in head
    assert 'class="badge st-failed"' in head
    assert "<b>6</b> succeeded" in head  # flaky, use-flaky, work-1..4
    assert "<b>1</b> failed" in head and "<b>5</b> skipped" in head
    assert "<b>12</b> tasks" in head
    assert "8 (1 task retried)" in head
    assert "duration" in head and "started" in head


def test_report_table_has_every_task_attempts_and_failed_log_tails(page: str) -> None:
    data = table_data(page)
    rows = rows_by_name(data)
    assert {name: row["status"] for name, row in rows.items()} == SECOND_TASKS
    assert rows["flaky"]["attempts"] == 2
    assert rows["broken"]["exit"] == 3 and rows["broken"]["attempts"] == 1
    for column in ("status", "attempts", "duration", "exit", "executor", "log"):
        assert column in rows["broken"]["columns"]
    # the failed attempt of the retried task keeps its tail too
    (flaky_tail,) = rows["flaky"]["tails"]
    assert flaky_tail[0] == 1 and "FLAKY-TRY first" in flaky_tail[4]
    (tail,) = rows["broken"]["tails"]
    lines = tail[4].splitlines()
    assert lines[-1] == "BROKEN-LINE-39" and lines[0] == "BROKEN-LINE-20" and len(lines) == 20
    # a run with one failed task opens its log tail
    assert data["open"] == [data["rows"].index(next(r for r in data["rows"] if r[0] == "broken"))]


def test_report_timeline_has_one_bar_per_attempt(page: str) -> None:
    start = page.index('id="timeline"')
    timeline = page[start : page.index("</section>", start)]
    assert '<svg class="timeline"' in timeline
    bars = re.findall(r'<g class="bar bar-(\w+)"><title>([^<]*)</title>', timeline)
    assert len(bars) == 8  # flaky twice, use-flaky, broken, work-1..4
    assert sorted(cls for cls, _ in bars) == ["failed", "retried"] + ["succeeded"] * 6
    tips = [tip for _, tip in bars]
    assert any(t.startswith("flaky — attempt 1 of 2: failed") for t in tips)
    assert any(t.startswith("flaky — attempt 2 of 2: succeeded") for t in tips)
    assert any("broken" in t and "exit code 3" in t for t in tips)
    # the skipped tasks apart, not as bars
    assert "<b>5</b> skipped tasks" in timeline
    assert "solve-1, solve-2, solve-3" in timeline.replace("after, final, ", "")


def test_report_draws_the_graph(page: str) -> None:
    start = page.index('id="graph"')
    graph = page[start : page.index("</section>", start)]
    assert '<svg class="dag"' in graph
    assert graph.count('class="edge"') == len(EDGES)
    assert "12 tasks, 5 edges" in graph


def test_report_is_self_contained(page: str) -> None:
    """No resource outside the file: nothing fetched by src, href, url() or @import."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    refs += re.findall(r"url\(\s*['\"]?([^'\")]+)", page, re.I)
    external = [r for r in refs if re.match(r"([a-z][a-z0-9+.-]*:|//)", r, re.I)]
    assert external == [], external
    assert "@import" not in page
    assert not re.search(r"<(link|iframe|img|object|embed)\b", page, re.I)
    assert "default-src 'none'" in page  # and the page forbids itself any fetch


def dag_edges(text: str) -> set[tuple[str, str]]:
    labels = dict(re.findall(r'^\s+"(\w+)" \[label="([^"]*)"', text, re.M))
    pairs = re.findall(r'^\s+"(\w+)" -> "(\w+)";', text, re.M)
    return {(labels[a], labels[b]) for a, b in pairs}


def test_dag_prints_dot_with_the_edges_it_saw(base: Path) -> None:
    r = sf(base, "dag", "second")
    assert r.returncode == 0, r.all
    assert r.out.startswith('digraph "') and r.out.rstrip().endswith("}")
    assert dag_edges(r.out) == EDGES
    labels = re.findall(r'\[label="([^"]*)"', r.out)
    assert sorted(labels) == sorted(SECOND_TASKS)
    # the first run had the same edges, final -> after included (awaited one after other)
    r = sf(base, "dag", "--state-dir", ".scriptflow", run_ids(base)[-1])
    assert dag_edges(r.out) == EDGES


def test_dag_mermaid_and_to_a_file(base: Path) -> None:
    r = sf(base, "dag", "--format", "mermaid", "-o", "graph.mmd")
    assert r.returncode == 0, r.all
    text = (base / "graph.mmd").read_text()
    assert text.startswith("flowchart LR\n")
    labels = dict(re.findall(r'^\s+(t\w+)\["([^"]*)"\]$', text, re.M))
    pairs = re.findall(r"^\s+(t\w+) --> (t\w+)$", text, re.M)
    assert {(labels[a], labels[b]) for a, b in pairs} == EDGES
    assert "class " in text and "classDef failed" in text


def test_dag_group_collapses_numbered_tasks(base: Path) -> None:
    r = sf(base, "dag", "second", "--group")
    assert r.returncode == 0, r.all
    assert dag_edges(r.out) == {
        ("solve-* ×3", "final"),
        ("final", "after"),
        ("flaky", "use-flaky"),
    }


def run_ids(folder: Path) -> list[str]:
    """Run ids, newest first."""
    r = sf(folder, "runs")
    return [line.split()[0] for line in r.out.splitlines()[1:] if line.strip()]


def test_report_and_dag_errors(base: Path, tmp_path: Path) -> None:
    r = sf(base, "report", "nosuchrun", "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "no run matches 'nosuchrun'" in r.err
    r = sf(base, "report", "-o", str(tmp_path / "missing" / "x.html"))
    assert r.returncode == 2 and "cannot write" in r.err and "Traceback" not in r.all
    r = sf(tmp_path, "dag")
    assert r.returncode == 2 and "there is no store" in r.err
    r = sf(base, "dag", "--format", "svg")
    assert r.returncode == 2 and "invalid choice" in r.err


def test_report_links_logs_relative_to_the_report(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "r.html"
    out.parent.mkdir()
    r = sf(base, "-C", str(base), "report", "-o", str(out))
    assert r.returncode == 0, r.all
    data = table_data(out.read_text())
    prefix = data["logPrefix"]
    row = next(r for r in data["rows"] if r[0] == "broken")
    log = (out.parent / prefix / data["logdirs"][row[10]] / row[11]).resolve()
    assert log.is_file() and "BROKEN-LINE-39" in log.read_text()


def test_run_option_writes_the_report_after_a_failure(base: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(base, tmp_path / "copy", symlinks=True))
    r = sf(folder, "flows.py", "demo", "round=3", "-k", "--plain", "--report", "run.html")
    assert r.returncode == 1, r.all
    assert r.out.rstrip().endswith("report: run.html")
    newest = run_ids(folder)[0]
    page = (folder / "run.html").read_text()
    assert newest in page
    assert rows_by_name(table_data(page))["broken"]["status"] == "failed"
    r = sf(folder, "flows.py", "demo", "round=3", "-n", "--report", "dry.html")
    assert r.returncode == 0 and "no report: a dry run records nothing" in r.err
    assert not (folder / "dry.html").exists()
    r = sf(folder, "flows.py", "demo", "round=4", "-k", "--report", "nodir/r.html")
    assert r.returncode == 1  # the run's own exit code; the report's trouble is said
    assert "cannot write the report nodir/r.html" in r.err and "Traceback" not in r.all


def test_run_option_writes_the_report_after_ctrl_c(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scriptflow_trio",
            "flows.py",
            "slow",
            "--plain",
            "--report",
            "r.html",
        ],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        seen = ""
        while "start   slow" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "start   slow" in seen, seen
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + out + err
    assert "report: r.html" in out
    rows = rows_by_name(table_data((folder / "r.html").read_text()))
    assert rows["slow"]["status"] == "cancelled"
    assert rows["quick"]["status"] == "succeeded"


# -- Chromium: the screenshot, the rendered table, and no network --------------------

# Chromium's own background services (updates, network time) may go online whatever
# the page does; only the page's requests count, as DevTools reports them for its tab.
# A proxy that is not there keeps any request on this machine.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--window-size=1400,2000",
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "Chromium is not installed (CI installs Debian's `chromium` package in .ci/run): "
        "the report is not checked in a browser"
    )


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium with ``extra`` flags (--screenshot, --dump-dom)."""
    argv = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
    )


class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fds 3 and 4, JSON + NUL).

    Enough of the DevTools protocol to open a tab, watch its network requests and
    script errors, and evaluate expressions in it.
    """

    def __init__(self, profile: Path) -> None:
        binary = chromium()
        child_in, self._out = os.pipe()  # the lowest free fds: 3 and 4 exist from here on
        self._in, child_out = os.pipe()

        def to_fds_3_and_4() -> None:
            a, b = os.dup(child_in), os.dup(child_out)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=to_fds_3_and_4,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = ""

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self._id += 1
        message: dict = {"id": self._id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.read(deadline - time.monotonic())
            assert reply is not None, f"Chromium did not answer {method}"
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                result: dict = reply["result"]
                return result

    def read(self, timeout: float) -> dict | None:
        """The next message (events are kept in ``events``), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                return None
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def open(self, url: str) -> None:
        """A new tab, watched (network, scripts), at ``url``; returns once it loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Network", "Page", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 30
        while not self.seen("Page.loadEventFired"):
            assert self.read(deadline - time.monotonic()) is not None, "the page did not load"
        self.settle()

    def settle(self, quiet: float = 0.5) -> None:
        while self.read(quiet) is not None:
            pass

    def seen(self, method: str) -> list[dict]:
        return [
            e for e in self.events if e["method"] == method and e.get("sessionId") == self.session
        ]

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.seen("Network.requestWillBeSent")]

    def evaluate(self, expression: str) -> object:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def close(self) -> None:
        try:
            os.write(self._out, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


@pytest.fixture
def devtools(tmp_path: Path) -> Iterator[DevTools]:
    browser = DevTools(tmp_path / "devtools-profile")
    try:
        yield browser
    finally:
        browser.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_scanlines(path: Path) -> bytes:
    """The PNG's decompressed scanlines (filter bytes included): enough to tell blank."""
    data = path.read_bytes()
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


PROBE = """<script>
(function () {
  function top(sel) {
    var e = document.querySelector(sel);
    return e ? Math.round(e.getBoundingClientRect().top) : -1;
  }
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    timeline: top("svg.timeline"), table: top("#sf-table tbody tr"),
    rows: document.querySelectorAll("#sf-table tbody tr[data-key]").length});
  document.body.appendChild(out);
})();
</script></body>"""


def test_chromium_screenshot_shows_timeline_and_table(base: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    r = browse(base / "report.html", tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), r.stderr[-3000:]
    assert png_size(shot) == (1400, 2000)
    # a blank page's screenshot for comparison: the report's holds far more
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!doctype html><title>blank</title>")
    blank = tmp_path / "blank.png"
    browse(blank_page, tmp_path / "profile", f"--screenshot={blank}")
    assert shot.stat().st_size > 8 * blank.stat().st_size
    assert len(set(png_scanlines(shot))) > 50 > len(set(png_scanlines(blank)))
    # its script rendered the table, and both sections are in that first screen
    probe = tmp_path / "probe.html"
    probe.write_text((base / "report.html").read_text().replace("</body>", PROBE))
    r = browse(probe, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout)
    assert found, r.stdout[-2000:] + r.stderr[-2000:]
    where = json.loads(found.group(1))
    assert where["rows"] == len(SECOND_TASKS)
    assert 0 < where["timeline"] < where["table"] < 2000 - 300, where
    assert "BROKEN-LINE-39" in r.stdout  # the failed task's log tail is open
    keep = os.environ.get("SF_REPORT_SCREENSHOT")
    if keep:  # to look at it: SF_REPORT_SCREENSHOT=/some/where.png pytest ...
        shutil.copy(shot, keep)


def test_chromium_page_makes_no_network_request(base: Path, devtools: DevTools) -> None:
    devtools.open((base / "report.html").as_uri())
    assert devtools.evaluate("document.querySelectorAll('#sf-table tr[data-key]').length") == 12
    # sort by a column twice, filter, show a log tail: the script works and fetches nothing
    devtools.evaluate("document.querySelector('th[data-col=\"duration\"]').click()")
    first = devtools.evaluate("document.querySelector('#sf-table tr[data-key] td').textContent")
    store = Store.open(base / ".scriptflow")
    run = store.find_run("second")
    assert run is not None
    longest = max(store.outcomes(run.run_id), key=lambda o: o.duration)
    store.close()
    assert first == longest.name  # the longest first
    devtools.evaluate(
        "var f = document.getElementById('sf-filter'); f.value = 'WORK';"
        "f.dispatchEvent(new Event('input'))"
    )
    assert devtools.evaluate("document.querySelectorAll('#sf-table tr[data-key]').length") == 4
    devtools.settle()
    assert devtools.seen("Runtime.exceptionThrown") == []
    assert devtools.requests() == [(base / "report.html").as_uri()]


def test_chromium_watch_sees_a_page_that_fetches(tmp_path: Path, devtools: DevTools) -> None:
    """The control: the same watch does see a page's requests, plain and TLS."""
    page = tmp_path / "fetch.html"
    page.write_text(
        '<!doctype html><img src="http://example.invalid/pixel.png">'
        '<script>fetch("https://cdn.example.invalid/lib.js").catch(function () {})</script>'
    )
    devtools.open(page.as_uri())
    assert sorted(devtools.requests()) == sorted(
        [page.as_uri(), "http://example.invalid/pixel.png", "https://cdn.example.invalid/lib.js"]
    )


# -- synthetic records: layout, grouping, escaping, size --------------------------------

T0 = 1_700_000_000.0


def key(i: int) -> str:
    return f"{i:032x}"


def outcome(
    k: str, name: str, status: str = "succeeded", after: tuple[str, ...] = ()
) -> TaskOutcome:
    return TaskOutcome("r1", k, name, status, 0 if status == "skipped" else 1, 1.0, T0, after)


def attempt(
    k: str,
    name: str,
    n: int = 1,
    *,
    start: float = 0,
    length: float = 1,
    status: AttemptStatus = AttemptStatus.SUCCEEDED,
    code: int | None = 0,
    log: str = "",
) -> AttemptRecord:
    return AttemptRecord(
        "r1",
        k,
        name,
        n,
        "cmd",
        "local",
        T0 + start,
        status,
        log,
        "",
        "h",
        T0 + start + length,
        code,
        "" if code == 0 else f"exit code {code}",
        cpu_seconds=0.5,
        max_rss=10 << 20,
    )


def run_record(**kw: object) -> RunRecord:
    fields: dict = dict(run_id="r1", flow="f", started=T0, status=RunStatus.FAILED, ended=T0 + 100)
    fields.update(kw)
    return RunRecord(**fields)


def simple(nodes: str, edges: str) -> Graph:
    return Graph(
        tuple(Node(n, n, "succeeded") for n in nodes.split()),
        tuple(tuple(e.split(">")) for e in edges.split()),  # type: ignore[misc]
    )


def test_layers_longest_path_and_diamond() -> None:
    assert layers(simple("a b c d", "a>b a>c b>d c>d")) == [["a"], ["b", "c"], ["d"]]
    # c waits for b, which waits for a: c is two layers right of a, not one
    assert layers(simple("a b c", "a>b b>c a>c")) == [["a"], ["b"], ["c"]]
    assert layers(simple("x y", "")) == [["x", "y"]]


def test_layers_order_uncrosses_edges() -> None:
    got = layers(simple("a1 a2 b2 b1", "a1>b1 a2>b2"))
    assert got == [["a1", "a2"], ["b1", "b2"]]


def test_layer_rows_put_consumers_beside_their_producers() -> None:
    graph = simple("s0 s1 s2 s3 c1 c2", "s0>c1 s1>c1 s2>c2 s3>c2")
    assert layer_rows(graph, layers(graph)) == {
        "s0": 0,
        "s1": 1,
        "s2": 2,
        "s3": 3,
        "c1": 0.5,
        "c2": 2.5,
    }
    # two consumers of one producer: one row apart, neither above the top
    graph = simple("s a b", "s>a s>b")
    got = layer_rows(graph, layers(graph))
    assert got["s"] == 0 and sorted([got["a"], got["b"]]) == [0, 1]


def test_layers_survive_a_cycle() -> None:
    got = layers(simple("a b c", "a>b b>a b>c"))
    assert sorted(n for layer in got for n in layer) == ["a", "b", "c"]


def test_collapse_groups_numbered_tasks() -> None:
    outcomes = []
    for j in range(10):
        feeds = []
        for i in range(100):
            k = key(j * 100 + i + 1)
            outcomes.append(outcome(k, f"solve-{j}-{i}", "failed" if i == 7 else "succeeded"))
            feeds.append(k)
        outcomes.append(outcome(key(5000 + j), f"combine-{j}", after=tuple(feeds)))
    chain = [key(9000 + i) for i in range(3)]
    for i, k in enumerate(chain):
        outcomes.append(outcome(k, f"link-{i}", after=(chain[i - 1],) if i else ()))
    outcomes.append(outcome(key(9999), "final", after=tuple(key(5000 + j) for j in range(10))))
    graph = graph_of(outcomes)
    assert len(graph.nodes) == 1014 and len(graph.edges) == 1000 + 10 + 2
    grouped = collapse(graph)
    by_name = {n.name: n for n in grouped.nodes}
    assert set(by_name) == {"solve-*-*", "combine-*", "link-*", "final"}
    assert by_name["solve-*-*"].count == 1000
    assert by_name["solve-*-*"].status == "failed"  # the worst of its members
    assert dict(by_name["solve-*-*"].statuses) == {"failed": 10, "succeeded": 990}
    ids = {n.name: n.id for n in grouped.nodes}
    assert set(grouped.edges) == {
        (ids["solve-*-*"], ids["combine-*"]),
        (ids["combine-*"], ids["final"]),
    }
    # the report draws the grouped graph, and says so
    page = build_report(run_record(), outcomes, [])
    graph_html = page[page.index('id="graph"') :]
    assert "1014 tasks, drawn as 4 groups" in graph_html
    assert graph_html.count('<g class="node') == 4


def test_report_caps_the_timeline_and_stays_small() -> None:
    n = 20_000
    outcomes, attempts = [], []
    for i in range(n):
        k = key(i + 1)
        failed = i % 1000 == 0
        outcomes.append(outcome(k, f"solve-{i}", "failed" if failed else "succeeded"))
        attempts.append(
            attempt(
                k,
                f"solve-{i}",
                start=i * 0.01,
                length=5 + i % 7,
                status=AttemptStatus.FAILED if failed else AttemptStatus.SUCCEEDED,
                code=1 if failed else 0,
                log=f".scriptflow/logs/r1/solve-{i}.1.log",
            )
        )
    started = time.perf_counter()
    page = build_report(run_record(), outcomes, attempts)
    assert time.perf_counter() - started < 30
    assert page.count('<g class="bar ') == MAX_BARS
    assert page.count('<g class="bar bar-failed"') == 20  # every failure is drawn
    assert f"shows {MAX_BARS} of the {n} attempts" in page
    assert len(page) < 4_000_000
    assert len(table_data(page)["rows"]) == n


def test_escaping_of_names_commands_and_log_lines() -> None:
    evil = "<script>alert(1)</script>"
    quoted = "a\"b'c&d"
    k1, k2 = key(1), key(2)
    outcomes = [outcome(k1, evil, "failed"), outcome(k2, quoted, after=(k1,))]
    attempts = [
        attempt(k1, evil, status=AttemptStatus.FAILED, code=1, log="logs/x.log"),
        attempt(k2, quoted),
    ]
    tail = "</script><script>alert(2)</script><!-- \u2028"
    page = build_report(
        run_record(flow=evil, name=quoted, arguments={"x": evil}),
        outcomes,
        attempts,
        tails={(k1, 1): tail},
    )
    assert "alert" in page
    assert "<script>alert" not in page and "</script><script>" not in page
    assert page.count("<script") == 2  # the table's data and the page's script
    assert "<!--" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # title, summary, bars, graph
    data = table_data(page)
    names = {r[0] for r in data["rows"]}
    assert names == {evil, quoted}
    assert data["tails"][0][0][4] == tail
    dot = to_dot(graph_of(outcomes))
    assert '"a\\"b\'c&d"' in dot and f'"{evil}"' in dot
    mermaid = to_mermaid(graph_of(outcomes))
    assert "#lt;script#gt;alert(1)#lt;/script#gt;" in mermaid and "a#quot;b'c&d" in mermaid
    assert "<" not in mermaid


def test_mermaid_ids_are_short_unique_and_plain() -> None:
    keys = ["abcdef01" + "0" * 24, "abcdef01" + "1" * 24, "12345678" + "0" * 24]
    graph = Graph(tuple(Node(k, k, "succeeded") for k in keys), ())
    ids = mermaid_ids(graph)
    assert len(set(ids.values())) == 3
    assert all(re.fullmatch(r"t[0-9a-f]+", i) and len(i) <= 33 for i in ids.values())


def test_read_tail_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "x" * 1000)
    tail = read_tail(log, 3).splitlines()
    assert tail[:2] == ["line 98", "line 99"] and tail[2].endswith("…")
    assert "no longer on disk" in read_tail(tmp_path / "gone.log")


def test_report_of_an_empty_run_and_of_a_run_cut_short() -> None:
    page = build_report(run_record(status=RunStatus.SUCCEEDED), [], [])
    assert "no attempt ran in this run" in page and "no task was recorded" in page
    assert table_data(page)["rows"] == []
    # the engine died: its attempt with no end is interrupted, and drawn to the last end
    k1, k2 = key(1), key(2)
    attempts = [
        attempt(k1, "done", length=5),
        attrs.evolve(attempt(k2, "cut", start=1), status=AttemptStatus.RUNNING, ended=None),
    ]
    died = run_record(status=RunStatus.RUNNING, ended=None)
    page = build_report(died, [outcome(k1, "done")], attempts, status="died")
    assert 'class="badge st-died"' in page
    assert '<g class="bar bar-interrupted"><title>cut — attempt 1 of 1: interrupted' in page
    assert rows_by_name(table_data(page))["cut"]["status"] == "interrupted"
    # the same run seen while it goes on: running, drawn up to now
    page = build_report(died, [outcome(k1, "done")], attempts, status="running", generated=T0 + 50)
    assert '<g class="bar bar-running">' in page and "still running" in page


def test_report_graph_too_big_even_grouped_is_not_drawn() -> None:
    names = [f"task-{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(300)]
    outcomes = [outcome(key(i + 1), name) for i, name in enumerate(names)]
    page = build_report(run_record(), outcomes, [])
    graph_html = page[page.index('id="graph"') :]
    assert '<svg class="dag"' not in graph_html
    assert "300 tasks in 300 name groups: too many to draw" in graph_html
