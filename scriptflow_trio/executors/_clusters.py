"""The batch executors by name, for the command line: ``--executor slurm|sge|pbs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._batch import BatchExecutor
from .sge import PBSExecutor, SGEExecutor
from .slurm import SlurmExecutor

BATCH_EXECUTORS: dict[str, type[BatchExecutor]] = {
    "slurm": SlurmExecutor,
    "sge": SGEExecutor,
    "pbs": PBSExecutor,
}


def batch_executor(kind: str, executors_config: Mapping[str, Any] | None) -> BatchExecutor:
    """The ``kind`` executor, set up from scriptflow's ``sf.init({"executors": {kind: {...}}})``.

    Raises ExecutorError naming a setting the executor does not have.
    """
    settings = dict((executors_config or {}).get(kind) or {})
    return BATCH_EXECUTORS[kind].from_config(settings)
