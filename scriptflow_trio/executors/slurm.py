"""SLURM: ``sbatch --parsable`` submits, one ``squeue`` per interval watches, ``scancel``
cancels; ``sacct`` explains lost jobs when the cluster keeps accounts (never needed).

See ``_batch.py`` for the job script, the exit-code file and the poller.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._base import AttemptSpec
from ._batch import BatchExecutor, Completed, SchedulerError, StateKind, format_mem, format_time
from ._batch import run_command as _run_command

_ACTIVE = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
    "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
    "RESV_DEL_HOLD", "SPECIAL_EXIT",
}  # fmt: skip
_ENDED = {"COMPLETED", "FAILED"}  # the wrapper may have written its exit code
_HINTS = {
    "TIMEOUT": " (the time limit: raise the executor's `time`)",
    "OUT_OF_MEMORY": " (out of memory: raise the task's `mem` or the executor's `mem`)",
    "NODE_FAIL": " (its node failed)",
    "CANCELLED": " (cancelled outside scriptflow_trio)",
    "PREEMPTED": " (preempted by another job)",
    "DEADLINE": " (its deadline passed)",
    "BOOT_FAIL": " (its node failed to boot)",
}


class SlurmExecutor(BatchExecutor):
    """Each attempt is a SLURM batch job (``sbatch``); see :class:`BatchExecutor`.

    ``partition`` is the SLURM name of the queue; ``cpus`` come from the task's
    ``cores`` (``--cpus-per-task``) and memory from its ``mem`` (``--mem``).
    ``.env_slurm`` in the current directory is sourced by every job when it exists,
    as scriptflow did.
    """

    kind = "slurm"
    submit_program = "sbatch"
    query_program = "squeue"
    cancel_program = "scancel"
    directive = "#SBATCH"
    job_id_variable = "SLURM_JOB_ID"
    queue_setting = "partition"
    default_env_file = ".env_slurm"
    transient_submit = (
        r"temporarily unable",
        r"socket timed out",
        r"resource temporarily unavailable",
        r"unable to contact slurm controller",
        r"connection refused",
        r"transport endpoint",
        r"AssocMaxSubmitJobLimit",
        r"QOSMaxSubmitJobPerUserLimit",
    )
    setting_hints = (
        (r"invalid account", "account"),
        (r"partition", "partition"),
        (r"account", "account"),
        (r"time limit", "time"),
        (r"memory", "mem"),
        (r"qos", "directives"),
        (r"node configuration", "mem"),
    )

    def __init__(self, *, partition: str | None = None, **settings: Any) -> None:
        settings.setdefault("queue", partition)
        super().__init__(**settings)

    @property
    def partition(self) -> str | None:
        return self.queue

    def directive_lines(self, spec: AttemptSpec, job_name: str) -> list[str]:
        d = self.directive
        run = spec.run_id or spec.log_path.parent.name
        lines = [
            f"{d} --job-name={job_name}",
            f"{d} --comment=scriptflow_trio:{run}",
            f"{d} --output={spec.log_path}",
            f"{d} --chdir={spec.cwd}",
            f"{d} --ntasks=1",
            f"{d} --cpus-per-task={spec.cores}",
        ]
        mem = spec.mem if spec.mem is not None else self.mem
        if mem is not None:
            lines.append(f"{d} --mem={format_mem(mem)}")
        if self.account:
            lines.append(f"{d} --account={self.account}")
        if self.queue:
            lines.append(f"{d} --partition={self.queue}")
        if self.time is not None:
            lines.append(f"{d} --time={format_time(self.time)}")
        return lines

    def submit_argv(self, script: Path) -> list[str]:
        return [self.submit_program, "--parsable", str(script)]

    def parse_submit(self, stdout: str) -> str:
        job_id = stdout.strip().splitlines()[-1].split(";")[0].strip() if stdout.strip() else ""
        if not job_id.isdigit():
            raise ValueError(stdout)
        return job_id

    def query_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.query_program, "-j", ",".join(job_ids), "--states=all", "-h", "-o", "%i %T"]

    def parse_query(self, result: Completed, job_ids: Sequence[str]) -> dict[str, str]:
        if result.returncode != 0:
            # a list of ids the controller has all forgotten is an error; those jobs ended
            if "invalid job id" in result.stderr.lower():
                return {}
            raise SchedulerError(result.stderr.strip() or f"exit code {result.returncode}")
        states: dict[str, str] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1].rstrip("+")
        return states

    def state_kind(self, state: str) -> StateKind:
        if state in _ACTIVE:
            return "active"
        if state in _ENDED or state not in _HINTS:
            return "ended"
        return "killed"

    def explain_state(self, state: str) -> str:
        return _HINTS.get(state, "")

    async def explain_lost(self, job_id: str) -> str:
        if shutil.which("sacct") is None:
            return ""
        result = await _run_command(
            ["sacct", "-j", job_id, "-n", "-X", "-P", "-o", "State,ExitCode"], limit=20
        )
        first = result.stdout.strip().splitlines()[:1]
        if result.returncode != 0 or not first:
            return ""
        state, _, code = first[0].partition("|")
        return f"sacct says {state} (exit code {code})"
