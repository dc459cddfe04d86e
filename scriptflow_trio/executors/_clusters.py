"""The batch executors by name, for the command line: ``--executor slurm|sge|pbs``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batch import BatchExecutor

# imported only when asked for: a local run needs none of them
BATCH_EXECUTORS: dict[str, tuple[str, str]] = {
    "slurm": (".slurm", "SlurmExecutor"),
    "sge": (".sge", "SGEExecutor"),
    "pbs": (".sge", "PBSExecutor"),
}


def batch_executor(kind: str, executors_config: Mapping[str, Any] | None) -> BatchExecutor:
    """The ``kind`` executor, set up from scriptflow's ``sf.init({"executors": {kind: {...}}})``.

    Raises ExecutorError naming a setting the executor does not have.
    """
    settings = dict((executors_config or {}).get(kind) or {})
    module, name = BATCH_EXECUTORS[kind]
    executor_class: type[BatchExecutor] = getattr(
        importlib.import_module(module, __package__), name
    )
    return executor_class.from_config(settings)
