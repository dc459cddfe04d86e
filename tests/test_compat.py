"""scriptflow 0.2.13 compatibility: its README flow file, and the Task helpers it offers.

The README's ``sflow.py`` runs with only its import line changed; its final task
imports ``sflow`` from a subprocess, so importing the flows file outside the engine
must be harmless.
"""

# ruff: noqa: E501  (the README's flow file is kept as it is written)
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import scriptflow_trio as sf

TRACEBACK = "Traceback (most recent call last)"

# scriptflow 0.2.13's README example; only the import and the sleep time are changed.
README_SFLOW = '''
import scriptflow_trio as sf

# set main options
sf.init({
    "executors":{
        "local": {
            "maxsize" : 5
        }
    },
    'debug':True
})

# example of a simple step that combines outcomes
def step2_combine_file():
    with open('test_1.txt') as f:
        a = int(f.readlines()[0])
    with open('test_2.txt') as f:
        b = int(f.readlines()[0])
    with open('final.txt','w') as f:
        f.write("{}\\n".format(a+b))

# define a flow called sleepit
async def flow_sleepit():

    i=1
    task1 = sf.Task(
      cmd    = f"""python -c "import time; time.sleep(0.2); open('test_{i}.txt','w').write('5');" """,
      outputs = f"test_{i}.txt",
      name   = f"solve-{i}")

    i=2
    task2 = sf.Task(
      cmd    = f"""python -c "import time; time.sleep(0.2); open('test_{i}.txt','w').write('5');" """,
      outputs = f"test_{i}.txt",
      name   = f"solve-{i}")

    await sf.bag(task1,task2)

    task_final = sf.Task(
      cmd = "python -c 'import sflow; sflow.step2_combine_file()'",
      outputs = f"final.txt",
      inputs = [*task1.get_outputs(),*task2.get_outputs()])

    await task_final
'''


@pytest.fixture(scope="session")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``python`` is this interpreter, so task commands find it."""
    folder = tmp_path_factory.mktemp("bin")
    # a script, not a symlink: a symlink to a virtual environment's python, outside
    # that environment, starts the base interpreter (without this one's packages)
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    return folder


def run(cwd: Path, python_bin: Path, *args: str, program: list[str] | None = None):
    env = dict(os.environ)
    env["PATH"] = f"{python_bin}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "1000"
    cmd = program or [sys.executable, "-m", "scriptflow_trio"]
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_readme_flow_runs_unchanged(tmp_path: Path, python_bin: Path) -> None:
    (tmp_path / "sflow.py").write_text(README_SFLOW)
    r = run(tmp_path, python_bin, "sflow.py", "sleepit")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert (tmp_path / "final.txt").read_text() == "10\n"
    assert (tmp_path / "test_1.txt").read_text() == "5"
    assert TRACEBACK not in out
    # debug=True in sf.init means verbose: the commands are shown
    assert "step2_combine_file" in out

    # a second run finds everything up to date
    before = (tmp_path / "final.txt").stat().st_mtime_ns
    r = run(tmp_path, python_bin, "sflow.py", "sleepit")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "final.txt").stat().st_mtime_ns == before
    assert "up to date" in r.stdout


def test_readme_flow_with_scriptflow_trio_run(tmp_path: Path, python_bin: Path) -> None:
    program = shutil.which("scriptflow-trio")
    if program is None:
        pytest.skip("scriptflow-trio is not on PATH")
    (tmp_path / "sflow.py").write_text(README_SFLOW)
    r = run(tmp_path, python_bin, "run", "sleepit", program=[program])
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "final.txt").read_text() == "10\n"


def test_importing_the_flows_file_elsewhere_is_harmless(tmp_path: Path, python_bin: Path) -> None:
    (tmp_path / "sflow.py").write_text(README_SFLOW)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sflow; print('imported', sorted(n for n in vars(sflow) "
            "if n.startswith(('flow_', 'step2'))))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "imported ['flow_sleepit', 'step2_combine_file']\n"
    assert r.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["sflow.py"]


def test_result_file_chaining(tmp_path: Path, python_bin: Path) -> None:
    (tmp_path / "sflow.py").write_text(
        textwrap.dedent("""
        import scriptflow_trio as sf

        async def flow_res():
            t = sf.Task(
                cmd=["python", "-c",
                     "import json; json.dump({'a': 1, 'b': [2, 3]}, open('r.json', 'w'))"],
                name="json-result",
            ).result("r.json")
            await t
            u = sf.Task(cmd=["python", "-c", "open('r.txt', 'w').write('hello\\\\n')"],
                        name="text-result").result("r.txt")
            await u
            open("got.txt", "w").write(repr((t.result, u.result, t.done, u.done)))
    """)
    )
    expected = repr(({"a": 1, "b": [2, 3]}, "hello", True, True))
    r = run(tmp_path, python_bin, "sflow.py", "res")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "got.txt").read_text() == expected
    # up to date: the results are read back from the files without running anything
    (tmp_path / "got.txt").unlink()
    r = run(tmp_path, python_bin, "sflow.py", "res")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "start" not in r.stdout
    assert (tmp_path / "got.txt").read_text() == expected


# -- Task helpers, in process ---------------------------------------------------------


def test_result_call_sets_the_file_and_returns_the_task() -> None:
    t = sf.Task(cmd="python -c pass", name="r")
    assert t.result("out.json") is t
    assert t.result_file == "out.json"
    assert "out.json" in t._checked_outputs()
    assert not t.done


def test_set_retry() -> None:
    t = sf.Task(cmd="python -c pass", name="r")
    assert t.retry == 0
    assert t.set_retry(3) is t
    assert t.retry == 3


def test_add_deps() -> None:
    producer = sf.Task(cmd="make a", outputs=["a.txt", "b.txt"], name="producer")
    t = sf.Task(cmd="python -c pass", inputs="x.txt", name="consumer")
    assert t.add_deps("y.txt") is t
    t.add_deps(["z1.txt", Path("z2.txt")])
    t.add_deps(producer)
    assert t.inputs == ["x.txt", "y.txt", "z1.txt", "z2.txt", "a.txt", "b.txt"]
    assert t.deps == t.inputs


def test_set_prop_get_prop() -> None:
    t = sf.Task(cmd="python -c pass", name="p")
    t.set_prop("sample", 7)
    t.set_prop("label", {"k": "v"})
    assert t.get_prop("sample") == 7
    assert t.get_prop("label") == {"k": "v"}
    with pytest.raises(KeyError):
        t.get_prop("absent")


def test_get_output_group_with_dict_outputs() -> None:
    t = sf.Task(
        cmd="python -c pass", name="g", outputs={"data": ["a.csv", "b.csv"], "log": "run.log"}
    )
    assert t.get_output_group("data") == ["a.csv", "b.csv"]
    assert t.get_output_group("log") == ["run.log"]
    assert t.get_outputs() == ["a.csv", "b.csv", "run.log"]
    consumer = sf.Task(cmd="python -c pass", name="c", inputs=t.get_output_group("data"))
    assert consumer.inputs == ["a.csv", "b.csv"]


def test_plain_outputs_and_default_name() -> None:
    t = sf.Task(cmd="python -c pass", outputs="final.txt")
    assert t.get_outputs() == ["final.txt"]
    assert t.name == "final.txt"  # the README's final task has no name


def test_ncore_alias() -> None:
    assert sf.Task(cmd="python -c pass", name="n", ncore=3).cores == 3
    assert sf.Task(cmd="python -c pass", name="n", ncore="2").cores == 2
    assert sf.Task(cmd="python -c pass", name="n").cores == 1
    assert sf.Task(cmd="python -c pass", name="n", cores=4).cores == 4


def test_uid_is_the_name() -> None:
    assert sf.Task(cmd="python -c pass", name="solve-1").uid == "solve-1"


def test_get_command_splits_strings_with_shlex() -> None:
    t = sf.Task(cmd="""python -c "print('a b')" """, name="c")
    assert t.get_command() == ["python", "-c", "print('a b')"]


def test_key_distinguishes_argument_boundaries() -> None:
    a = sf.Task(cmd=["ab", "c"], name="x")
    b = sf.Task(cmd=["a", "bc"], name="x")
    assert a.key != b.key
    assert a.hash == a.key
    # the same task described twice has the same key, whatever its name
    assert sf.Task(cmd=["ab", "c"], name="y").key == a.key
    assert sf.Task(cmd="ab c", name="z").key == a.key


def test_key_depends_on_inputs_and_outputs() -> None:
    base = sf.Task(cmd="python run.py", inputs="a.txt", outputs="o.txt", name="k")
    assert sf.Task(cmd="python run.py", inputs="b.txt", outputs="o.txt", name="k").key != base.key
    assert sf.Task(cmd="python run.py", inputs="a.txt", outputs="p.txt", name="k").key != base.key
