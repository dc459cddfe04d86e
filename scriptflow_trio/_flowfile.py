"""Loading a flows file: its flows, its ``sf.init`` configuration, flow arguments.

``sf.init({...})`` at the top of a scriptflow flows file hands its configuration to
whatever is loading the file (through a context variable set for the import), never
to a global: imported anywhere else, for instance by a task's own ``import sflow``,
it does nothing.
"""

from __future__ import annotations

import contextvars
import importlib.util
import inspect
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import FlowFileError, FlowNotFound, UsageError

_loading: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "scriptflow_trio_loading", default=None
)
_FLOW_MARK = "__scriptflow_flow__"
_MODULE_MARK = "__scriptflow_flows_file__"

F = typing.TypeVar("F", bound=Callable[..., Any])


def init(config: Mapping[str, Any]) -> None:
    """scriptflow's ``sf.init({...})``: configuration for the run loading this file.

    Understood keys: ``executors.local.maxsize`` (slots), ``force`` (a name pattern),
    ``debug`` (verbose), ``classic_terminal`` (plain output).
    """
    target = _loading.get()
    if target is not None:
        target.update(config)


def flow(fn: F | None = None, *, name: str | None = None) -> Any:
    """Mark an async function as a flow, runnable by name from the command line.

    Usable bare (``@sf.flow``) or with a name (``@sf.flow(name="all")``).
    """

    def mark(f: F) -> F:
        setattr(f, _FLOW_MARK, name or _flow_name(f.__name__))
        return f

    return mark(fn) if fn is not None else mark


def _flow_name(function_name: str) -> str:
    return function_name.removeprefix("flow_")


class FlowFile(NamedTuple):
    """A loaded flows file: its module, its flows by name, what ``sf.init`` gave."""

    path: Path
    module: types.ModuleType
    flows: dict[str, Callable[..., Any]]
    config: dict[str, Any]

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self.flows[name]
        except KeyError:
            raise FlowNotFound(name, sorted(self.flows)) from None

    def describe(self) -> list[tuple[str, str]]:
        """(name, first line of the docstring) for every flow, sorted by name."""
        return [
            (name, (inspect.getdoc(fn) or "").partition("\n")[0])
            for name, fn in sorted(self.flows.items())
        ]


def load_flow_file(path: str | Path) -> FlowFile:
    """Import the flows file at ``path`` and find its flows; errors name the place to fix."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        hint = " (it is a directory)" if path.is_dir() else ""
        raise FlowFileError(
            f"flows file {str(path)!r} does not exist{where}{hint}: give the path of the "
            "Python file that defines your flows (scriptflow's default was sflow.py)",
            path,
        )
    module_name = path.stem if path.stem.isidentifier() else "scriptflow_flows"
    existing = sys.modules.get(module_name)
    if existing is not None and not getattr(existing, _MODULE_MARK, False):
        module_name = f"_scriptflow_flows_{module_name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    setattr(module, _MODULE_MARK, True)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    config: dict[str, Any] = {}
    token = _loading.set(config)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise FlowFileError(_describe_syntax_error(exc), path) from exc
    except Exception as exc:
        raise FlowFileError(_describe_import_error(exc, path), path) from exc
    finally:
        _loading.reset(token)
    flows: dict[str, Callable[..., Any]] = {}
    for attr, value in vars(module).items():
        if not callable(value):
            continue
        marked = getattr(value, _FLOW_MARK, None)
        if marked:
            flows[marked] = value
        elif attr.startswith("flow_") and getattr(value, "__module__", None) == module_name:
            flows[_flow_name(attr)] = value
    return FlowFile(path, module, flows, config)


def _describe_syntax_error(exc: SyntaxError) -> str:
    text = (exc.text or "").rstrip("\n")
    stripped = text.lstrip()
    caret = ""
    if exc.offset and stripped:
        caret = "\n    " + " " * max(0, exc.offset - 1 - (len(text) - len(stripped))) + "^"
    code = f"\n    {stripped}{caret}" if stripped else ""
    return f"syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}{code}"


def _describe_import_error(exc: BaseException, path: Path) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    where = ""
    if mine:
        frame = mine[-1]
        where = f", line {frame.lineno}"
        if frame.line:
            where += f":\n    {frame.line}"
    return f"{path} fails to import{where}\n{type(exc).__name__}: {exc}"


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _convert(value: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            annotation = options[0]
    if annotation is bool:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("expected true or false")
    if annotation in (int, float, Path, str):
        return annotation(value)
    return value


def bind_arguments(fn: Callable[..., Any], name: str, args: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` words into keyword arguments, typed by ``fn``'s annotations."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [
        p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    kwargs: dict[str, Any] = {}
    for word in args:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(
                f"flow argument {word!r} is not of the form key=value "
                f"(flow {name!r} takes: {_list(accepted)})"
            )
        if key not in params and not takes_any:
            raise UsageError(f"flow {name!r} has no parameter {key!r}; it takes: {_list(accepted)}")
        annotation = hints.get(key, str)
        try:
            kwargs[key] = _convert(value, annotation)
        except ValueError as exc:
            type_name = getattr(annotation, "__name__", str(annotation))
            raise UsageError(
                f"flow argument {key}={value!r} is not a valid {type_name}: {exc}"
            ) from None
    missing = [
        p.name
        for p in params.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        raise UsageError(
            f"flow {name!r} needs {_list(missing)}: pass them as "
            + " ".join(f"{m}=VALUE" for m in missing)
        )
    return kwargs


def _list(names: list[str]) -> str:
    return ", ".join(names) if names else "no arguments"
