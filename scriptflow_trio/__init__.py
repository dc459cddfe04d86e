"""scriptflow_trio: a make-like workflow engine whose dependencies are async Python.

Import it as scriptflow's replacement: ``import scriptflow_trio as sf``.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._errors import ExecutorError as ExecutorError
from ._errors import FlowFileError as FlowFileError
from ._errors import FlowNotFound as FlowNotFound
from ._errors import InvalidTask as InvalidTask
from ._errors import MissingInput as MissingInput
from ._errors import NoSession as NoSession
from ._errors import ScriptflowError as ScriptflowError
from ._errors import StoreError as StoreError
from ._errors import StoreLocked as StoreLocked
from ._errors import TaskError as TaskError
from ._errors import TaskFailed as TaskFailed
from ._errors import UsageError as UsageError
from ._flowfile import flow as flow
from ._flowfile import init as init
from ._session import Session as Session
from ._session import SessionConfig as SessionConfig
from ._session import SessionStatistics as SessionStatistics
from ._session import bag as bag
from ._session import current_session as current_session
from ._session import open_session as open_session
from ._session import retry as retry
from ._task import Glob as Glob
from ._task import Task as Task
from ._task import glob as glob
from .executors._base import AttemptSpec as AttemptSpec
from .executors._base import Executor as Executor
from .executors._base import Outcome as Outcome
from .executors.local import LocalExecutor as LocalExecutor

__version__ = "0.1.0"

# Imported when first used: most runs need none of them, and start-up time counts.
_LAZY = {
    "Notifier": "._notify",
    "DaskExecutor": ".executors.dask",
    "PBSExecutor": ".executors.sge",
    "SGEExecutor": ".executors.sge",
    "SlurmExecutor": ".executors.slurm",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if _TYPE_CHECKING:
    from ._notify import Notifier as Notifier
    from .executors.dask import DaskExecutor as DaskExecutor
    from .executors.sge import PBSExecutor as PBSExecutor
    from .executors.sge import SGEExecutor as SGEExecutor
    from .executors.slurm import SlurmExecutor as SlurmExecutor
