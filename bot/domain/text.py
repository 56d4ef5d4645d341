"""Text every database and wire takes: what is left of a customer's, an agent's or the model's
odd characters once they can be stored and sent."""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with its NUL characters dropped (PostgreSQL refuses them in text) and its lone
    surrogates (a JSON ``\\ud800`` with no pair, which UTF-8 cannot encode) turned into U+FFFD.
    Everything else is kept as written."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)
