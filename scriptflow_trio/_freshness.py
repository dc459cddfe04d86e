"""The up-to-date decision and the output check, on file timestamps (make's rule)."""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ._task import Glob, resolve


class Decision(NamedTuple):
    """Whether a task must run, and why, in words for a person."""

    run: bool
    reason: str
    #: "newer" when only an input's timestamp says run: content hashes may overrule it
    kind: str = ""
    #: no literal output existed: nothing stale to remove before the first attempt
    absent: bool = False


_UP_TO_DATE = Decision(False, "up to date")


def expand(root: str, item: str | Glob) -> list[str]:
    """The files an input or output names now: itself, or a glob's sorted matches."""
    if isinstance(item, Glob):
        return sorted(_glob.glob(item.pattern, root_dir=root, recursive=True))
    return [item]


def _mtime(root: str, path: str) -> int | None:
    try:
        return os.stat(resolve(root, path)).st_mtime_ns
    except (FileNotFoundError, NotADirectoryError):
        return None


def decide(
    root: str,
    inputs: Sequence[str],
    outputs: Sequence[str | Glob],
    paths: Sequence[str] = (),
    mtimes: Sequence[int | None] = (),
    *,
    was_remade: Callable[[str], bool] = lambda path: False,
) -> Decision:
    """Make's rule: run unless every output exists and none is older than an input.

    ``inputs`` are already expanded; ``paths``, when given, are the literal outputs
    resolved against ``root``, in order; ``was_remade(path)`` tells whether another
    task made (or, in a dry run, would make) that input in this run. ``mtimes``, when
    given, has the modification time of each input the caller has just read, ``None``
    where it did not: that input is looked at here.
    """
    if not outputs:
        return Decision(True, "it declares no outputs")
    if not inputs and len(paths) == len(outputs):  # no inputs, no globs: they must exist
        for path, full in zip(outputs, paths, strict=True):
            if _mtime(root, full) is None:
                return _missing(root, path, full, paths)
        return _UP_TO_DATE
    oldest: int | None = None
    oldest_name = ""
    resolved = iter(paths)
    for item in outputs:
        if isinstance(item, Glob):
            matches = [(p, p) for p in expand(root, item)]
            if not matches:
                return Decision(True, f"no file matches output {item}")
        else:
            matches = [(item, next(resolved, item))]
        for path, full in matches:
            mtime = _mtime(root, full)
            if mtime is None:
                return _missing(root, path, full, paths)
            if oldest is None or mtime < oldest:
                oldest, oldest_name = mtime, path
    assert oldest is not None
    for i, path in enumerate(inputs):
        mtime = mtimes[i] if mtimes else None
        if mtime is None:
            if was_remade(path):
                return Decision(True, f"input {path} was remade")
            mtime = _mtime(root, path)
        if mtime is not None and mtime > oldest:
            return Decision(True, f"input {path} is newer than output {oldest_name}", "newer")
    return _UP_TO_DATE


def _missing(root: str, path: str | Glob, full: str, paths: Sequence[str]) -> Decision:
    """Run: output ``path`` is missing; ``absent`` if no other literal output exists."""
    if len(paths) == 1 and paths[0] == full:  # the one literal output: no other to look at
        return Decision(True, f"output {path} is missing", "", True)
    absent = all(_mtime(root, p) is None for p in paths if p != full)
    return Decision(True, f"output {path} is missing", "", absent)
