"""Text every database and wire takes: what is left of a customer's, an agent's or the model's
odd characters once they can be stored and sent."""

from __future__ import annotations

import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: The longest tool name kept (and shown): the model may name a tool we do not have, at any length.
TOOL_NAME_LENGTH = 64


def storable(text: str) -> str:
    """``text`` with its NUL characters dropped (PostgreSQL refuses them in text) and its lone
    surrogates (a JSON ``\\ud800`` with no pair, which UTF-8 cannot encode) turned into U+FFFD.
    Everything else is kept as written."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def storable_values(value: Any) -> Any:
    """A parsed JSON value (a tool's arguments as the model wrote them) with every string in it,
    keys too, :func:`storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [storable_values(item) for item in value]
    if isinstance(value, dict):
        return {storable(str(key)): storable_values(item) for key, item in value.items()}
    return value


def cut_label(text: str, length: int) -> str:
    """``text`` as a label of at most ``length`` characters: cut, its last character an ellipsis."""
    return text if len(text) <= length else text[: length - 1] + "\u2026"
