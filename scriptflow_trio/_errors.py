"""The error family.

    ScriptflowError
     ├── UsageError          bad input from the person running the engine
     │    ├── FlowFileError  the flows file is missing, or fails to import
     │    └── FlowNotFound   no such flow in the flows file (also a LookupError)
     ├── TaskError           a task could not be run or did not succeed
     │    ├── TaskFailed     an attempt ran and failed (exit code, missing outputs, timeout)
     │    ├── MissingInput   an input does not exist and no task produces it
     │    └── InvalidTask    the task's own spec is wrong (cwd, cores, clashing outputs)
     ├── ExecutorError       an executor cannot do its job (command not installed...)
     ├── StoreError          the store is damaged, too new, or locked by another session
     │    └── StoreLocked    another session holds the state directory
     └── NoSession           a task was awaited outside any session

Each exception carries its data as attributes; ``str()`` is the message for a person.
"""

from __future__ import annotations

from pathlib import Path


class ScriptflowError(Exception):
    """Root of every error the engine raises on purpose."""


class UsageError(ScriptflowError):
    """Something the person running the engine must fix (arguments, files)."""


class FlowFileError(UsageError):
    """The flows file does not exist or cannot be imported."""

    def __init__(self, message: str, path: Path | str) -> None:
        super().__init__(message)
        self.path = Path(path)


class FlowNotFound(UsageError, LookupError):
    """The flow asked for is not defined in the flows file."""

    def __init__(self, name: str, choices: list[str]) -> None:
        listed = ", ".join(choices) if choices else "(none: define async def flow_NAME())"
        super().__init__(f"no flow named {name!r}; the flows file defines: {listed}")
        self.name = name
        self.choices = choices


class TaskError(ScriptflowError):
    """A task could not be run, or did not succeed."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class TaskFailed(TaskError):
    """The last attempt of a task failed: non-zero exit, missing output, or timeout.

    ``returncode`` is None when the process never produced one (timeout, command not
    found, cancelled); ``log_tail`` holds the last lines of the last attempt's log.
    """

    def __init__(
        self,
        name: str,
        reason: str,
        *,
        returncode: int | None = None,
        attempts: int = 1,
        log_path: Path | None = None,
        log_tail: str = "",
    ) -> None:
        super().__init__(f"task {name!r} failed: {reason}", name)
        self.reason = reason
        self.returncode = returncode
        self.attempts = attempts
        self.log_path = log_path
        self.log_tail = log_tail


class MissingInput(TaskError):
    """An input file does not exist and no task of the session produces it."""

    def __init__(self, name: str, path: str, detail: str = "") -> None:
        message = f"task {name!r} needs input {path!r}, which does not exist"
        message += detail or " and is not an output of any task awaited so far"
        super().__init__(message, name)
        self.path = path


class InvalidTask(TaskError):
    """The task's spec cannot be run as written (bad cwd, too many cores, clashing outputs)."""


class ExecutorError(ScriptflowError):
    """An executor cannot do its job: a missing command, a refused submission."""


class StoreError(ScriptflowError):
    """The store cannot be used: damaged, written by a newer version, or absent."""


class StoreLocked(StoreError):
    """Another live session holds the state directory."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class NoSession(ScriptflowError, RuntimeError):
    """A task was awaited with no session running."""

    def __init__(self) -> None:
        super().__init__(
            "no scriptflow session is running: run the flow with "
            "`python -m scriptflow_trio FLOWFILE NAME`, or inside "
            "`async with scriptflow_trio.open_session() as session: ...`"
        )
