"""Compact JSON text from one C encoder, kept: task keys, journal lines, records.

``json.JSONEncoder.encode`` makes a new C encoder at every call: two thirds of the
cost of encoding a task's key (2.9 us of 4.3 here). This module makes it once, with
the settings ``JSONEncoder(separators=(",", ":"), check_circular=False)`` has, and
falls back on that encoder where the C one is missing or takes other arguments. It
imports neither ``json`` nor ``typing`` then: the store's writer process uses it too,
and those two were half of that process's start.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# what json.dumps(_PROBE, separators=(",", ":")) writes
_PROBE = [1.5, "\u00e9", {"a": None}, 10**20, -0.0, True]
_PROBE_TEXT = '[1.5,"\\u00e9",{"a":null},100000000000000000000,-0.0,true]'


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fallback() -> Callable[[Any], str]:
    import json

    return json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _make() -> Callable[[Any], str]:
    try:
        from _json import encode_basestring_ascii, make_encoder

        encode = make_encoder(
            None, _refuse, encode_basestring_ascii, None, ":", ",", False, False, True
        )
    except (ImportError, TypeError):  # no C encoder, or one with other parameters
        return _fallback()
    join = "".join

    def dumps(value: Any) -> str:
        """``value`` as compact JSON text (ASCII, no spaces), as json.dumps would write it."""
        return join(encode(value, 0))

    if dumps(_PROBE) != _PROBE_TEXT:
        return _fallback()
    return dumps


dumps = _make()


def _make_quote() -> Callable[[str], str]:
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # pragma: no cover - an interpreter without the C module
        from json.encoder import py_encode_basestring_ascii as quote
    return quote  # type: ignore[no-any-return]


# a string as JSON text, as dumps writes it: for lines put together by hand
quote = _make_quote()
