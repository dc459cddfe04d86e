"""The command line's shared words: which commands exist, and the options all take.

Kept apart from the commands themselves (``_inspect.py``) so that running a flow
imports none of what looking into the store needs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ._errors import UsageError

COMMANDS = ("runs", "show", "log", "why", "clean", "report", "dag")


def command_argv(argv: Sequence[str]) -> list[str] | None:
    """``argv`` as ``[command, ...]`` if it names one of :data:`COMMANDS`, else None.

    ``-C DIR`` and ``--state-dir DIR`` may come before the command word.
    """
    argv = list(argv)
    i = 0
    while i < len(argv):
        if argv[i] in ("-C", "--directory", "--state-dir"):
            i += 2
        elif argv[i].startswith(("--directory=", "--state-dir=")):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] in COMMANDS:
        return [argv[i], *argv[:i], *argv[i + 1 :]]
    return None


def add_place_options(
    p: argparse.ArgumentParser, state_dir_help: str = "where the store lives"
) -> argparse.ArgumentParser:
    """``--state-dir`` and ``-C``: the options every command shares."""
    p.add_argument(
        "--state-dir",
        default=".scriptflow",
        metavar="DIR",
        help=f"{state_dir_help} (default: .scriptflow)",
    )
    p.add_argument("-C", "--directory", metavar="DIR", help="change to DIR before anything else")
    return p


def change_directory(args: argparse.Namespace) -> None:
    """Honour ``-C DIR`` (before anything else reads a path); UsageError if it cannot."""
    if args.directory:
        try:
            os.chdir(args.directory)
        except OSError as exc:
            raise UsageError(f"cannot change to directory {args.directory!r}: {exc}") from None
