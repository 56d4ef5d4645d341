"""Text others wrote, shown on the Discord review desk exactly as written.

:func:`literal` is for names, locations, the customer's message, tool and policy lines: Discord's
Markdown (``**``, ``||spoilers||``, ``[masked](links)``, ``# headings``, ``> quotes``, lists) and
its mentions (``@everyone``, ``<@id>``, ``<#id>``, ``<t:…>``) are backslash-escaped, so they show
as characters and neither format, hide, link nor ping. :func:`verbatim` puts a draft in a code
block: the agent reads the raw text that will be sent, masked links and spoilers visible.

Not ``discord.utils.escape_markdown``: its ``\\[.+\\]\\(.+\\)`` pattern backtracks cubically (0.8 s
on 4,000 characters of ``[a](``, a Discord message's length). Each pattern here is linear:
a character class, a line-start marker, or a URL run that stops at the first blank.
"""

from __future__ import annotations

import re

from discord.utils import escape_mentions

_FENCE = "```"
_BROKEN_FENCE = "`\u200b``"  # a ``` inside the text, shown without closing the block
# Bare URLs stay as they are (a backslash would break them); everything else that Discord reads
# as Markdown or a mention is escaped.
_INLINE = re.compile(r"(https?://[^\s<>]+)|([\\*_~|`\[\]<])")
_LINE_START = re.compile(r"^([ \t]*)(#{1,3} |-# |>>> |> |[-*+] )", re.MULTILINE)


def literal(text: str) -> str:
    """``text`` as Discord will show it character for character (no Markdown, no mentions)."""
    text = _INLINE.sub(lambda m: m.group(1) or "\\" + m.group(2), text)
    text = _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
    return escape_mentions(text)


def verbatim(text: str, limit: int) -> str:
    """``text`` in a code block of at most ``limit`` characters, cut with a note when longer."""
    limit = max(0, limit)
    shown = text.replace(_FENCE, _BROKEN_FENCE)
    wrapped = f"{_FENCE}\n{shown}\n{_FENCE}"
    if len(wrapped) <= limit:
        return wrapped
    note = f"\n… (truncated: {len(text)} characters in full)"
    room = max(0, limit - len(note) - len(_FENCE) * 2 - 2)
    return f"{_FENCE}\n{shown[:room]}\n{_FENCE}{note}"[:limit]
