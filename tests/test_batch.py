"""Batch executors without a scheduler: job scripts, their wrapper, settings, errors."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scriptflow_trio as sf
from scriptflow_trio.executors._batch import (
    Completed,
    ExitFile,
    _Job,
    _read_exit_files,
    format_mem,
    format_time,
)

PY = sys.executable


def spec(tmp_path: Path, **changes) -> sf.AttemptSpec:
    log = tmp_path / ".scriptflow" / "logs" / "20250101-000000000-abcd" / "solve-1234abcd.1.log"
    values = dict(
        name="solve 1",
        key="1234abcd" * 8,
        attempt=1,
        cmd="echo hello; exit 3",
        cwd=str(tmp_path),
        env={"ALPHA": "a b"},
        log_path=log,
        cores=2,
        mem="4G",
    )
    values.update(changes)
    return sf.AttemptSpec(**values)


def test_slurm_script_carries_the_settings_and_the_task(tmp_path):
    ex = sf.SlurmExecutor(
        account="econ",
        partition="short",
        time="1:00:00",
        modules="julia/1.6 python",
        directives=["--qos=high", "#SBATCH --exclusive"],
        env_file=tmp_path / "env.sh",
    )
    s = spec(tmp_path)
    text = ex.render(s, tmp_path / "exit")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in [
        "#SBATCH --job-name=sf-20250101-000000000-abcd-solve_1",
        "#SBATCH --comment=scriptflow_trio:20250101-000000000-abcd",
        f"#SBATCH --output={s.log_path}",
        f"#SBATCH --chdir={tmp_path}",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=4G",
        "#SBATCH --account=econ",
        "#SBATCH --partition=short",
        "#SBATCH --time=1:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --exclusive",
        "module load julia/1.6 python",
        "export ALPHA='a b'",
        "echo hello; exit 3",
    ]:
        assert expected in lines, expected
    # directives come before any command, or the scheduler ignores them
    last_directive = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(line.startswith("#") for line in lines[: last_directive + 1])
    assert f". {tmp_path / 'env.sh'}" in text
    assert ex.script_path(s, tmp_path).relative_to(tmp_path).as_posix() == (
        "jobs/20250101-000000000-abcd/solve_1-1234abcd.1.sh"
    )


def test_numbers_for_mem_and_time_mean_gigabytes_and_seconds():
    assert format_mem(16) == "16G" and format_mem(0.5) == "0.5G" and format_mem("800M") == "800M"
    assert format_time(90) == "0:01:30" and format_time(36000) == "10:00:00"
    assert format_time("2-00:00:00") == "2-00:00:00"


def test_a_task_without_mem_gets_the_executors(tmp_path):
    text = sf.SlurmExecutor(mem=8).render(spec(tmp_path, mem=None), tmp_path)
    assert "#SBATCH --mem=8G" in text
    assert "--mem" not in sf.SlurmExecutor().render(spec(tmp_path, mem=None), tmp_path)


def run_script(tmp_path: Path, ex: sf.Executor, s: sf.AttemptSpec, job_id: str, var: str):
    script = tmp_path / "job.sh"
    script.write_text(ex.render(s, tmp_path / "exit"))  # type: ignore[attr-defined]
    env = {**os.environ, var: job_id}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "executor, var, job_id",
    [
        (sf.SlurmExecutor, "SLURM_JOB_ID", "77"),
        (sf.SGEExecutor, "JOB_ID", "78"),
        (sf.PBSExecutor, "PBS_JOBID", "79.server"),
    ],
)
def test_the_wrapper_writes_the_exit_code_and_host_under_the_job_id(
    tmp_path, executor, var, job_id
):
    s = spec(tmp_path, cmd='echo "$ALPHA" > out.txt; exit 3')
    done = run_script(tmp_path, executor(), s, job_id, var)
    assert done.returncode == 3
    code, host, cpu, rss = (tmp_path / "exit" / job_id).read_text().split()
    assert code == "3" and host
    # run in the wrapper's shell (no script to run again): CPU time, no peak memory
    assert float(cpu) >= 0 and rss == "-"
    assert (tmp_path / "out.txt").read_text() == "a b\n"
    assert os.listdir(tmp_path / "exit") == [job_id]  # the temporary name is gone


def test_an_argv_command_and_exit_inside_it_still_write_the_exit_code(tmp_path):
    s = spec(tmp_path, cmd=("sh", "-c", "exit 5"), env=None)
    assert run_script(tmp_path, sf.SlurmExecutor(), s, "5", "SLURM_JOB_ID").returncode == 5
    assert (tmp_path / "exit" / "5").read_text().split()[0] == "5"
    s = spec(tmp_path, cmd="exit 0", env=None)
    assert run_script(tmp_path, sf.SlurmExecutor(), s, "6", "SLURM_JOB_ID").returncode == 0
    assert (tmp_path / "exit" / "6").read_text().split()[0] == "0"


def test_a_missing_working_directory_is_an_exit_code_not_a_hang(tmp_path):
    s = spec(tmp_path, cwd=str(tmp_path / "nowhere"), env=None)
    done = run_script(tmp_path, sf.SlurmExecutor(), s, "8", "SLURM_JOB_ID")
    assert done.returncode == 127 and "cannot cd" in done.stderr
    assert (tmp_path / "exit" / "8").read_text().split()[0] == "127"


BURN = "import time\nb = b'x' * (400 << 20)\nwhile time.process_time() < 0.3: pass\n"
RECORD_RUN = "echo ran >> runs.txt; echo ${__sf_inner-unset} > inner.txt; "


def run_measured(tmp_path: Path, job_id: str, env: dict[str, str] | None = None):
    """Run the job script from where the executor writes it, as a scheduler would."""
    ex = sf.SlurmExecutor()
    s = spec(tmp_path, cmd=RECORD_RUN + f"{PY} -c {shlex.quote(BURN)}; exit 4", env=None)
    script = ex.script_path(s, tmp_path / ".scriptflow")
    script.parent.mkdir(parents=True)
    script.write_text(ex.render(s, tmp_path / "exit", script))
    env = {**(env or os.environ), "SLURM_JOB_ID": job_id}
    bash = shutil.which("bash") or "bash"
    done = subprocess.run([bash, str(script)], env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 4, done.stderr
    assert (tmp_path / "runs.txt").read_text() == "ran\n"  # once, never twice
    assert (tmp_path / "inner.txt").read_text() == "unset\n"
    return ExitFile.parse((tmp_path / "exit" / job_id).read_text())


def test_the_wrapper_measures_what_the_command_used(tmp_path):
    ended = run_measured(tmp_path, "91")
    assert (ended.returncode, bool(ended.host)) == (4, True)
    assert ended.cpu_seconds is not None and ended.cpu_seconds > 0.25
    # the command's own peak, not the measuring Python's (Linux counts it in a child's)
    assert ended.max_rss is not None and 400 << 20 <= ended.max_rss < 520 << 20


def test_without_python_on_the_node_the_wrapper_still_measures_cpu_time(tmp_path, monkeypatch):
    # neither the engine's interpreter nor a python3 on PATH: the command runs in the
    # wrapper's own shell, once, and only its CPU time is known
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("hostname", "mkdir", "mv", "getconf"):
        (tools / tool).symlink_to(shutil.which(tool))
    ended = run_measured(tmp_path, "92", {**os.environ, "PATH": str(tools)})
    assert ended.returncode == 4
    assert ended.cpu_seconds is not None and ended.cpu_seconds > 0.25
    assert ended.max_rss is None


def test_exit_files_of_two_fields_from_an_earlier_wrapper_still_read(tmp_path):
    assert ExitFile.parse("3 node7\n") == ExitFile(3, "node7", None, None)
    assert ExitFile.parse("0 node7 1.250 52428800\n") == ExitFile(0, "node7", 1.25, 52428800)
    assert ExitFile.parse("0 node7 - -\n") == ExitFile(0, "node7", None, None)
    assert ExitFile.parse("0 node7 nan junk\n") == ExitFile(0, "node7", None, None)
    assert ExitFile.parse("") == ExitFile(None, "", None, None)
    # as the poller reads them, for a job an engine reattached to
    exit_dir = tmp_path / "exit"
    exit_dir.mkdir()
    (exit_dir / "31").write_text("0 node7\n")
    (exit_dir / "32").write_text("2 node8 0.5 1024\n")
    jobs = [_Job(job_id, exit_dir / job_id, ()) for job_id in ("31", "32", "33")]
    assert _read_exit_files(jobs) == {
        "31": (ExitFile(0, "node7"), True),
        "32": (ExitFile(2, "node8", 0.5, 1024), True),
    }


def test_scriptflow_config_keys_are_accepted():
    ex = sf.SlurmExecutor.from_config(
        {
            "maxsize": 7,
            "account": "pi-x",
            "partition": "standard",
            "modules": "R",
            "walltime": "2:00:00",
        }
    )
    assert (ex.capacity, ex.account, ex.partition, ex.modules, ex.time) == (
        7,
        "pi-x",
        "standard",
        ("R",),
        "2:00:00",
    )
    assert ex.cost(16) == 1
    sge = sf.SGEExecutor.from_config({"maxsize": 3, "queue": "all.q", "walltime": 60})
    assert (sge.capacity, sge.queue, sge.time) == (3, "all.q", 60)
    with pytest.raises(sf.ExecutorError, match="no setting 'partitions'.*partition"):
        sf.SlurmExecutor.from_config({"partitions": "x"})


def test_submission_errors_name_the_setting_to_fix():
    ex = sf.SlurmExecutor()
    msg = ex.submission_error("sbatch: error: invalid partition specified: nope")
    assert "invalid partition specified: nope" in msg
    assert "fix the slurm executor's `partition` setting" in msg
    msg = ex.submission_error("Batch job submission failed: Invalid account or account/partition")
    assert "`account`" in msg
    msg = sf.SGEExecutor().submission_error(
        'Job was rejected because job requests unknown queue "x"'
    )
    assert "fix the sge executor's `queue` setting" in msg


def test_squeue_answers_are_parsed():
    ex = sf.SlurmExecutor()
    states = ex.parse_query(Completed(0, "12 RUNNING\n13 COMPLETED\n", ""), ["12", "13", "14"])
    assert states == {"12": "RUNNING", "13": "COMPLETED"}
    # the controller forgot every id asked about: they all ended
    forgotten = Completed(1, "", "slurm_load_jobs error: Invalid job id specified\n")
    assert ex.parse_query(forgotten, ["14"]) == {}
    from scriptflow_trio.executors._batch import SchedulerError

    with pytest.raises(SchedulerError):
        ex.parse_query(Completed(1, "", "Socket timed out on send/recv"), ["12"])
    assert ex.state_kind("PENDING") == "active" and ex.state_kind("COMPLETED") == "ended"
    assert ex.state_kind("TIMEOUT") == "killed"
    assert ex.parse_submit("4242\n") == "4242" and ex.parse_submit("4243;cluster\n") == "4243"


def test_qstat_answers_are_parsed():
    sge = sf.SGEExecutor()
    out = (
        "job-ID  prior   name     user   state submit/start at     queue  slots ja-task-ID\n"
        "-----------------------------------------------------------------------------------\n"
        "     11 0.55500 sf-x       root         r     01/01/2025 10:00:00 all.q@vm  1\n"
        "     12 0.00000 sf-y       root         qw    01/01/2025 10:00:00         1\n"
        "     13 0.00000 sf-z       root         Eqw   01/01/2025 10:00:00         1\n"
    )
    assert sge.parse_query(Completed(0, out, ""), ["11", "12", "13"]) == {
        "11": "r",
        "12": "qw",
        "13": "Eqw",
    }
    assert [sge.state_kind(s) for s in ("r", "qw", "Eqw", "dr")] == [
        "active",
        "active",
        "error",
        "active",
    ]
    assert sge.parse_submit("11\n") == "11"
    pbs = sf.PBSExecutor()
    out = (
        "Job ID                    Name             User            Time Use S Queue\n"
        "------------------------- ---------------- --------------- -------- - -----\n"
        "21.server                 sf-a             root            00:00:00 R batch\n"
        "22.server                 sf-b             root            00:00:01 C batch\n"
    )
    assert pbs.parse_query(Completed(0, out, ""), ["21.server", "22.server"]) == {
        "21.server": "R",
        "22.server": "C",
    }
    assert pbs.state_kind("R") == "active" and pbs.state_kind("C") == "ended"
    assert pbs.parse_submit("21.server\n") == "21.server"


async def test_a_missing_submit_command_fails_at_session_start(workdir, monkeypatch):
    monkeypatch.setenv("PATH", str(workdir))
    with pytest.raises(sf.ExecutorError, match="needs `sbatch`, `squeue`, `scancel`"):
        async with sf.open_session(executors=[sf.SlurmExecutor()]):
            pass
    with pytest.raises(sf.ExecutorError, match="needs `qsub`, `qstat`, `qdel`"):
        async with sf.SGEExecutor():
            pass
