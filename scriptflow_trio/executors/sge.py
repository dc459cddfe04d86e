"""Grid Engine and PBS/Torque: ``qsub`` submits, one ``qstat`` per interval watches,
``qdel`` cancels (one call for a batch of jobs; one per job where a site refuses that).

Grid Engine writes ``#$`` directives and is tested against a real Grid Engine; PBS
writes ``#PBS`` directives as scriptflow's HpcRunner did and is tested against a fake
``qsub``/``qstat``/``qdel`` (no PBS server can be installed on the test machines).
See ``_batch.py`` for the job script, the exit-code file and the poller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._base import AttemptSpec
from ._batch import BatchExecutor, Completed, SchedulerError, StateKind, format_mem, format_time


def _qstat_rows(result: Completed, program: str) -> list[list[str]]:
    if result.returncode != 0:
        raise SchedulerError(result.stderr.strip() or f"{program} exited {result.returncode}")
    rows = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][:1].isdigit():
            rows.append(parts)
    return rows


class SGEExecutor(BatchExecutor):
    """Each attempt is a Grid Engine job (``qsub -terse``); see :class:`BatchExecutor`.

    A task with more than one core needs a parallel environment: ``pe="smp"`` asks
    ``-pe smp N``. ``mem`` is requested as ``-l <mem_resource>=...`` (``h_vmem`` by
    default; Grid Engine counts it per slot).
    """

    kind = "sge"
    submit_program = "qsub"
    query_program = "qstat"
    cancel_program = "qdel"
    directive = "#$"
    job_id_variable = "JOB_ID"
    cancel_separately_on_error = True
    transient_submit = (r"commlib error", r"unable to contact qmaster", r"timed? ?out")
    setting_hints = (
        (r"queue", "queue"),
        (r"parallel environment", "pe"),
        (r"project|account", "account"),
        (r"h_rt|s_rt|runtime", "time"),
        (r"h_vmem|mem", "mem"),
        (r"resource", "directives"),
    )

    def __init__(
        self, *, pe: str | None = None, mem_resource: str = "h_vmem", **settings: Any
    ) -> None:
        super().__init__(**settings)
        self.pe = pe
        self.mem_resource = mem_resource

    def check(self, spec: AttemptSpec) -> str:
        if spec.cores > 1 and not self.pe:
            return (
                f"task {spec.name!r} asks for {spec.cores} cores: set the {self.name} "
                "executor's `pe` (a parallel environment of the cluster, e.g. smp)"
            )
        return ""

    def directive_lines(self, spec: AttemptSpec, job_name: str) -> list[str]:
        d = self.directive
        lines = [
            f"{d} -N {job_name}",
            f"{d} -o {spec.log_path}",
            f"{d} -j y",
            f"{d} -wd {spec.cwd}",
            f"{d} -S /bin/bash",
            f"{d} -V",
        ]
        if spec.cores > 1 and self.pe:
            lines.append(f"{d} -pe {self.pe} {spec.cores}")
        mem = spec.mem if spec.mem is not None else self.mem
        if mem is not None:
            lines.append(f"{d} -l {self.mem_resource}={format_mem(mem)}")
        if self.time is not None:
            lines.append(f"{d} -l h_rt={format_time(self.time)}")
        if self.queue:
            lines.append(f"{d} -q {self.queue}")
        if self.account:
            lines.append(f"{d} -A {self.account}")
        return lines

    def submit_argv(self, script: Path) -> list[str]:
        return [self.submit_program, "-terse", str(script)]

    def parse_submit(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        job_id = lines[-1].strip().split(".")[0] if lines else ""
        if not job_id.isdigit():
            raise ValueError(stdout)
        return job_id

    def query_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.query_program]

    def parse_query(self, result: Completed, job_ids: Sequence[str]) -> dict[str, str]:
        return {row[0]: row[4] for row in _qstat_rows(result, self.query_program)}

    def state_kind(self, state: str) -> StateKind:
        return "error" if "E" in state else "active"

    def explain_state(self, state: str) -> str:
        if "E" in state:
            return " (Grid Engine put it in error state: `qstat -j ID` says why)"
        return ""


class PBSExecutor(BatchExecutor):
    """Each attempt is a PBS/Torque job (``qsub``); see :class:`BatchExecutor`.

    Cores are asked as ``-l nodes=1:ppn=N`` and memory as ``-l mem=...``; use
    ``directives`` for anything else (``"-l select=1:ncpus=4"`` on PBS Pro).
    """

    kind = "pbs"
    submit_program = "qsub"
    query_program = "qstat"
    cancel_program = "qdel"
    directive = "#PBS"
    job_id_variable = "PBS_JOBID"
    cancel_separately_on_error = True
    transient_submit = (r"timed? ?out", r"cannot connect", r"try again", r"pbs_server")
    setting_hints = (
        (r"queue", "queue"),
        (r"account", "account"),
        (r"walltime", "time"),
        (r"mem", "mem"),
        (r"resource", "directives"),
    )

    def directive_lines(self, spec: AttemptSpec, job_name: str) -> list[str]:
        d = self.directive
        lines = [
            f"{d} -N {job_name}",
            f"{d} -o {spec.log_path}",
            f"{d} -j oe",
            f"{d} -V",
            f"{d} -d {spec.cwd}",
            f"{d} -l nodes=1:ppn={spec.cores}",
        ]
        mem = spec.mem if spec.mem is not None else self.mem
        if mem is not None:
            lines.append(f"{d} -l mem={_pbs_mem(format_mem(mem))}")
        if self.time is not None:
            lines.append(f"{d} -l walltime={format_time(self.time)}")
        if self.queue:
            lines.append(f"{d} -q {self.queue}")
        if self.account:
            lines.append(f"{d} -A {self.account}")
        return lines

    def submit_argv(self, script: Path) -> list[str]:
        return [self.submit_program, str(script)]

    def parse_submit(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        job_id = lines[-1].strip() if lines else ""
        if not job_id[:1].isdigit():
            raise ValueError(stdout)
        return job_id

    def query_argv(self, job_ids: Sequence[str]) -> list[str]:
        return [self.query_program]

    def parse_query(self, result: Completed, job_ids: Sequence[str]) -> dict[str, str]:
        # qstat may shorten "123.long.server.name": match on the number
        ours = {job_id.split(".")[0]: job_id for job_id in job_ids}
        states = {}
        for row in _qstat_rows(result, self.query_program):
            job_id = ours.get(row[0].split(".")[0])
            if job_id is not None:
                states[job_id] = row[4]
        return states

    def state_kind(self, state: str) -> StateKind:
        return "ended" if state in ("C", "F", "X") else "active"


def _pbs_mem(mem: str) -> str:
    """PBS writes sizes as 4gb, 512mb."""
    number = mem.rstrip("KMGTkmgtBb")
    unit = mem[len(number) :].lower().rstrip("b")
    return f"{number}{unit}b" if unit else mem
