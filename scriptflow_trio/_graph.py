"""A run's task graph: the edges the engine saw, laid out in layers, as dot or Mermaid.

A task's outcome records the keys of the tasks of the same run that made its inputs
(``TaskOutcome.after``); those are the edges, producer -> consumer. This module builds
the graph from the store's records, groups tasks by name pattern when there are too
many to draw (``solve-1`` .. ``solve-100`` -> ``solve-*``), computes a layered layout
for the HTML report (no Graphviz needed where the report is opened), and writes the
graph as Graphviz dot or as a Mermaid flowchart for the ``dag`` command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from ._records import AttemptRecord, AttemptStatus, TaskOutcome

# how bad a status is, worst first: a group of tasks shows the worst of its members
STATUS_RANK = ("failed", "cancelled", "interrupted", "died", "running", "succeeded", "skipped")

_COLOURS = {  # fill, border: the same palette as the report's
    "succeeded": ("#d4f1dc", "#2e9e5b"),
    "skipped": ("#eceff3", "#9aa3ad"),
    "failed": ("#fbd9d6", "#d03b2f"),
    "cancelled": ("#fdebc8", "#d48a00"),
    "interrupted": ("#eadcf7", "#8a4fc7"),
    "running": ("#d7e8fb", "#2f74c0"),
}
_DIGITS = re.compile(r"\d+")


@attrs.frozen
class Node:
    """A task, or a group of tasks whose names differ only in their numbers."""

    id: str
    name: str
    status: str
    count: int = 1
    statuses: tuple[tuple[str, int], ...] = ()  # of a group: how many ended how

    @property
    def label(self) -> str:
        return f"{self.name} ×{self.count}" if self.count > 1 else self.name


@attrs.frozen
class Graph:
    """Nodes in a stable order and edges (producer id, consumer id), without duplicates."""

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]

    @property
    def grouped(self) -> bool:
        return any(n.count > 1 for n in self.nodes)


def worst(statuses: Iterable[str]) -> str:
    """The status that matters most among ``statuses`` (failed before succeeded ...)."""
    rank = {s: i for i, s in enumerate(STATUS_RANK)}
    return min(statuses, key=lambda s: rank.get(s, len(rank)), default="skipped")


def graph_of(outcomes: Sequence[TaskOutcome], attempts: Sequence[AttemptRecord] = ()) -> Graph:
    """The task graph of one run from its store records.

    A task with attempts but no outcome (the engine died, or is still running) is a node
    too, marked interrupted; it has no recorded edges of its own.
    """
    nodes: dict[str, Node] = {}
    for outcome in outcomes:
        nodes[outcome.key] = Node(outcome.key, outcome.name, outcome.status)
    for attempt in attempts:
        if attempt.key not in nodes:
            status = (
                "interrupted" if attempt.status is AttemptStatus.RUNNING else attempt.status.value
            )
            nodes[attempt.key] = Node(attempt.key, attempt.name, status)
    edges = dict.fromkeys(
        (producer, outcome.key)
        for outcome in outcomes
        for producer in outcome.after
        if producer in nodes and producer != outcome.key
    )
    return Graph(tuple(nodes.values()), tuple(edges))


def name_pattern(name: str) -> str:
    """``solve-12`` -> ``solve-*``: the name with every run of digits replaced by ``*``."""
    return _DIGITS.sub("*", name)


def collapse(graph: Graph) -> Graph:
    """Group the tasks whose names differ only in their numbers into one node each.

    Edges between groups are kept once; edges inside a group (a chain ``link-1`` ->
    ``link-2``) are dropped. Groups take ids ``g0``, ``g1``... in order of appearance.
    """
    group_of: dict[str, str] = {}
    members: dict[str, list[Node]] = {}
    for node in graph.nodes:
        members.setdefault(name_pattern(node.name), []).append(node)
    nodes = []
    for i, (pattern, group) in enumerate(members.items()):
        gid = f"g{i}"
        for node in group:
            group_of[node.id] = gid
        counts: dict[str, int] = {}
        for node in group:
            counts[node.status] = counts.get(node.status, 0) + 1
        name = group[0].name if len(group) == 1 else pattern
        nodes.append(Node(gid, name, worst(counts), len(group), tuple(sorted(counts.items()))))
    edges = dict.fromkeys(
        (group_of[a], group_of[b]) for a, b in graph.edges if group_of[a] != group_of[b]
    )
    return Graph(tuple(nodes), tuple(edges))


def layers(graph: Graph) -> list[list[str]]:
    """Node ids in layers: each node one layer right of its furthest producer.

    Longest-path layering from the sources (Kahn's order). A cycle, which a run should
    not have, does not stop it: the nodes left on one are placed after their placed
    producers. Within a layer, nodes are ordered to cross fewer edges (barycentres,
    swept right then left a few times).
    """
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
        succs[a].append(b)
    level: dict[str, int] = {}
    waiting = {n: len(p) for n, p in preds.items()}
    ready = [n.id for n in graph.nodes if not preds[n.id]]
    while True:
        while ready:
            node = ready.pop()
            level[node] = max((level[p] + 1 for p in preds[node]), default=0)
            for s in succs[node]:
                waiting[s] -= 1
                if waiting[s] == 0:
                    ready.append(s)
        stuck = [n.id for n in graph.nodes if n.id not in level]
        if not stuck:
            break
        first = stuck[0]  # on a cycle: place it as if its unplaced producers did not exist
        level[first] = max((level[p] + 1 for p in preds[first] if p in level), default=0)
        for s in succs[first]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for n in graph.nodes:  # graph order: the order the tasks ended in
        out[level[n.id]].append(n.id)
    _order(out, preds, succs)
    return out


def _order(
    columns: list[list[str]], preds: dict[str, list[str]], succs: dict[str, list[str]]
) -> None:
    """Reorder each layer by the mean position of its neighbours in the layers done."""
    position = {n: i for column in columns for i, n in enumerate(column)}
    for sweep in range(4):
        forward = sweep % 2 == 0
        indices = range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1)
        for i in indices:
            column = columns[i]
            neighbours = preds if forward else succs

            def centre(node: str, neighbours: dict[str, list[str]] = neighbours) -> float:
                near = neighbours[node]
                if not near:
                    return float(position[node])
                return sum(position[m] for m in near) / len(near)

            column.sort(key=centre)
            for j, node in enumerate(column):
                position[node] = j


def layer_rows(graph: Graph, columns: Sequence[Sequence[str]]) -> dict[str, float]:
    """Where each node sits in its layer, in rows (0 at the top; at least 1 apart).

    The first layer is stacked; every later node goes to the mean row of its producers,
    then nodes are pushed apart in their order, down and, if that overflows, back up:
    a consumer sits beside what it consumes instead of at its layer's middle.
    """
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    tallest = max((len(c) for c in columns), default=0)
    row: dict[str, float] = {}
    for i, column in enumerate(columns):
        wanted = []
        for j, node in enumerate(column):
            placed = [row[p] for p in preds[node] if p in row]
            wanted.append(sum(placed) / len(placed) if i and placed else float(j))
        got = list(wanted)
        for j in range(1, len(got)):
            got[j] = max(got[j], got[j - 1] + 1)
        bottom = float(max(tallest, len(column)) - 1)
        for j in range(len(got) - 1, -1, -1):
            limit = bottom if j == len(got) - 1 else got[j + 1] - 1
            got[j] = max(min(got[j], limit), float(j))
        row.update(zip(column, got, strict=True))
    return row


# -- text forms -------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph, title: str = "run") -> str:
    """Graphviz dot: one node per task (label its name, filled by status), producer -> consumer."""
    lines = [
        f"digraph {_dot_string(title)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [color="#7b8794"];',
    ]
    for node in graph.nodes:
        fill, border = _COLOURS.get(node.status, _COLOURS["skipped"])
        lines.append(
            f"  {_dot_string(node.id)} [label={_dot_string(node.label)}, "
            f'fillcolor="{fill}", color="{border}", tooltip={_dot_string(node.status)}];'
        )
    for a, b in graph.edges:
        lines.append(f"  {_dot_string(a)} -> {_dot_string(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_label(text: str) -> str:
    """A label for ``id["..."]``: Mermaid's entity codes for what would end it or be markup."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return '"' + text.replace("\n", " ") + '"'


def mermaid_ids(graph: Graph) -> dict[str, str]:
    """Short ids Mermaid accepts: ``t`` + the shortest key prefix (8+ chars) that is unique."""
    ids: dict[str, str] = {}
    width = 8
    keys = [n.id for n in graph.nodes]
    while width < 64 and len({k[:width] for k in keys}) < len(keys):
        width *= 2
    for key in keys:
        short = re.sub(r"[^A-Za-z0-9_]", "_", key[:width])
        ids[key] = short if key.startswith("g") and short[1:].isdigit() else f"t{short}"
    return ids


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart LR``: short ids, task names as quoted labels, a class per status."""
    ids = mermaid_ids(graph)
    lines = ["flowchart LR"]
    for node in graph.nodes:
        lines.append(f"  {ids[node.id]}[{_mermaid_label(node.label)}]")
    for a, b in graph.edges:
        lines.append(f"  {ids[a]} --> {ids[b]}")
    by_status: dict[str, list[str]] = {}
    for node in graph.nodes:
        by_status.setdefault(node.status, []).append(ids[node.id])
    for status, members in by_status.items():
        fill, border = _COLOURS.get(status, _COLOURS["skipped"])
        lines.append(f"  classDef {status} fill:{fill},stroke:{border}")
        lines.append(f"  class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"
