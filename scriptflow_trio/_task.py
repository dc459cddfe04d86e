"""Task: the user's description of one shell command with its input and output files.

A Task is plain data until it is awaited (or started): then it is submitted to the
current session, which decides whether it must run, runs it, and checks it. The
keyword API is scriptflow 0.2.13's, so flows written for it run unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._context import current_session
from ._jsontext import dumps

if TYPE_CHECKING:
    from ._session import Job

OUTPUT_GROUP_ALL = None  # the group of outputs given as a plain list or string


@attrs.frozen
class Glob:
    """A glob pattern used as an input or output (``sf.glob("results/*.csv")``).

    As an input it is expanded when the task is about to run; as an output it must
    match at least one file once the task has run.
    """

    pattern: str

    def __str__(self) -> str:
        return self.pattern


def glob(pattern: str) -> Glob:
    """Mark ``pattern`` as a glob for ``inputs=`` or ``outputs=``."""
    return Glob(os.fspath(pattern))


PathLike = str | os.PathLike[str] | Glob


def _path_item(item: Any) -> str | Glob:
    if isinstance(item, Glob):
        return item
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    raise TypeError(f"a file must be given as a str, a Path or sf.glob(...), not {item!r}")


def _path_list(value: Any) -> list[str | Glob]:
    """Normalise one file, a list of files, or tasks (whose outputs are meant)."""
    if value is None:
        return []
    # the common cases first: the checks of ABCs (os.PathLike) are slow
    if type(value) is str:
        return [value]
    if type(value) is list and all(type(item) is str for item in value):
        return list(value)  # a list of names: nothing to convert
    if isinstance(value, str | os.PathLike | Glob | Task):
        value = [value]
    out: list[str | Glob] = []
    for item in value:
        if isinstance(item, Task):
            out.extend(item.get_outputs())
        else:
            out.append(_path_item(item))
    return out


def _outputs(value: Any) -> dict[str | None, list[str | Glob]]:
    if type(value) is str:
        return {OUTPUT_GROUP_ALL: [value]}
    if isinstance(value, Mapping):
        return {k: _path_list(v) for k, v in value.items()}
    return {OUTPUT_GROUP_ALL: _path_list(value)}


def _fspath_or_none(value: Any) -> str | None:
    # not attrs.converters.optional(os.fspath), which inspects os.fspath's signature at
    # import: a tenth of the package's import time
    return None if value is None else os.fspath(value)


def _encode_path(item: str | Glob) -> Any:
    return {"glob": item.pattern} if isinstance(item, Glob) else item


def _encode_paths(items: list[str | Glob]) -> list[Any]:
    for item in items:
        if type(item) is not str:
            return [_encode_path(i) for i in items]
    return items  # names only, encoded as they are


def _frozen_after_submit(instance: Task, attribute: attrs.Attribute, value: Any) -> Any:
    if instance._job is not None and not attribute.name.startswith("_"):
        raise AttributeError(
            f"task {instance.name!r} was already submitted; its {attribute.name} can no "
            "longer change (create a new Task instead)"
        )
    return value


# printable ASCII without quotes and backslash, and shlex's whitespace: where str.split
# splits exactly as shlex.split does, ten times faster
_PLAIN_COMMAND = re.compile(r"[ \t\r\n!#-&(-\[\]-~]*")


def _normalize_cmd(task: Task, cmd: Any) -> str | tuple[str, ...]:
    """A string is split with shlex (kept as typed, for display) unless it goes to the shell."""
    # private field: object.__setattr__ skips the setattr hooks, which guard public ones
    object.__setattr__(task, "_text", "")
    if isinstance(cmd, str):
        if task.shell:
            return cmd
        object.__setattr__(task, "_text", cmd.strip())
        if _PLAIN_COMMAND.fullmatch(cmd):
            return tuple(cmd.split())
        return tuple(shlex.split(cmd))
    if isinstance(cmd, Iterable):
        argv = tuple(os.fspath(c) if isinstance(c, os.PathLike) else str(c) for c in cmd)
        return shlex.join(argv) if task.shell else argv
    raise TypeError(f"cmd must be a string or a list of arguments, not {cmd!r}")


_NO_OUTPUTS: Any = object()  # outputs=None is a group of none, not the absence of groups


@attrs.define(
    eq=False,
    init=False,
    weakref_slot=False,  # nothing refers to a task weakly; and see _Blank
    on_setattr=[attrs.setters.convert, _frozen_after_submit],
)
class Task:
    """One command with declared inputs and outputs; ``await task`` runs it if needed.

    ``cmd`` is split with shlex unless ``shell=True`` (then the string goes to the
    shell). Relative paths are relative to the session's directory. ``retry=N``
    allows N more attempts; ``timeout`` (seconds) kills an attempt that runs longer;
    ``cores`` (alias ``ncore``) is what the task occupies on its executor;
    ``result`` names a file whose content (JSON if it parses, else text) becomes
    ``task.result`` once the task is done. ``freshness="hash"`` compares the content
    of inputs with what the last success saw, so a touched but unchanged input does
    not make the task run again.

    The fields below convert what is assigned to them later as ``__init__`` converts
    its arguments; ``__init__`` is written out: a flow makes a Task per command, and
    attrs' generated one, with its converter calls, executed a tenth more.
    """

    cmd: str | tuple[str, ...] = attrs.field(
        on_setattr=[
            lambda i, a, v: _frozen_after_submit(i, a, v),
            lambda i, a, v: _normalize_cmd(i, v),
        ],
    )
    inputs: list[str | Glob] = attrs.field(converter=_path_list)
    outputs: dict[str | None, list[str | Glob]] = attrs.field(converter=_outputs)
    name: str
    retry: int = attrs.field(converter=int)
    shell: bool
    quiet: bool
    props: dict[str, Any]
    mem: str | int | float | None
    cores: int
    timeout: float | None
    env: dict[str, str] | None
    cwd: str | None = attrs.field(converter=_fspath_or_none)
    executor: str | None
    freshness: str | None
    result_file: str | None = attrs.field(converter=_fspath_or_none)
    ncore: int | str | None = attrs.field(repr=False)
    _job: Job | None = attrs.field(repr=False, on_setattr=attrs.setters.NO_OP)
    _value: Any = attrs.field(repr=False, on_setattr=attrs.setters.NO_OP)
    _done: bool = attrs.field(repr=False, on_setattr=attrs.setters.NO_OP)
    _key: str = attrs.field(repr=False, on_setattr=attrs.setters.NO_OP)
    _text: str = attrs.field(repr=False, on_setattr=attrs.setters.NO_OP)

    def __init__(
        self,
        *,
        cmd: str | Iterable[Any],
        inputs: Any = None,
        outputs: Any = _NO_OUTPUTS,
        name: str = "",
        retry: int = 0,
        shell: bool = False,
        quiet: bool = True,
        props: dict[str, Any] | None = None,
        mem: str | int | float | None = None,
        cores: int | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        executor: str | None = None,
        freshness: str | None = None,
        result: str | os.PathLike[str] | None = None,
        ncore: int | str | None = None,
    ) -> None:
        # a new task needs none of the setattr hooks: it is filled in as a _Blank (the
        # same slots without them), where a slot is set as fast as a local variable;
        # object.__setattr__ cost 1,100 instructions a field, a tenth of a task in W5.
        # A subclass's instance may have more than Task's slots: its fields are filled
        # in on a _Blank of their own, then copied.
        t: Any = self if type(self) is Task else _Blank.__new__(_Blank)
        object.__setattr__(t, "__class__", _Blank)
        try:
            t._job = None
            t._value = None
            t._done = False
            t._key = ""
            t.shell = shell
            t.cmd = _normalize_cmd(t, cmd)  # sets _text
            if not t.cmd:
                raise ValueError("cmd is empty: a task needs a command to run")
            t.inputs = _path_list(inputs)
            t.outputs = {} if outputs is _NO_OUTPUTS else _outputs(outputs)
            if type(retry) is not int:
                retry = int(retry)
            if retry < 0:
                raise ValueError(f"retry must be 0 or more, not {retry}")
            t.retry = retry
            t.quiet = quiet
            t.props = {} if props is None else props
            t.mem = mem
            if cores is None:
                cores = int(ncore) if ncore is not None else 1
            if cores < 1:
                raise ValueError(f"cores must be 1 or more, not {cores}")
            t.cores = cores
            t.ncore = ncore
            t.timeout = timeout
            t.env = env
            t.cwd = _fspath_or_none(cwd)
            t.executor = executor
            if freshness not in (None, "mtime", "hash"):
                raise ValueError(f"freshness must be 'mtime' or 'hash', not {freshness!r}")
            t.freshness = freshness
            t.result_file = _fspath_or_none(result)
        finally:
            if t is self:
                object.__setattr__(self, "__class__", Task)
        if t is not self:
            for field in _Blank.__slots__:
                if field != "name":  # set below, from the fields
                    object.__setattr__(self, field, getattr(t, field))
        object.__setattr__(self, "name", name or self._default_name())

    # -- identity ---------------------------------------------------------------------

    def _default_name(self) -> str:
        outputs = self.get_outputs()
        if outputs:
            return str(outputs[0])
        text = self.command_line()
        return text if len(text) <= 48 else text[:45] + "..."

    @property
    def key(self) -> str:
        """Canonical hash of what the task does: command, files, cwd and env.

        Computed from a JSON encoding, so ``["ab", "c"]`` and ``["a", "bc"]`` differ.
        """
        if self._key:
            return self._key
        encoded = dumps(
            [
                self.cmd,  # a str, or a tuple: JSON writes both as it wrote a list
                self.shell,
                _encode_paths(self.inputs),
                [[g, _encode_paths(outs)] for g, outs in self.outputs.items()],
                self.cwd,
                self.result_file,
                sorted(self.env.items()) if self.env else None,
            ]
        )
        key = hashlib.blake2b(encoded.encode(), digest_size=16).hexdigest()
        if self._job is not None:
            object.__setattr__(self, "_key", key)  # frozen from now on
        return key

    def command_line(self) -> str:
        """The command as one line a person can read (and paste into a shell)."""
        if isinstance(self.cmd, str):
            return self.cmd
        return self._text or shlex.join(self.cmd)

    # -- awaiting ---------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Task]:
        return current_session().await_task(self).__await__()

    async def _wait(self) -> Task:
        return await current_session().await_task(self)

    def start(self) -> Task:
        """Submit the task now and await it later; the session finishes it regardless."""
        current_session().submit(self, hold=True)
        return self

    def schedule(self) -> Task:
        """scriptflow's name for :meth:`start`."""
        return self.start()

    @property
    def done(self) -> bool:
        """True once the task succeeded or was found up to date."""
        return self._done

    @property
    def result(self) -> Any:
        """The content of the ``result`` file once the task is done.

        Before that, ``task.result("file")`` sets the result file, as in scriptflow.
        """
        if self._done:
            return self._value
        return self._set_result_file

    def _set_result_file(self, path: str | os.PathLike[str]) -> Task:
        self.result_file = os.fspath(path)
        return self

    # -- scriptflow 0.2.13 helpers ----------------------------------------------------

    @property
    def uid(self) -> str:
        return self.name

    @property
    def deps(self) -> list[str | Glob]:
        return self.inputs

    @property
    def hash(self) -> str:
        return self.key

    def get_command(self) -> str | list[str]:
        return self.cmd if isinstance(self.cmd, str) else list(self.cmd)

    def get_outputs(self) -> list[str | Glob]:
        """All outputs, every group, in order."""
        return [o for outs in self.outputs.values() for o in outs]

    def _checked_outputs(self) -> list[str | Glob]:
        """The outputs the engine checks: the declared ones and the result file."""
        outputs = self.get_outputs()
        if self.result_file is not None and self.result_file not in outputs:
            outputs.append(self.result_file)
        return outputs

    def get_output_group(self, group: str | None) -> list[str | Glob]:
        return self.outputs[group]

    def output(self, outputs: Any) -> Task:
        self.outputs = outputs
        return self

    def input(self, inputs: Any) -> Task:
        return self.add_deps(inputs)

    def add_deps(self, deps: Any) -> Task:
        self.inputs = [*self.inputs, *_path_list(deps)]
        return self

    def set_retry(self, retry: int) -> Task:
        self.retry = retry
        return self

    def set_prop(self, name: str, value: Any) -> None:
        self.props[name] = value

    def get_prop(self, name: str) -> Any:
        return self.props[name]


# Task's slots, without its setattr hooks: Task.__init__ fills a new task in as one of
# these (the layouts match, so an object's class may go from one to the other; they
# would not with a __weakref__ slot, hence Task's weakref_slot=False)
class _Blank:
    __slots__ = Task.__slots__


def resolve(root: str, path: str) -> str:
    """``path`` relative to the session directory ``root``."""
    if os.sep == "/" and path and not root.endswith("/"):  # os.path.join's result, faster
        return path if path[0] == "/" else f"{root}/{path}"
    return path if os.path.isabs(path) else os.path.join(root, path)
