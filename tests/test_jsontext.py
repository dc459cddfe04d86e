"""The kept C encoder writes what json.dumps writes: task keys and records depend on it."""

from __future__ import annotations

import json
import math

import pytest

from scriptflow_trio._jsontext import dumps

VALUES = [
    None,
    "plain",
    'é ü \u2603 \U0001f600 "quoted" back\\slash \n\t\x00',
    0,
    -(1 << 62),
    1 << 70,
    1.5,
    1764640000.1234567,
    1e-300,
    math.inf,
    math.nan,
    True,
    [],
    {},
    [("touch", "out/1.txt"), False, [], [[None, ["out/1.txt"]]], None, None, [["A", "1"]]],
    {"run_id": "r", "attempt": 1, "outputs": [{"path": "o", "size": 5, "mtime_ns": 1 << 60}]},
    {1: "int key", "n": {"deep": [[[{"x": 1.0}]]]}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_it_writes_what_json_dumps_writes(value: object) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_what_json_cannot_write_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})


def test_task_keys_are_those_earlier_versions_stored() -> None:
    # a key is how the store knows a task from one run to the next: a change of the
    # encoding would make every recorded task a stranger
    import scriptflow_trio as sf

    task = sf.Task(
        cmd="touch out/1.txt",
        outputs={"a": "out/1.txt", None: ["x.log"]},
        inputs=["a.csv", sf.glob("b/*.csv")],
        env={"B": "2", "A": "é"},
        cwd="sub",
        result="r.json",
    )
    assert task.key == "e343373fb7ab50251c76904c675df95b"
    assert sf.Task(cmd='sh -c "echo hi > o"', shell=True, outputs="o").key == (
        "1dc2d4ef3114d266fd283c150c965c0b"
    )
