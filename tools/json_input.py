"""JSON that comes from outside (a signed Slack payload, an operator's orders file), parsed so
that no shape of it can crash the reader, and quoted briefly in error messages.

``json.loads`` raises :class:`RecursionError`, not :class:`ValueError`, for an array or object
nested deeper than Python's recursion limit (``[[[[...``), so a handler that catches
``ValueError`` lets it through as a 500 or a traceback. :func:`loads` turns it into
:class:`NestedTooDeeply` (a ``ValueError``), and refuses anything nested deeper than
:data:`MAX_DEPTH` as well, so what it returns can be walked, copied and logged safely.
"""

from __future__ import annotations

import json
from typing import Any

#: How much of a value from outside an error message quotes.
QUOTED_CHARACTERS = 40

#: Deeper than any real payload: Slack's Block Kit nests about fifteen levels, an order's
#: items three.
MAX_DEPTH = 64


class NestedTooDeeply(ValueError):
    """JSON nested deeper than :data:`MAX_DEPTH` (or than the parser can follow)."""

    def __init__(self) -> None:
        super().__init__(f"nested too deeply (more than {MAX_DEPTH} levels)")


def loads(text: str | bytes, **options: Any) -> Any:
    """``json.loads(text, **options)``; :class:`NestedTooDeeply` for nesting beyond
    :data:`MAX_DEPTH`, :class:`ValueError` (``json.JSONDecodeError``) for anything else."""
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise NestedTooDeeply() from None
    if depth(value) > MAX_DEPTH:
        raise NestedTooDeeply()
    return value


def quoted(text: str) -> str:
    """``repr(text)``, cut to :data:`QUOTED_CHARACTERS` so an error about a megabyte-long value
    stays one short line."""
    if len(text) <= QUOTED_CHARACTERS:
        return repr(text)
    return f"{text[:QUOTED_CHARACTERS]!r}… ({len(text)} characters)"


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without
    recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
