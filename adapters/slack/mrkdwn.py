"""The model's Markdown as Slack mrkdwn, through markdown-to-mrkdwn (a kept library).

The library turns ``**bold**`` into ``*bold*``, ``*italic*`` into ``_italic_``, ``[text](url)``
into ``<url|text>``, lists into bullets, headings into bold lines, and leaves code blocks
alone. Around it this module adds what a reply posted as the bot needs:

- ``&``, ``<`` and ``>`` are escaped first (Slack's rule), so a model's text can never ping
  ``<!channel>``, mention a user or smuggle a link with other text than its address;
- inline code keeps its content verbatim (the library would convert ``**`` inside it), and a
  lone ``*`` between spaces stays an asterisk;
- a line starting with ``>`` stays a quote;
- a link's address must be http(s) or mailto, else the link stays text.

Discord renders Markdown itself: its adapter posts the model's text as it is.
"""

from __future__ import annotations

import re

from markdown_to_mrkdwn import SlackMarkdownConverter

_converter = SlackMarkdownConverter()
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"<([^<>|\s]+)\|([^<>]*)>")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_PLACEHOLDER = "\x00{}\x00"
_LONE_STAR = re.compile(r"(?<=\s)\*(?=\s)")  # "2 * 3 * 4" is arithmetic, not emphasis
_QUOTE = re.compile(r"^&gt; ?", re.MULTILINE)  # a Markdown quote stays a Slack quote


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Slack mrkdwn for a Markdown text (plain text passes through, escaped)."""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return _PLACEHOLDER.format(len(kept) - 1)

    text = escape(markdown.replace("\x00", ""))
    text = _INLINE_CODE.sub(keep, text)
    text = _LONE_STAR.sub(keep, text)
    fences: list[str] = []

    def keep_fence(match: re.Match[str]) -> str:
        fences.append(match.group(0))
        return f"\x00F{len(fences) - 1}\x00"

    text = _FENCE.sub(keep_fence, text)
    text = _converter.convert(text)
    text = _LINK.sub(_checked_link, text)
    text = _QUOTE.sub("> ", text)
    text = re.sub(r"\x00F(\d+)\x00", lambda m: fences[int(m.group(1))], text)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _checked_link(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    if url.lower().startswith(_SAFE_SCHEMES):
        return match.group(0)
    return f"{label} ({url})" if label else url
