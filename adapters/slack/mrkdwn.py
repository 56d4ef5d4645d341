"""The model's Markdown as Slack mrkdwn, in time linear in the text's length.

``**bold**`` and ``__bold__`` become ``*bold*``, ``*italic*`` ``_italic_``, ``~~gone~~`` ``~gone~``,
``[text](url)`` ``<url|text>``, ``![alt](url)`` ``<url>``, lists bullets (task lists boxes),
headings bold lines, tables a bold header line and ``a | b`` rows, ``---`` a rule; code (fenced
or inline) is left exactly as written. Around that:

- ``&``, ``<`` and ``>`` are escaped first (Slack's rule), so a model's text can never ping
  ``<!channel>``, mention a user or smuggle a Slack link with other text than its address;
- a lone ``*`` between spaces stays an asterisk ("2 * 3");
- a line starting with ``>`` stays a quote;
- a link's address must be http(s) or mailto, else the link stays text: ``label (address)``.

Why not a library: markdown-to-mrkdwn (used before) runs ~20 regexes per line in Python and its
``\\[(.+?)\\]\\((.+?)\\)`` link pattern backtracks cubically on ``[a](`` repeated (2.5 s for 3,000
characters, blocking the event loop and so every ack); markdown-it-py is linear but pure Python
(0.5 s for 40,000 adversarial characters). Here every pattern runs once over the whole text and
is linear by construction: each repeated part is a negated character class that stops at the
delimiter it waits for, so no start position rescans what an earlier one consumed, and what a
regex cannot do linearly (fences, tables, trailing blanks, headings) is a plain line loop.
``bench/mrkdwn.py`` measures it against pathological inputs.

Discord renders Markdown itself: its adapter posts the model's text as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Slack truncates a message's ``text`` past 40,000 characters; nothing longer is converted.
MAX_INPUT = 40_000

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_BOLD = "\x02"  # a bold marker the italic pass cannot mistake for its own "*"
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# [label](target "title"): the target may hold one level of balanced parentheses (Wikipedia).
_LINK = re.compile(r"(!?)\[([^\[\]\n]*)\]\(([^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:[ \t]+\"[^\"\n]*\")?\)")
_TASK = re.compile(r"^([ \t]*)[-*+] \[([ xX])\] ", re.MULTILINE)
_RULE = re.compile(r"^(?:---|\*\*\*|___)$", re.MULTILINE)
_BULLET = re.compile(r"^([ \t]*)[-*+] (?=\S)", re.MULTILINE)
_LONE_STAR = re.compile(r"(?<=[ \t])\*(?=[ \t])")
_BOLD_ITALIC = re.compile(r"(?<!\*)\*\*\*([^*\n]+)\*\*\*(?!\*)")
_BOLD_STARS = re.compile(r"(?<!\*)\*\*((?:[^*\n]|\*(?!\*))+)\*\*(?!\*)")
_BOLD_UNDERSCORES = re.compile(r"__([^_\n]+)__")
_ITALIC = re.compile(r"(?<!\*)\*([^*\n]+)\*(?!\*)")
_STRIKE = re.compile(r"~~([^~\n]+)~~")
_QUOTE = re.compile(r"^&gt; ?", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}[ \t]+(\S[^\n]*)$", re.MULTILINE)


def escape(text: str) -> str:
    """Slack's escaping: ``&``, ``<`` and ``>`` become entities, so nothing can ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Slack mrkdwn for a Markdown text (plain text passes through, escaped)."""
    text = escape(markdown[:MAX_INPUT].replace("\x00", "").replace(_BOLD, "")).strip()
    out: list[str] = []
    for is_code, part in _fenced_parts(text):
        out.append(part if is_code else _prose(part))
    return "\n".join(out)


def _fenced_parts(text: str) -> list[tuple[bool, str]]:
    """The text cut into prose and fenced code (``` lines), in one pass over its lines; an
    unclosed fence runs to the end, as in CommonMark."""
    if "```" not in text:
        return [(False, text)]
    parts: list[tuple[bool, str]] = []
    lines: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            if in_code:
                lines.append(line)
                parts.append((True, "\n".join(lines)))
                lines, in_code = [], False
                continue
            if lines:
                parts.append((False, "\n".join(lines)))
            lines, in_code = [line], True
            continue
        lines.append(line)
    if lines:
        parts.append((in_code, "\n".join(lines)))
    return parts


def _prose(text: str) -> str:
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x00{len(kept) - 1}\x00"

    def keeping(render: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
        return lambda match: keep(render(match))

    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _INLINE_CODE.sub(keeping(lambda m: m.group(0)), text)
    text = _LINK.sub(keeping(_link), text)
    text = _tables(text, keep)
    text = _HEADING.sub(keeping(lambda m: f"*{m.group(1).strip().rstrip('#').rstrip()}*"), text)
    text = _RULE.sub(keeping(lambda m: "──────────"), text)
    text = _TASK.sub(lambda m: f"{m.group(1)}• {'☐' if m.group(2) == ' ' else '☑'} ", text)
    text = _BULLET.sub(r"\1• ", text)
    text = _LONE_STAR.sub(keeping(lambda m: "*"), text)
    text = _BOLD_ITALIC.sub(rf"{_BOLD}_\1_{_BOLD}", text)
    text = _BOLD_STARS.sub(rf"{_BOLD}\1{_BOLD}", text)
    text = _BOLD_UNDERSCORES.sub(rf"{_BOLD}\1{_BOLD}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = _QUOTE.sub("> ", text)
    text = text.replace(_BOLD, "*")
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], text)


def _link(match: re.Match[str]) -> str:
    image, label, url = match.group(1), match.group(2), match.group(3)
    if url.startswith("&lt;") and url.endswith("&gt;"):
        url = url[4:-4]  # [text](<url>), escaped by now
    if not url.lower().startswith(_SAFE_SCHEMES):
        return f"{label} ({url})" if label else url
    url = url.replace("|", "%7C")
    return f"<{url}>" if image or not label.strip() else f"<{url}|{label}>"


def _tables(text: str, keep: Callable[[str], str]) -> str:
    """Markdown tables (a ``|`` header line, a ``|---|`` line, ``|`` rows) as a bold header
    line (kept from the emphasis passes) and ``a | b`` rows, in one pass over the lines."""
    if "|" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if index + 1 < len(lines) and _is_row(line) and _is_separator(lines[index + 1]):
            out.append(keep(" | ".join(f"*{cell}*" for cell in _cells(line))))
            index += 2
            while index < len(lines) and _is_row(lines[index]):
                out.append(" | ".join(_cells(lines[index])))
                index += 1
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def _is_row(line: str) -> bool:
    line = line.strip()
    return len(line) >= 2 and line.startswith("|") and line.endswith("|")


def _is_separator(line: str) -> bool:
    line = line.strip()
    return _is_row(line) and "-" in line and not line.strip("|-: ")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
