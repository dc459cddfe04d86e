"""The session the calling trio task runs in: a context variable that open_session sets.

A module of its own so that ``_task`` can look it up without importing ``_session``
at each ``await task`` (an import inside a function cost about 1 us a call).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from ._errors import NoSession

if TYPE_CHECKING:
    from ._session import Session

current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "scriptflow_trio_session", default=None
)


def current_session() -> Session:
    """The session the calling task runs in; raises NoSession outside of one."""
    session = current.get()
    if session is None:
        raise NoSession()
    return session
